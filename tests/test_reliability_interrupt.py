"""Interruption: `mdpt train-policy` killed with SIGKILL at several moments and restarted with
`--resume` ends bit-identical to an uninterrupted run; a second process on the same run
directory is refused by the lock and the first is unharmed.

Every process is a real subprocess (`python -m mdpt.cli.main`). They share a JAX persistent
compilation cache so that only the first one pays the full XLA compile.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import d4rl_arrays, write_raw_hdf5

STEPS, CHUNK, CKPT_EVERY = 40, 5, 10
SLOW_CHECKPOINT = "0.4"  # seconds between a checkpoint's state file and its index (test hook)
CONFIG = """\
policy: {hidden: 16, depth: 1, T: 5}
guidance: {hidden: 16, depth: 1}
eval_variants: []
seeds: 2
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("interrupt")
    data = write_raw_hdf5(root / "tiny.hdf5", d4rl_arrays(lengths=(30, 20, 25), terminal=(True, False, False)),
                          {"env_id": "HopperBulletEnv-v0", "ref_min_score": 0.0, "ref_max_score": 10.0})
    (root / "cfg.yaml").write_text(CONFIG)
    env = {**os.environ, "MDPT_OFFLINE": "1", "JAX_PLATFORMS": "cpu",
           "JAX_COMPILATION_CACHE_DIR": str(root / "jax-cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
           "MDPT_TEST_SLOW_CHECKPOINT": SLOW_CHECKPOINT}
    return root, data, env


def argv(data: Path, root: Path, out: Path, resume: bool) -> list[str]:
    a = ["train-policy", "--algo", "dql", "--dataset", str(data), "--config", str(root / "cfg.yaml"),
         "--steps", str(STEPS), "--chunk", str(CHUNK), "--checkpoint-every", str(CKPT_EVERY),
         "--batch-size", "16", "--out", str(out), "--no-progress"]
    return a + (["--resume"] if resume else [])


def start(setup, out: Path, resume: bool) -> subprocess.Popen:
    root, data, env = setup
    with open(out.parent / f"{out.name}.log", "a") as log:
        return subprocess.Popen([sys.executable, "-m", "mdpt.cli.main", *argv(data, root, out, resume)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)


def log_of(out: Path) -> str:
    return (out.parent / f"{out.name}.log").read_text()


def index_step(out: Path) -> int | None:
    try:
        return json.loads((out / "checkpoints" / "checkpoint.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return None


def orphan_states(out: Path) -> list[int]:
    """State files newer than the checkpoint index: a checkpoint write in progress."""
    done = index_step(out) or 0
    steps = [int(p.name[len("state-"):-len(".safetensors")]) for p in (out / "checkpoints").glob("state-*.safetensors")]
    return [s for s in steps if s > done]


def kill_when(proc: subprocess.Popen, cond, timeout: float = 120.0) -> bool:
    """SIGKILL `proc` as soon as cond() holds; False if it exited first."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            return False
        if cond():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    raise AssertionError("kill condition never reached")


def train_rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows if r["phase"] == "train"]


def load_tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def assert_bit_identical(a: Path, b: Path) -> None:
    files = ["policy/params.safetensors", "guidance/params.safetensors", f"checkpoints/state-{STEPS}.safetensors"]
    for name in files:
        x, y = load_tensors(a / name), load_tensors(b / name)
        assert x.keys() == y.keys(), name
        for k in x:
            assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]), f"{name}: leaf {k} differs"


def stray_temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if ".mdpt-tmp-" in p.name or ".mdpt-old-" in p.name]


@pytest.mark.slow
def test_kill_and_resume_is_bit_identical_and_lock_refuses_second_process(setup, tmp_path, run_cli):
    root, data, env = setup
    t0 = time.monotonic()

    # --- the uninterrupted reference run; while it works, a second process is refused ---
    ref = tmp_path / "reference"
    proc = start(setup, ref, resume=False)
    assert not kill_when_never(proc, lambda: (ref / "config.json").exists())  # config.json: the lock is held
    code, out, err = run_cli(*argv(data, root, ref, resume=True))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "another mdpt process is using this run directory" in err
    assert proc.wait(timeout=180) == 0, log_of(ref)
    assert (ref / "summary.json").exists() and not stray_temporaries(ref)

    # --- the same run killed three times, resumed each time ---
    run = tmp_path / "interrupted"
    survived = []

    proc = start(setup, run, resume=False)  # 1. after the first checkpoint
    assert kill_when(proc, lambda: (index_step(run) or 0) >= CKPT_EVERY)
    survived.append(("after first checkpoint", index_step(run), orphan_states(run)))

    proc = start(setup, run, resume=True)  # 2. in the middle of a checkpoint write (state file, no index yet)
    first = index_step(run)
    assert kill_when(proc, lambda: (index_step(run) or 0) > first and bool(orphan_states(run)))
    survived.append(("during checkpoint write", index_step(run), orphan_states(run)))
    assert orphan_states(run)  # the new state file is written, the index still names the old one
    # metrics already hold rows past the checkpoint: resume must drop them, not duplicate them
    assert train_rows(run)[-1]["step"] > index_step(run)

    proc = start(setup, run, resume=True)  # 3. after the last checkpoint, while writing artifacts/summary
    assert kill_when(proc, lambda: index_step(run) == STEPS)
    survived.append(("after last checkpoint, before summary", index_step(run), orphan_states(run)))
    assert not (run / "summary.json").exists()

    proc = start(setup, run, resume=True)
    assert proc.wait(timeout=180) == 0, log_of(run)
    elapsed = time.monotonic() - t0

    assert_bit_identical(ref, run)
    rows = train_rows(run)
    assert [r["step"] for r in rows] == list(range(CHUNK, STEPS + 1, CHUNK))  # none missing, none duplicated
    assert rows == train_rows(ref)  # the same losses, bit for bit
    assert json.loads((run / "summary.json").read_text())["steps"] == STEPS
    assert not stray_temporaries(run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint.json", f"state-{STEPS}.safetensors"]
    assert len(survived) == 3
    print(f"kill points survived: {len(survived)}: {survived}; {elapsed:.0f} s")


def kill_when_never(proc: subprocess.Popen, cond, timeout: float = 120.0) -> bool:
    """Wait until cond() holds while `proc` runs; True if it exited first."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if cond():
            return False
        if proc.poll() is not None:
            return True
        time.sleep(0.005)
    raise AssertionError("condition never reached")
