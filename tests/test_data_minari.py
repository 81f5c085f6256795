"""Minari datasets through the `minari` package (the `mdpt[minari]` extra); a one-line error without it."""

from __future__ import annotations

import importlib.util
import json
import sys

import h5py
import numpy as np
import pytest
from conftest import d4rl_arrays

from mdpt.data.checks import build_dataset
from mdpt.data.load import load_dataset
from mdpt.data.minari_io import is_minari_dir, read_minari, write_minari
from mdpt.data.registry import ENVS
from mdpt.errors import MDPTError

needs_minari = pytest.mark.skipif(importlib.util.find_spec("minari") is None,
                                  reason="the minari package is not installed (pip install 'mdpt[minari]')")


def _dataset(**kw):
    return build_dataset(d4rl_arrays(**kw), ENVS["hopper"], dataset_id="bullet-hopper-medium-v0",
                         attrs={"ref_min_score": 1.0, "ref_max_score": 9.0, "recipe": "test"})


@needs_minari
def test_round_trip(tmp_path):
    import minari

    data = _dataset()
    root = write_minari(tmp_path / "hopper-medium", data)
    assert is_minari_dir(root) and is_minari_dir(root / "data")
    back = read_minari(root)
    assert back.fingerprint == data.fingerprint
    assert back.dataset_id == "bullet-hopper-medium-v0" and back.env is data.env
    assert back.attrs["ref_max_score"] == 9.0 and back.attrs["minari_dataset_id"] == "mdpt/hopper-bullet/medium-v0"
    assert back.attrs["minari_version"] == minari.__version__  # the package's own format version
    assert load_dataset(root).fingerprint == data.fingerprint  # load_dataset recognises the directory


@needs_minari
def test_layout_is_minaris(tmp_path):
    data = _dataset(lengths=(3, 2), terminal=(True, False))
    root = write_minari(tmp_path / "ds", data)
    meta = json.loads((root / "data" / "metadata.json").read_text())
    assert meta["total_episodes"] == 2 and meta["total_steps"] == 5 and meta["data_format"] == "hdf5"
    assert meta["dataset_id"] == "mdpt/hopper-bullet/medium-v0" and meta["author"] == ["mdpt"]
    assert json.loads(meta["observation_space"])["shape"] == [15]
    action_space = json.loads(meta["action_space"])
    assert action_space["type"] == "Box" and action_space["shape"] == [3]
    assert action_space["low"] == [-1.0] * 3 and action_space["high"] == [1.0] * 3
    spec = json.loads(meta["env_spec"])
    assert spec["id"] == "HopperBulletEnv-v0" and spec["max_episode_steps"] == 1000
    assert meta["ref_min_score"] == 1.0 and meta["ref_max_score"] == 9.0
    with h5py.File(root / "data" / "main_data.hdf5", "r") as f:
        assert list(f.keys()) == ["episode_0", "episode_1"]
        ep = f["episode_0"]
        assert ep.attrs["id"] == 0 and ep.attrs["total_steps"] == 3
        assert ep["observations"].shape == (4, 15) and ep["actions"].shape == (3, 3)
        assert ep["terminations"][()].tolist() == [False, False, True]
        assert f["episode_1"]["truncations"][()].tolist() == [False, True]
        np.testing.assert_array_equal(ep["observations"][3], data.next_observations[2])


@needs_minari
def test_round_trip_unmarked_final_episode(tmp_path):
    arrays = d4rl_arrays(lengths=(3, 4), terminal=(True, False))
    arrays["timeouts"][-1] = False  # the data ends mid-episode
    data = build_dataset(arrays, ENVS["hopper"])
    root = write_minari(tmp_path / "ds", data)
    with h5py.File(root / "data" / "main_data.hdf5", "r") as f:
        assert f["episode_1"]["truncations"][-1] and f["episode_1"].attrs["mdpt_unmarked_end"]
    back = read_minari(root)
    assert back.fingerprint == data.fingerprint and not back.timeouts[-1]


@needs_minari
def test_write_refuses_existing_and_replaces_whole(tmp_path):
    data = _dataset()
    root = write_minari(tmp_path / "ds", data)
    with pytest.raises(MDPTError, match="already exists"):
        write_minari(root, data)
    write_minari(root, _dataset(seed=3), overwrite=True)
    assert read_minari(root).fingerprint != data.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


@needs_minari
def test_bad_minari_dirs(tmp_path, run_cli):
    root = write_minari(tmp_path / "ds", _dataset())
    (root / "data" / "metadata.json").write_text("{not json")
    with pytest.raises(MDPTError, match="unreadable Minari metadata"):
        read_minari(root)
    root2 = write_minari(tmp_path / "ds2", _dataset())
    main = root2 / "data" / "main_data.hdf5"
    main.write_bytes(main.read_bytes()[:500])
    code, _, err = run_cli("data", "info", root2)
    assert code == 2 and "not a readable HDF5 file" in err and len(err.strip().splitlines()) == 1
    root3 = write_minari(tmp_path / "ds3", _dataset())
    with h5py.File(root3 / "data" / "main_data.hdf5", "a") as f:
        del f["episode_1"]["actions"]
        f["episode_1"].create_dataset("actions", data=np.zeros((2, 3), np.float32))
    with pytest.raises(MDPTError, match="episode_1 has actions of length 2"):
        read_minari(root3)


@needs_minari
def test_newer_format_refused_by_minaris_version_list(tmp_path):
    root = write_minari(tmp_path / "ds", _dataset())
    meta_path = root / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["minari_version"] = "99.0.0"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(MDPTError, match="written by Minari 99.0.0, which the installed minari"):
        read_minari(root)


@needs_minari
def test_cli_convert_both_ways(tmp_path, tiny_hopper_hdf5, run_cli):
    code, out, _ = run_cli("data", "convert", tiny_hopper_hdf5, tmp_path / "mds")
    assert code == 0 and "minari" in out
    code, out, _ = run_cli("data", "convert", tmp_path / "mds", tmp_path / "back.hdf5")
    assert code == 0
    assert load_dataset(tmp_path / "back.hdf5").fingerprint == load_dataset(tiny_hopper_hdf5).fingerprint
    code, _, err = run_cli("data", "convert", tiny_hopper_hdf5, tmp_path / "back.hdf5")
    assert code == 2 and "--overwrite" in err


@needs_minari
def test_loads_with_minari_by_id(tmp_path, monkeypatch):
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    data = _dataset()
    write_minari(tmp_path / "minari" / "mdpt" / "hopper-bullet" / "medium-v0", data)
    ds = minari.load_dataset("mdpt/hopper-bullet/medium-v0")
    assert ds.total_episodes == 3 and ds.total_steps == 15
    episodes = list(ds.iterate_episodes())
    np.testing.assert_allclose(np.concatenate([e.rewards for e in episodes]), data.rewards)
    assert ds.env_spec.id == "HopperBulletEnv-v0"


def test_without_minari_a_one_line_error(tmp_path, tiny_hopper_hdf5, run_cli, monkeypatch):
    """Runs with or without the package: it is hidden (an import of it fails) either way."""
    monkeypatch.setitem(sys.modules, "minari", None)
    with pytest.raises(MDPTError, match=r"pip install 'mdpt\[minari\]'"):
        write_minari(tmp_path / "ds", _dataset())
    assert not (tmp_path / "ds").exists()
    code, _, err = run_cli("data", "convert", tiny_hopper_hdf5, tmp_path / "mds")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "mdpt[minari]" in err
    fake = tmp_path / "fake" / "data"
    fake.mkdir(parents=True)
    (fake / "metadata.json").write_text(json.dumps({"dataset_id": "x/y-v0", "minari_version": "0.5.4",
                                                   "data_format": "hdf5"}))
    assert is_minari_dir(fake.parent)  # recognising a Minari directory needs no package
    code, _, err = run_cli("data", "info", fake.parent)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "pip install 'mdpt[minari]'" in err
