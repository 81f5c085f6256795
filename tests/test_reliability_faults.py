"""Numerical and environment faults: each ends in one line naming what went wrong, before
training where it can be detected then, and leaves nothing half-written behind.

Training here is a guidance module alone (`train-guidance --kind iql`, tiny networks): the same
run loop as a policy, the smallest program to compile.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import pathlib
import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

import mdpt.data.load
from mdpt.errors import MDPTError
from mdpt.experiments.config import RunConfig
from mdpt.experiments.runner import Run
from mdpt.io import load_params, read_json
from mdpt.training.trainer import Trainer

SMALL = {"guidance": {"hidden": 16, "depth": 1}, "eval_variants": [], "batch_size": 16}
FAULTS: list[str] = []  # what was injected, reported at the end of the module


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\nfaults injected ({len(FAULTS)}): {FAULTS}")


def guidance_argv(data, out, steps=20, chunk=5, extra=()):
    return ["train-guidance", "--kind", "iql", "--dataset", str(data), "--steps", str(steps), "--chunk", str(chunk),
            "--checkpoint-every", str(chunk), "--batch-size", "16", "--set", "guidance.hidden=16",
            "--set", "guidance.depth=1", "--out", str(out), "--no-progress", *extra]


def stray_temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if ".mdpt-tmp-" in p.name or ".mdpt-old-" in p.name] if out.exists() else []


def one_line(err: str) -> str:
    assert err.startswith("mdpt: error: ") and err.count("\n") == 1, err
    return err


# ----- numerical faults -----

def test_nan_reward_from_the_start_stops_at_step_1(tiny_dataset, tmp_path, monkeypatch, run_cli):
    rewards = tiny_dataset.rewards.copy()
    rewards[:] = np.nan  # every batch holds a NaN reward (data loading would refuse it: bypassed here)
    bad = dataclasses.replace(tiny_dataset, rewards=rewards)
    monkeypatch.setattr(mdpt.data.load, "load_dataset", lambda *a, **k: bad)
    out = tmp_path / "run"
    code, stdout, err = run_cli(*guidance_argv("any.hdf5", out))
    FAULTS.append("NaN rewards from step 1")
    assert code == 3  # RunStopped: its own exit code
    msg = one_line(err)
    assert "non-finite guidance/" in msg and "loss" in msg and "at step 1 " in msg
    assert "no checkpoint had been written" in msg
    assert not (out / "checkpoints" / "checkpoint.json").exists()
    assert not (out / "metrics.jsonl").exists() or (out / "metrics.jsonl").read_text() == ""
    assert not stray_temporaries(out)


def test_nan_batch_mid_run_keeps_last_good_checkpoint(tiny_dataset, tmp_path, monkeypatch):
    """From the third chunk on every batch holds NaN rewards: training stops at step 11 and the
    checkpoint of step 10 stays, valid and finite."""
    calls = []
    original = Trainer.run

    def poisoned(self, state, steps, start=0):
        calls.append(steps)
        if len(calls) == 3:
            self.arrays = {**self.arrays, "rew": self.arrays["rew"] * np.float32(np.nan)}
        return original(self, state, steps, start)

    monkeypatch.setattr(Trainer, "run", poisoned)
    config = RunConfig.from_dict({"dataset": "tiny", "steps": 20, "chunk": 5, "checkpoint_every": 5, **SMALL})
    out = tmp_path / "run"
    with pytest.raises(MDPTError) as e:
        Run(out, config, progress=False, log=lambda *a: None, dataset=tiny_dataset).execute()
    FAULTS.append("NaN batch at step 11 (after checkpoint 10)")
    msg = str(e.value)
    assert "\n" not in msg
    assert "non-finite guidance/" in msg and "loss" in msg and "at step 11 " in msg
    assert "last good checkpoint (step 10)" in msg
    index = read_json(out / "checkpoints" / "checkpoint.json")
    assert index["step"] == 10
    leaves = load_params(out / "checkpoints" / index["file"], index["sha256"])  # checksum verified
    assert all(np.isfinite(v).all() for v in leaves.values() if np.issubdtype(v.dtype, np.floating))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10]  # the NaN chunk is not logged
    assert not stray_temporaries(out)
    assert not (out / "guidance").exists() and not (out / "summary.json").exists()


def test_nonfinite_parameters_are_never_checkpointed(tmp_path):
    config = RunConfig.from_dict({"dataset": "tiny", **SMALL})
    run = Run(tmp_path, config)
    state = {"guidance": {"params": {"w": np.array([1.0, np.inf], np.float32)}}, "key": np.zeros(2, np.uint32)}
    with pytest.raises(MDPTError, match=r"non-finite values in \['guidance'\]\['params'\]\['w'\] after step 7"):
        run._check_finite_state(state, 7)
    FAULTS.append("inf parameter with finite losses")


# ----- environment faults -----

def test_output_below_a_regular_file_is_refused_before_training(tiny_hopper_hdf5, tmp_path, run_cli):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(*guidance_argv(tiny_hopper_hdf5, blocker / "run"))
    FAULTS.append("--out below a regular file")
    assert code == 2 and "output directory is not writable" in one_line(err)


def test_unwritable_output_is_refused_before_training(tiny_hopper_hdf5, tmp_path, monkeypatch, run_cli):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    if os.geteuid() == 0:  # root writes anyway: simulate the permission error
        real = pathlib.Path.write_bytes

        def denied(self, data):
            if self.parent == out:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real(self, data)

        monkeypatch.setattr(pathlib.Path, "write_bytes", denied)
    try:
        code, _, err = run_cli(*guidance_argv(tiny_hopper_hdf5, out))
    finally:
        out.chmod(0o700)
    FAULTS.append("read-only output directory")
    assert code == 2
    assert "output directory is not writable (Permission denied)" in one_line(err)
    assert sorted(p.name for p in out.iterdir()) == []  # nothing written: not even config.json



def test_a_run_refused_before_training_does_not_claim_its_directory(tiny_hopper_hdf5, tmp_path, run_cli):
    out = tmp_path / "run"
    code, _, err = run_cli(*guidance_argv(tmp_path / "missing.hdf5", out, steps=5))
    FAULTS.append("dataset missing at start")
    assert code == 2 and "missing.hdf5" in one_line(err)
    assert not (out / "config.json").exists()
    code, _, err = run_cli(*guidance_argv(tiny_hopper_hdf5, out, steps=5))  # the same --out, the data now found
    assert code == 0, err
    assert (out / "config.json").exists()

def test_full_disk_is_refused_before_training(tiny_hopper_hdf5, tmp_path, monkeypatch, run_cli):
    import mdpt.experiments.rundir as rundir

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(rundir.shutil, "disk_usage", lambda p: usage(1 << 30, (1 << 30) - (1 << 20), 1 << 20))
    out = tmp_path / "run"
    code, _, err = run_cli(*guidance_argv(tiny_hopper_hdf5, out))
    FAULTS.append("full disk before start")
    assert code == 2 and "only 1 MiB free" in one_line(err)
    assert sorted(p.name for p in out.iterdir()) == [] if out.exists() else True


def test_disk_full_during_checkpoint_write_leaves_previous_checkpoint(tiny_hopper_hdf5, tmp_path, monkeypatch, run_cli):
    """ENOSPC half-way through writing the second checkpoint's state file."""
    real = pathlib.Path.write_bytes
    writes = []

    def full(self, data):
        if self.name.startswith(".state-"):
            writes.append(self.name)
            if len(writes) == 2:
                real(self, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", full)
    out = tmp_path / "run"
    code, _, err = run_cli(*guidance_argv(tiny_hopper_hdf5, out))
    FAULTS.append("ENOSPC during checkpoint write")
    assert code == 2 and "No space left on device" in one_line(err)
    index = read_json(out / "checkpoints" / "checkpoint.json")
    assert index["step"] == 5
    load_params(out / "checkpoints" / index["file"], index["sha256"])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint.json", "state-5.safetensors"]
    assert not stray_temporaries(out)


def test_stale_temporaries_of_a_killed_process_are_removed_under_the_lock(tmp_path):
    from mdpt.experiments.rundir import RunLock, remove_stale_temporaries

    (tmp_path / "checkpoints").mkdir()
    stale = [tmp_path / ".metrics.jsonl.mdpt-tmp-abc.tmp", tmp_path / "checkpoints" / ".state-5.safetensors.mdpt-tmp-x.tmp",
             tmp_path / ".policy.mdpt-old-123"]
    for p in stale[:2]:
        p.write_text("half")
    stale[2].mkdir()
    (tmp_path / ".policy.mdpt-tmp-q1.tmp").mkdir()
    keep = tmp_path / "metrics.jsonl"
    keep.write_text("")
    with RunLock(tmp_path):
        removed = remove_stale_temporaries(tmp_path)
    assert len(removed) == 4 and keep.exists() and not stray_temporaries(tmp_path)
    shutil.rmtree(tmp_path / "checkpoints")


def test_a_kill_during_an_evaluation_redoes_only_its_missing_variants(tiny_dataset, tmp_path):
    config = RunConfig.from_dict({
        "algo": "dql", "dataset": "bullet-hopper-medium-v0", "steps": 4, "chunk": 2, "seeds": 1, "batch_size": 8,
        "policy": {"hidden": 8, "depth": 1}, "guidance": {"hidden": 8, "depth": 1}, "selector": {"candidates": 2},
        "eval": {"every": 2, "episodes": 1, "max_steps": 3, "variants": ["guided", "unguided"]}})
    out = tmp_path / "run"

    def execute(resume):
        return Run(out, config, resume=resume, progress=False, log=lambda *a: None, dataset=tiny_dataset).execute()

    def rows():
        return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]

    execute(False)
    before = rows()
    # what a kill in the last evaluation leaves: the checkpoint of step 4 (written first), its first variant
    cut = [r for r in before if not (r["phase"] == "eval" and r["step"] == 4 and r["variant"] == "unguided")]
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in cut))
    (out / "summary.json").unlink()
    FAULTS.append("kill during the final evaluation")
    execute(True)
    after = rows()
    final = [r for r in after if r["phase"] == "eval" and r["step"] == 4]
    assert [r["variant"] for r in final] == ["guided", "unguided"]  # each once
    assert final[0] == next(r for r in before if r["phase"] == "eval" and r["step"] == 4)  # kept, not redone
    assert [r for r in after if r["phase"] == "train"] == [r for r in before if r["phase"] == "train"]  # no retraining
    assert (out / "summary.json").exists()
