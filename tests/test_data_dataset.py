"""What training derives from a Dataset: episodes, masks, return-to-go, fingerprint, concatenation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import d4rl_arrays, write_raw_hdf5

from mdpt.data.checks import build_dataset
from mdpt.data.hdf5 import read_d4rl_hdf5, write_d4rl_hdf5
from mdpt.data.load import concatenate_datasets, load_dataset
from mdpt.data.registry import ENVS
from mdpt.errors import MDPTError

HOPPER = ENVS["hopper"]


def _hand_dataset():
    arrays = d4rl_arrays(lengths=(3, 2), terminal=(False, True))
    arrays["rewards"] = np.array([1, 2, 3, 4, 5], np.float32)
    arrays["terminals"] = np.array([0, 0, 0, 0, 1], bool)
    arrays["timeouts"] = np.array([0, 0, 1, 0, 0], bool)
    return build_dataset(arrays, HOPPER)


def test_masks_bootstrap_through_timeouts():
    data = _hand_dataset()
    np.testing.assert_array_equal(data.masks, [1, 1, 1, 1, 0])  # the timeout at 2 keeps bootstrapping
    np.testing.assert_array_equal(data.episode_ends, [0, 0, 1, 0, 1])
    np.testing.assert_allclose(data.episode_returns, [6.0, 9.0])


def test_return_to_go_hand_example():
    data = _hand_dataset()
    np.testing.assert_allclose(data.returns_to_go(0.5), [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3, 4 + 0.5 * 5, 5])
    np.testing.assert_allclose(data.returns_to_go(1.0), [6, 5, 3, 9, 5])


def test_next_actions_within_episodes():
    data = _hand_dataset()
    np.testing.assert_array_equal(data.next_actions[[0, 1, 3]], data.actions[[1, 2, 4]])
    np.testing.assert_array_equal(data.next_actions[[2, 4]], data.actions[[2, 4]])


def test_fingerprint_stable(tmp_path, tiny_hopper_hdf5):
    a = read_d4rl_hdf5(tiny_hopper_hdf5)
    b = read_d4rl_hdf5(tiny_hopper_hdf5)
    c = read_d4rl_hdf5(write_d4rl_hdf5(tmp_path / "copy.hdf5", a, {"other": "attrs"}))
    assert a.fingerprint == b.fingerprint == c.fingerprint
    assert len(a.fingerprint) == 16
    # a pinned value: the fingerprint of fixed arrays must not drift between versions
    n = 4
    fixed = {"observations": np.arange(n * 15, dtype=np.float32).reshape(n, 15) / 10,
             "actions": np.linspace(-1, 1, n * 3, dtype=np.float32).reshape(n, 3),
             "rewards": np.arange(n, dtype=np.float32), "terminals": np.array([0, 1, 0, 0], bool),
             "timeouts": np.array([0, 0, 0, 1], bool),
             "next_observations": np.arange(n * 15, dtype=np.float32).reshape(n, 15) / 10 + 1}
    assert build_dataset(fixed, HOPPER).fingerprint == "ee72d7e156d48dbc"
    changed = d4rl_arrays()
    changed["rewards"][0] += 1e-3
    d = read_d4rl_hdf5(write_raw_hdf5(tmp_path / "changed.hdf5", changed, {"env_id": "HopperBulletEnv-v0"}))
    assert d.fingerprint != a.fingerprint


def test_medium_expert_concatenation(tiny_data_dir):
    medium = load_dataset("bullet-hopper-medium-v0")
    expert = load_dataset("bullet-hopper-expert-v0")
    both = load_dataset("bullet-hopper-medium-expert-v0")
    assert both.dataset_id == "bullet-hopper-medium-expert-v0"
    assert len(both) == len(medium) + len(expert)
    assert len(both.episode_slices) == len(medium.episode_slices) + len(expert.episode_slices)
    np.testing.assert_allclose(both.episode_returns,
                               np.concatenate([medium.episode_returns, expert.episode_returns]))
    np.testing.assert_array_equal(both.observations[: len(medium)], medium.observations)
    assert both.attrs["concatenation_of"] == ["bullet-hopper-medium-v0", "bullet-hopper-expert-v0"]
    assert both.attrs["part_fingerprints"] == [medium.fingerprint, expert.fingerprint]
    assert both.attrs["ref_max_score"] == 10.0
    assert any("concatenation" in n for n in both.notes)
    # an explicit medium-expert file wins over the concatenation
    write_d4rl_hdf5(tiny_data_dir / "bullet-hopper-medium-expert-v0.hdf5", medium)
    assert len(load_dataset("bullet-hopper-medium-expert-v0")) == len(medium)


def test_concatenation_marks_cut_episodes():
    arrays = d4rl_arrays(lengths=(3, 2), terminal=(False, False))
    arrays["timeouts"][-1] = False  # the first part ends mid-episode
    first = build_dataset(arrays, HOPPER, dataset_id="a")
    second = build_dataset(d4rl_arrays(seed=5), HOPPER, dataset_id="b")
    both = concatenate_datasets([first, second])
    assert both.timeouts[len(first) - 1]
    assert len(both.episode_slices) == len(first.episode_slices) + len(second.episode_slices)
    assert "1 cut final episode(s) marked as timeouts" in both.notes[0]
    cheetah = build_dataset(d4rl_arrays("halfcheetah"), ENVS["halfcheetah"])
    with pytest.raises(MDPTError, match="different environments"):
        concatenate_datasets([first, cheetah])


def test_episode_returns_one_definition():
    from mdpt.data.dataset import episode_returns

    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0], np.float32)
    ends = np.array([False, True, False, False, False])  # the last transition closes an episode too
    np.testing.assert_array_equal(episode_returns(rewards, ends), [3.0, 12.0])
    ends[-1] = True
    np.testing.assert_array_equal(episode_returns(rewards, ends), [3.0, 12.0])
    assert episode_returns(rewards[:0], ends[:0]).shape == (0,)
    data = build_dataset(d4rl_arrays(lengths=(2, 3), terminal=(True, False)), ENVS["hopper"])
    loop = [float(data.rewards[s].sum(dtype=np.float64)) for s in data.episode_slices]
    np.testing.assert_allclose(data.episode_returns, loop)
