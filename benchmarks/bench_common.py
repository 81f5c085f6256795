"""What every section of the benchmark shares: its constants, the data (found by the data-dir
resolution: $MDPT_DATA_DIR, else ~/.cache/mdpt/datasets; synthetic data of the same shape where it is
absent), the machine description and the one timing helper."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mdpt.data.batches import device_arrays
from mdpt.data.normalizer import Normalizer

HERE = Path(__file__).resolve().parent


def data_file(dataset_id: str) -> Path:
    """Where the data-dir resolution finds a dataset ($MDPT_DATA_DIR, else ~/.cache/mdpt/datasets)."""
    from mdpt.data.load import dataset_path, default_data_dir

    return dataset_path(dataset_id, default_data_dir())


DATA = data_file("bullet-hopper-medium-replay-v0")
TOTAL_STEPS = 1_000_000  # only sets the cosine schedule length


SECTIONS = ("train", "seeds", "infer", "torch", "eval")


XLA_DEFAULTS = "xla-defaults"  # a row variant: compiled with XLA's default options (no `training_compiler_options`)


REMAT_MEANS = {  # every chain_remat but "none", as the report describes it
    "matmuls": "the backward pass keeps each reverse step's matmul outputs and recomputes its activations",
    "all": "the backward pass keeps each reverse step's input and recomputes the step",
}


MEMORY_TARGET_ALGOS = ("dql", "edp")  # issue 12's memory target: the algorithms whose Q term runs in the policy step


# name -> (policy algo or None, guidance kind, policy role, guidance role, mode label)
UPDATES = {
    "iql": (None, "iql", None, "train", "guidance alone"),
    "dql-joint": ("dql", "dql-critic", "train", "train", "joint"),
    "dql-gf": ("dql", "iql", "train", "frozen", "guidance-first"),
    "idql-joint": ("idql", "iql", "train", "train", "joint"),
    "idql-gf": ("idql", "iql", "train", "frozen", "guidance-first"),
    "edp-joint": ("edp", "dql-critic", "train", "train", "joint"),
    "edp-gf": ("edp", "iql", "train", "frozen", "guidance-first"),
    "cfg-gf": ("cfg", "iql", "train", "frozen", "guidance-first"),
}


def log(*a):
    print(*a, flush=True)


def timed(fn, *args, **kwargs):
    """(result, seconds) of one call, JAX's asynchronous work included (the one clock of every section)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args, **kwargs))
    return out, time.perf_counter() - t0


def load_data():
    """(Dataset or None, device arrays, numpy arrays, description)."""
    if DATA.exists():
        try:
            from mdpt.data.load import load_dataset

            data = load_dataset(DATA)
            norm = Normalizer.fit(data)
            arrays = device_arrays(data, norm)
            return data, norm, arrays, f"{DATA.name} ({len(data)} transitions)"
        except Exception as e:  # fall back to synthetic data of the same shape
            log(f"could not load {DATA}: {e}; using synthetic data")
    from mdpt.data.dataset import Dataset

    rng = np.random.default_rng(0)
    n = 100_000
    obs = rng.normal(size=(n, 15)).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[999::1000] = True
    data = Dataset(obs, rng.uniform(-1, 1, (n, 3)).astype(np.float32), rng.normal(size=n).astype(np.float32),
                   np.zeros(n, bool), timeouts, rng.normal(size=(n, 15)).astype(np.float32), env=_hopper_env())
    norm = Normalizer.fit(data)
    return data, norm, device_arrays(data, norm), f"synthetic ({n} transitions, obs 15, act 3)"


def _hopper_env():
    from mdpt.data.registry import env_spec_for

    return env_spec_for("hopper")


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    devs = jax.devices()
    accel = [f"{d.platform}: {getattr(d, 'device_kind', '')}" for d in devs if d.platform != "cpu"]
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"cpu": cpu, "cores": os.cpu_count(), "accelerator": ", ".join(accel) or "none",
            "backend": jax.default_backend(), "jax": jax.__version__, "load": load}


def matmul_peak(n: int, repeats: int) -> float:
    """Best-of float32 matmul FLOP/s (n x n @ n x n) on the default device."""
    f = jax.jit(lambda a, b: a @ b)
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        best = min(best, timed(f, a, b)[1])
    return 2.0 * n**3 / best
