"""Minari's on-disk format, written and read with h5py (the `minari` package is not needed)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from conftest import d4rl_arrays

from mdpt.data.checks import build_dataset
from mdpt.data.load import load_dataset
from mdpt.data.minari_io import is_minari_dir, read_minari, write_minari
from mdpt.data.registry import ENVS
from mdpt.errors import MDPTError


def _dataset(**kw):
    return build_dataset(d4rl_arrays(**kw), ENVS["hopper"], dataset_id="bullet-hopper-medium-v0",
                         attrs={"ref_min_score": 1.0, "ref_max_score": 9.0, "recipe": "test"})


def test_round_trip(tmp_path):
    data = _dataset()
    root = write_minari(tmp_path / "hopper-medium", data)
    assert is_minari_dir(root) and is_minari_dir(root / "data")
    back = read_minari(root)
    assert back.fingerprint == data.fingerprint
    assert back.dataset_id == "bullet-hopper-medium-v0" and back.env is data.env
    assert back.attrs["ref_max_score"] == 9.0 and back.attrs["minari_dataset_id"] == "mdpt/hopper-bullet/medium-v0"
    assert load_dataset(root).fingerprint == data.fingerprint  # load_dataset recognises the directory


def test_layout_matches_minari(tmp_path):
    data = _dataset(lengths=(3, 2), terminal=(True, False))
    root = write_minari(tmp_path / "ds", data)
    meta = json.loads((root / "data" / "metadata.json").read_text())
    assert meta["total_episodes"] == 2 and meta["total_steps"] == 5 and meta["data_format"] == "hdf5"
    assert meta["dataset_id"] == "mdpt/hopper-bullet/medium-v0" and meta["minari_version"].startswith("0.")
    assert json.loads(meta["observation_space"])["shape"] == [15]
    assert json.loads(meta["action_space"]) == {"type": "Box", "dtype": "float32", "shape": [3],
                                                "low": [-1.0] * 3, "high": [1.0] * 3}
    assert json.loads(meta["env_spec"])["id"] == "HopperBulletEnv-v0"
    assert meta["ref_min_score"] == 1.0 and meta["ref_max_score"] == 9.0
    with h5py.File(root / "data" / "main_data.hdf5", "r") as f:
        assert list(f.keys()) == ["episode_0", "episode_1"]
        ep = f["episode_0"]
        assert ep.attrs["id"] == 0 and ep.attrs["total_steps"] == 3
        assert ep["observations"].shape == (4, 15) and ep["actions"].shape == (3, 3)
        assert ep["terminations"][()].tolist() == [False, False, True]
        assert f["episode_1"]["truncations"][()].tolist() == [False, True]
        np.testing.assert_array_equal(ep["observations"][3], data.next_observations[2])


def test_round_trip_unmarked_final_episode(tmp_path):
    arrays = d4rl_arrays(lengths=(3, 4), terminal=(True, False))
    arrays["timeouts"][-1] = False  # the data ends mid-episode
    data = build_dataset(arrays, ENVS["hopper"])
    back = read_minari(write_minari(tmp_path / "ds", data))
    assert back.fingerprint == data.fingerprint and not back.timeouts[-1]


def test_write_refuses_existing_and_cleans_up(tmp_path):
    data = _dataset()
    root = write_minari(tmp_path / "ds", data)
    with pytest.raises(MDPTError, match="already exists"):
        write_minari(root, data)
    write_minari(root, _dataset(seed=3), overwrite=True)
    assert read_minari(root).fingerprint != data.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


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


def test_cli_convert_both_ways(tmp_path, tiny_hopper_hdf5, run_cli):
    code, out, _ = run_cli("data", "convert", tiny_hopper_hdf5, tmp_path / "mds")
    assert code == 0 and "minari" in out
    code, out, _ = run_cli("data", "convert", tmp_path / "mds", tmp_path / "back.hdf5")
    assert code == 0
    assert load_dataset(tmp_path / "back.hdf5").fingerprint == load_dataset(tiny_hopper_hdf5).fingerprint
    code, _, err = run_cli("data", "convert", tiny_hopper_hdf5, tmp_path / "back.hdf5")
    assert code == 2 and "--overwrite" in err


def test_readable_by_minari_package_when_installed(tmp_path):
    minari = pytest.importorskip("minari")
    data = _dataset()
    root = write_minari(tmp_path / "ds", data)
    ds = minari.MinariDataset(root / "data")
    assert ds.total_episodes == 3 and ds.total_steps == 15
    episodes = list(ds.iterate_episodes())
    np.testing.assert_allclose(np.concatenate([e.rewards for e in episodes]), data.rewards)
