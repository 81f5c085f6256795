"""D4RL HDF5 reading and writing, the legacy d4rl-pybullet conversion, next_observations rebuild."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import d4rl_arrays, write_raw_hdf5

from mdpt.data.checks import derive_timeouts
from mdpt.data.hdf5 import read_d4rl_hdf5
from mdpt.data.hdf5_write import write_d4rl_hdf5
from mdpt.data.layout import convert_legacy_pybullet, is_legacy_layout
from mdpt.data.registry import ENVS
from mdpt.errors import MDPTError

HOPPER = ENVS["hopper"]


def test_read_tiny_file(tiny_hopper_hdf5, tiny_arrays):
    data = read_d4rl_hdf5(tiny_hopper_hdf5)
    assert len(data) == 15 and data.obs_dim == 15 and data.act_dim == 3
    assert data.env is HOPPER
    assert data.notes == ()
    assert data.attrs["env_id"] == "HopperBulletEnv-v0" and data.attrs["ref_max_score"] == 10.0
    for key, arr in tiny_arrays.items():
        np.testing.assert_array_equal(getattr(data, key), arr)
    assert [s.stop - s.start for s in data.episode_slices] == [6, 4, 5]
    assert data.observations.dtype == np.float32 and data.terminals.dtype == bool


def test_env_from_file_name_when_no_attr(tmp_path, tiny_arrays):
    path = write_raw_hdf5(tmp_path / "bullet-halfcheetah-expert-v0.hdf5", d4rl_arrays("halfcheetah"))
    data = read_d4rl_hdf5(path)
    assert data.env.name == "halfcheetah" and data.dataset_id == "bullet-halfcheetah-expert-v0"
    legacy_name = write_raw_hdf5(tmp_path / "walker2d-bullet-mixed-v0.hdf5", d4rl_arrays("walker2d"))
    assert read_d4rl_hdf5(legacy_name).env.name == "walker2d"
    assert read_d4rl_hdf5(write_raw_hdf5(tmp_path / "x.hdf5", tiny_arrays), env="hopper").env is HOPPER


def test_writer_round_trip_and_attrs(tmp_path, tiny_dataset):
    out = write_d4rl_hdf5(tmp_path / "out" / "copy.hdf5", tiny_dataset,
                          {"recipe": "test", "checkpoint": {"step": 3, "ret": 1.5}, "skip": None})
    again = read_d4rl_hdf5(out)
    assert again.fingerprint == tiny_dataset.fingerprint
    assert again.attrs["checkpoint"] == {"step": 3, "ret": 1.5} and "skip" not in again.attrs
    assert again.attrs["recipe"] == "test" and again.attrs["env_id"] == "HopperBulletEnv-v0"
    nested = write_d4rl_hdf5(tmp_path / "nested.hdf5", tiny_dataset,
                             {"nested": {"x": np.float32(2.5), "a": np.arange(2), "p": Path("a/b")}})
    assert read_d4rl_hdf5(nested).attrs["nested"] == {"x": 2.5, "a": [0, 1], "p": "a/b"}  # io.json_default
    with h5py.File(out, "r") as f:
        for key in ("observations", "actions", "rewards", "next_observations"):
            assert f[key].dtype == np.float32 and f[key].compression == "gzip"
        assert f["terminals"].dtype == bool and f["timeouts"].dtype == bool
    # deterministic bytes; nothing left beside the file
    out2 = write_d4rl_hdf5(tmp_path / "out" / "copy2.hdf5", tiny_dataset, {"recipe": "test",
                                                                          "checkpoint": {"step": 3, "ret": 1.5}})
    assert out.read_bytes() == out2.read_bytes()
    assert sorted(os.listdir(tmp_path / "out")) == ["copy.hdf5", "copy2.hdf5"]


def test_writer_from_arrays_and_refusals(tmp_path, tiny_arrays):
    path = write_d4rl_hdf5(tmp_path / "a.hdf5", tiny_arrays, {"env_id": "HopperBulletEnv-v0"})
    assert len(read_d4rl_hdf5(path)) == 15
    bad = dict(tiny_arrays, actions=tiny_arrays["actions"][:-1])
    with pytest.raises(MDPTError, match="different lengths"):
        write_d4rl_hdf5(tmp_path / "b.hdf5", bad)
    with pytest.raises(MDPTError, match="empty"):
        write_d4rl_hdf5(tmp_path / "c.hdf5", {k: v[:0] for k, v in tiny_arrays.items()})
    with pytest.raises(MDPTError, match="missing dataset 'timeouts'"):
        write_d4rl_hdf5(tmp_path / "d.hdf5", {k: v for k, v in tiny_arrays.items() if k != "timeouts"})
    assert sorted(os.listdir(tmp_path)) == ["a.hdf5"]


def test_writer_is_atomic_on_failure(tmp_path, tiny_arrays, monkeypatch):
    target = tmp_path / "keep.hdf5"
    target.write_bytes(b"old contents")

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(h5py.File, "create_dataset", boom, raising=False)
    monkeypatch.setattr(h5py.Group, "create_dataset", boom)
    with pytest.raises(RuntimeError):
        write_d4rl_hdf5(target, tiny_arrays)
    assert target.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["keep.hdf5"]


def test_next_observations_rebuilt(tmp_path):
    arrays = d4rl_arrays(next_observations=False)
    full = d4rl_arrays()
    data = read_d4rl_hdf5(write_raw_hdf5(tmp_path / "f.hdf5", arrays, {"env_id": "HopperBulletEnv-v0"}))
    ends = np.flatnonzero(data.episode_ends)
    inside = np.setdiff1d(np.arange(len(data)), ends)
    np.testing.assert_array_equal(data.next_observations[inside], full["next_observations"][inside])
    np.testing.assert_array_equal(data.next_observations[ends], data.observations[ends])  # stand-in
    assert any("next_observations rebuilt" in n and "3 episode end(s)" in n for n in data.notes)


def test_missing_timeouts_are_derived(tmp_path):
    arrays = d4rl_arrays(lengths=(1000, 3, 1000, 2), terminal=(False, True, False, False))
    del arrays["timeouts"]
    data = read_d4rl_hdf5(write_raw_hdf5(tmp_path / "f.hdf5", arrays, {"env_id": "HopperBulletEnv-v0"}))
    assert np.flatnonzero(data.timeouts).tolist() == [999, 2002]
    assert np.flatnonzero(data.terminals).tolist() == [1002]
    assert any("no 'timeouts'" in n for n in data.notes)
    assert derive_timeouts(np.array([0, 0, 0, 1, 0, 0, 0, 0], bool), 2).tolist() == \
        [False, True, False, False, False, True, False, True]


def _legacy_from(arrays):
    """Store D4RL episodes in the d4rl-pybullet layout: reward of the transition into row t at t,
    plus a zero-action terminal row holding the final observation."""
    rows = {k: [] for k in ("observations", "actions", "rewards", "terminals")}
    ends = arrays["terminals"] | arrays["timeouts"]
    start = 0
    for stop in np.flatnonzero(ends) + 1:
        obs, act, rew = arrays["observations"][start:stop], arrays["actions"][start:stop], arrays["rewards"][start:stop]
        rows["observations"] += [obs, arrays["next_observations"][stop - 1: stop]]
        rows["actions"] += [act, np.zeros((1, act.shape[1]), np.float32)]
        rows["rewards"] += [np.concatenate([[0.0], rew]).astype(np.float32)]
        term = np.zeros(stop - start + 1, np.float32)
        term[-1] = 1.0
        rows["terminals"] += [term]
        start = stop
    return {k: np.concatenate(v) for k, v in rows.items()}


def test_legacy_pybullet_conversion(tmp_path):
    # a 1000-step (time limit) episode and two that fall over
    original = d4rl_arrays(lengths=(1000, 7, 3), terminal=(False, True, True), seed=3)
    legacy = _legacy_from(original)
    assert len(legacy["rewards"]) == 1013 and is_legacy_layout(legacy)
    path = write_raw_hdf5(tmp_path / "hopper-bullet-mixed-v0.hdf5", legacy)
    data = read_d4rl_hdf5(path)
    assert data.env is HOPPER
    for key, arr in original.items():
        np.testing.assert_array_equal(getattr(data, key), arr, err_msg=key)
    expected_returns = [original["rewards"][:1000].sum(), original["rewards"][1000:1007].sum(),
                        original["rewards"][1007:].sum()]
    np.testing.assert_allclose(data.episode_returns, expected_returns, rtol=1e-6)
    assert data.timeouts.sum() == 1 and data.terminals.sum() == 2
    note = " ".join(data.notes)
    assert "legacy d4rl-pybullet" in note and "3 episode-closing row(s) dropped" in note


def test_legacy_cut_tail(tmp_path):
    original = d4rl_arrays(lengths=(4, 5), terminal=(True, True), seed=4)
    legacy = _legacy_from(original)
    legacy = {k: v[:-2] for k, v in legacy.items()}  # file ends inside the second episode
    converted, notes = convert_legacy_pybullet(legacy)
    assert len(converted["rewards"]) == 4 + 3
    np.testing.assert_array_equal(converted["rewards"], original["rewards"][:7])
    assert converted["terminals"].tolist() == [0, 0, 0, 1, 0, 0, 0]
    assert converted["timeouts"][-1] and "cut" in notes[0]


def test_modern_file_is_not_legacy(tiny_arrays):
    no_timeouts = {k: v for k, v in tiny_arrays.items() if k != "timeouts"}
    assert not is_legacy_layout(tiny_arrays) and not is_legacy_layout(no_timeouts)


def test_read_only_open_leaves_file_untouched(tiny_hopper_hdf5):
    os.chmod(tiny_hopper_hdf5, 0o444)
    before = (tiny_hopper_hdf5.read_bytes(), tiny_hopper_hdf5.stat().st_mtime_ns)
    read_d4rl_hdf5(tiny_hopper_hdf5)
    assert (tiny_hopper_hdf5.read_bytes(), tiny_hopper_hdf5.stat().st_mtime_ns) == before


def test_format_names_importable_from_hdf5():
    import mdpt.data.hdf5 as h

    assert (h.write_d4rl_hdf5, h.convert_legacy_pybullet, h.is_legacy_layout) == (
        write_d4rl_hdf5, convert_legacy_pybullet, is_legacy_layout)
    assert set(h.__all__) <= set(dir(h))
