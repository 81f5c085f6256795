"""Shared test fixtures: small, generic, and offline.

- `d4rl_arrays(...)` / `write_raw_hdf5(...)`: plain helpers (import them with `from conftest import ...`)
  that build valid D4RL arrays and write them with bare h5py (not through mdpt's writer).
- fixtures: `tiny_arrays`, `tiny_hopper_hdf5` (a valid D4RL HDF5 hopper file), `tiny_dataset`,
  `tiny_data_dir` (MDPT_DATA_DIR holding tiny hopper medium and expert files), `shared_datasets`
  (../shared/datasets next to the repo, skipped when absent), `run_cli(*argv)` -> (code, out, err).
- every test runs with MDPT_OFFLINE=1, so nothing ever tries the network; a test that serves
  files itself (on 127.0.0.1) removes it with monkeypatch.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

# One persistent XLA compilation cache for the whole session (and the subprocesses it starts):
# tests build many identical tiny programs, and compiling them again is most of their cost.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "mdpt-test-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"

DIMS = {"hopper": (15, 3), "halfcheetah": (26, 6), "walker2d": (22, 6), "ant": (28, 8)}
ENV_IDS = {"hopper": "HopperBulletEnv-v0", "halfcheetah": "HalfCheetahBulletEnv-v0",
           "walker2d": "Walker2DBulletEnv-v0", "ant": "AntBulletEnv-v0"}


def d4rl_arrays(env: str = "hopper", lengths=(6, 4, 5), terminal=None, seed: int = 0,
                reward_offset: float = 1.0, next_observations: bool = True) -> dict[str, np.ndarray]:
    """Valid D4RL arrays (float32 / bool): episode i has lengths[i] transitions and ends in a
    terminal if terminal[i], else a timeout (default: the first episode terminal, the rest timeouts).
    next_observations follow the observations within an episode (each episode has its own final
    observation)."""
    obs_dim, act_dim = DIMS[env]
    if terminal is None:
        terminal = (True,) + (False,) * (len(lengths) - 1)
    rng = np.random.default_rng(seed)
    parts = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")}
    for length, term in zip(lengths, terminal, strict=True):
        states = rng.normal(size=(length + 1, obs_dim)).astype(np.float32)
        parts["observations"].append(states[:-1])
        parts["next_observations"].append(states[1:])
        parts["actions"].append(rng.uniform(-0.9, 0.9, size=(length, act_dim)).astype(np.float32))
        parts["rewards"].append((reward_offset + rng.uniform(0, 1, size=length)).astype(np.float32))
        ends = np.zeros(length, bool)
        ends[-1] = True
        parts["terminals"].append(ends if term else np.zeros(length, bool))
        parts["timeouts"].append(np.zeros(length, bool) if term else ends)
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    if not next_observations:
        del arrays["next_observations"]
    return arrays


def write_raw_hdf5(path, arrays: dict, attrs: dict | None = None) -> Path:
    """Write arrays and attrs to an HDF5 file with bare h5py (any dtype/shape, for bad-file tests)."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
    return path


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("MDPT_OFFLINE", "1")


@pytest.fixture
def tiny_arrays() -> dict[str, np.ndarray]:
    return d4rl_arrays()


@pytest.fixture
def tiny_hopper_hdf5(tmp_path) -> Path:
    """A valid D4RL-layout hopper file (15 transitions, 3 episodes) with env_id and reference attrs."""
    return write_raw_hdf5(tmp_path / "tiny-hopper.hdf5", d4rl_arrays(),
                          {"env_id": "HopperBulletEnv-v0", "ref_min_score": 0.0, "ref_max_score": 10.0})


@pytest.fixture
def tiny_dataset(tiny_hopper_hdf5):
    from mdpt.data.hdf5 import read_d4rl_hdf5

    return read_d4rl_hdf5(tiny_hopper_hdf5)


@pytest.fixture
def tiny_data_dir(tmp_path, monkeypatch) -> Path:
    """MDPT_DATA_DIR pointing at a folder with tiny bullet-hopper-{medium,expert}-v0.hdf5 files."""
    d = tmp_path / "datasets"
    attrs = {"env_id": "HopperBulletEnv-v0", "ref_min_score": 0.0, "ref_max_score": 10.0}
    write_raw_hdf5(d / "bullet-hopper-medium-v0.hdf5", d4rl_arrays(seed=1), attrs)
    write_raw_hdf5(d / "bullet-hopper-expert-v0.hdf5",
                   d4rl_arrays(lengths=(7, 5), terminal=(False, False), seed=2, reward_offset=3.0), attrs)
    monkeypatch.setenv("MDPT_DATA_DIR", str(d))
    return d


@pytest.fixture
def shared_datasets() -> Path:
    if not (SHARED_DATASETS / "bullet-hopper-medium-v0.hdf5").exists():
        pytest.skip(f"shared datasets not found at {SHARED_DATASETS}")
    return SHARED_DATASETS


@pytest.fixture
def run_cli(capsys):
    """run_cli(*argv) -> (exit code, stdout, stderr) of `mdpt ARGV` run in-process."""
    from mdpt.cli.main import main

    def run(*argv):
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run
