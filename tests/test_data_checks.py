"""Every bad input gets a one-line MDPTError naming the file and the problem (API and CLI)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import d4rl_arrays, write_raw_hdf5

from mdpt.data.load import load_dataset
from mdpt.errors import MDPTError

HOPPER = {"env_id": "HopperBulletEnv-v0"}


def _file(tmp_path, arrays, attrs=HOPPER, name="bad.hdf5"):
    return write_raw_hdf5(tmp_path / name, arrays, attrs)


def _mutated(**changes):
    def build(tmp_path):
        arrays = d4rl_arrays()
        for key, fn in changes.items():
            if fn is None:
                del arrays[key]
            else:
                arrays[key] = fn(arrays[key])
        return _file(tmp_path, arrays), []

    return build


def _nan_at(row):
    def f(a):
        a = a.copy()
        a[row] = np.nan
        return a

    return f


def _truncated(tmp_path):
    path = _file(tmp_path, d4rl_arrays())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, []


def _not_hdf5(tmp_path):
    path = tmp_path / "bad.hdf5"
    path.write_text("observations,actions\n1,2\n")
    return path, []


def _group_instead_of_array(tmp_path):
    path = _file(tmp_path, {k: v for k, v in d4rl_arrays().items() if k != "rewards"})
    with h5py.File(path, "a") as f:
        f.create_group("rewards")
    return path, []


def _strings(tmp_path):
    arrays = d4rl_arrays()
    arrays["observations"] = np.array([b"abc"] * len(arrays["rewards"]))
    return _file(tmp_path, arrays), []


def _env_mismatch(tmp_path):
    return _file(tmp_path, d4rl_arrays()), ["--env", "HalfCheetahBulletEnv-v0"]


def _no_env(tmp_path):
    return _file(tmp_path, d4rl_arrays(), attrs={}), []


def _unknown_env_attr(tmp_path):
    return _file(tmp_path, d4rl_arrays(), attrs={"env_id": "NoSuchEnv-v0"}), []


def _missing_file(tmp_path):
    return tmp_path / "nowhere.hdf5", []


def _plain_dir(tmp_path):
    d = tmp_path / "somedir"
    d.mkdir()
    return d, []


def _empty(tmp_path):
    arrays = {k: v[:0] for k, v in d4rl_arrays().items()}
    return _file(tmp_path, arrays), []


CASES = {
    "missing rewards": (_mutated(rewards=None), "missing dataset 'rewards'"),
    "missing several": (_mutated(rewards=None, observations=None), "missing datasets"),
    "unequal lengths": (_mutated(actions=lambda a: a[:-1]), "different lengths"),
    "obs size": (_mutated(observations=lambda a: a[:, :11], next_observations=lambda a: a[:, :11]),
                 "observations have 11 features but HopperBulletEnv-v0 expects 15"),
    "next obs size": (_mutated(next_observations=lambda a: a[:, :14]), "next_observations have 14 features"),
    "act size": (_mutated(actions=lambda a: a[:, :2]), "actions have 2 dimensions"),
    "nan obs": (_mutated(observations=_nan_at(3)), "'observations' contains 15 NaN/inf value(s) (first at row 3)"),
    "inf reward": (_mutated(rewards=lambda a: np.where(np.arange(len(a)) == 5, np.inf, a)), "'rewards' contains"),
    "nan action": (_mutated(actions=_nan_at(0)), "'actions' contains"),
    "empty": (_empty, "empty"),
    "actions out of range": (_mutated(actions=lambda a: a * 2.0), "actions outside [-1, 1]"),
    "truncated file": (_truncated, "not a readable HDF5 file"),
    "not hdf5": (_not_hdf5, "not a readable HDF5 file"),
    "1-D observations": (_mutated(observations=lambda a: a[:, 0]), "'observations' has shape (15,)"),
    "3-D actions": (_mutated(actions=lambda a: a[:, :, None]), "'actions' has shape (15, 3, 1)"),
    "strings": (_strings, "has dtype"),
    "complex rewards": (_mutated(rewards=lambda a: a.astype(np.complex64)), "'rewards' has dtype complex64"),
    "bad flags": (_mutated(terminals=lambda a: a.astype(np.float32) * 2), "'terminals' must hold 0/1 flags"),
    "group": (_group_instead_of_array, "'rewards' is an HDF5 group"),
    "env mismatch": (_env_mismatch, "says env_id HopperBulletEnv-v0 but HalfCheetahBulletEnv-v0"),
    "no env": (_no_env, "cannot tell which environment"),
    "unknown env attr": (_unknown_env_attr, "names env_id 'NoSuchEnv-v0', which MDPT cannot use"),
    "missing file": (_missing_file, "file not found"),
    "plain directory": (_plain_dir, "not a Minari dataset"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_api(tmp_path, case):
    build, fragment = CASES[case]
    path, extra = build(tmp_path)
    env = extra[1] if extra else None
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(MDPTError) as info:
        load_dataset(path, env=env)
    msg = str(info.value)
    assert "\n" not in msg
    assert fragment in msg
    assert str(path) in msg
    if before is not None:
        assert path.read_bytes() == before  # the user's file is never modified


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_cli(tmp_path, run_cli, case):
    build, fragment = CASES[case]
    path, extra = build(tmp_path)
    code, out, err = run_cli("data", "info", path, *extra)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mdpt: error: ")
    assert fragment in lines[0]
    assert out == ""


def test_actions_within_tolerance_are_clipped(tmp_path):
    arrays = d4rl_arrays()
    arrays["actions"][2, 1] = 1.00005
    arrays["actions"][4, 0] = -1.00009
    data = load_dataset(_file(tmp_path, arrays))
    assert data.actions.max() == 1.0 and data.actions.min() == -1.0
    assert any("clipped 2 action value(s)" in n for n in data.notes)


def test_flags_and_dtypes_are_normalized(tmp_path):
    arrays = d4rl_arrays()
    arrays["terminals"] = arrays["terminals"].astype(np.float64)
    arrays["timeouts"] = arrays["timeouts"].astype(np.int8)
    arrays["observations"] = arrays["observations"].astype(np.float64)
    arrays["rewards"] = arrays["rewards"][:, None]
    data = load_dataset(_file(tmp_path, arrays))
    assert data.terminals.dtype == bool and data.timeouts.dtype == bool
    assert data.observations.dtype == np.float32 and data.rewards.shape == (15,)


def test_unknown_id_and_unknown_env(run_cli):
    code, _, err = run_cli("data", "info", "bullet-hopper-great-v0")
    assert code == 2 and "neither a file nor a known dataset id" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(MDPTError, match="unknown environment"):
        load_dataset("bullet-hopper-medium-v0", env="NoSuchEnv-v0")


def test_id_with_wrong_env(tiny_data_dir):
    with pytest.raises(MDPTError, match="is data for HopperBulletEnv-v0, not HalfCheetahBulletEnv-v0"):
        load_dataset("bullet-hopper-medium-v0", env="halfcheetah")


def test_error_never_traceback_for_corrupt_bytes(tmp_path, run_cli):
    path = _file(tmp_path, d4rl_arrays())
    data = bytearray(path.read_bytes())
    data[len(data) // 3: len(data) // 3 + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    try:
        load_dataset(path)
    except MDPTError as e:
        assert "\n" not in str(e)
    code, _, err = run_cli("data", "info", path)
    assert code in (0, 2)
    assert "Traceback" not in err
