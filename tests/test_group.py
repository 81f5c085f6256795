"""Runs grouped into one program (datasets of one environment stacked) compute what they would
compute alone: the same parameters, per-run clip norms kept, resumable after a time limit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import d4rl_arrays

from mdpt.data.dataset import Dataset
from mdpt.data.registry import env_spec_for
from mdpt.errors import MDPTError
from mdpt.experiments.config import RunConfig
from mdpt.experiments.group import GroupRun
from mdpt.experiments.runner import Run
from mdpt.io import flatten_tree, load_params

NETS = {"guidance": {"hidden": 16, "depth": 1}, "policy": {"hidden": 16, "depth": 1}}
COMMON = {"steps": 6, "chunk": 3, "seeds": 2, "batch_size": 8, "eval_variants": [], **NETS}


def _dataset(name: str, lengths, seed: int) -> Dataset:
    a = d4rl_arrays(lengths=lengths, seed=seed)
    return Dataset(a["observations"], a["actions"], a["rewards"], a["terminals"], a["timeouts"],
                   a["next_observations"], env=env_spec_for("HopperBulletEnv-v0"), dataset_id=name)


@pytest.fixture(scope="module")
def datasets():
    return {"bullet-hopper-medium-v0": _dataset("bullet-hopper-medium-v0", (6, 4, 5), 1),
            "bullet-hopper-medium-replay-v0": _dataset("bullet-hopper-medium-replay-v0", (3, 7, 2, 9), 2)}


def _params(run_dir, kind):
    meta = json.loads((run_dir / kind / "meta.json").read_text())
    return flatten_tree(load_params(run_dir / kind / "params.safetensors", meta["files"]["params.safetensors"]))


def _close(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=2e-5, atol=2e-6, err_msg=k)


def test_grouped_joint_dql_equals_separate_runs_with_per_task_clips(tmp_path, datasets):
    configs = {ds: RunConfig.from_dict({"dataset": ds, "algo": "dql", **COMMON}) for ds in datasets}
    clips = {c.policy.grad_clip for c in configs.values()}
    assert clips == {9.0, 4.0}  # Diffusion-QL's hopper medium / medium-replay values, kept per run
    for ds, c in configs.items():
        Run(tmp_path / "alone" / ds, c, progress=False, log=lambda *a: None, dataset=datasets[ds]).execute()
    summaries = GroupRun([(tmp_path / "group" / ds, c) for ds, c in configs.items()], log=lambda *a: None,
                         datasets=datasets).execute()
    assert [s["status"] for s in summaries] == ["trained", "trained"]
    for ds in datasets:
        for kind in ("policy", "guidance"):
            _close(_params(tmp_path / "alone" / ds, kind), _params(tmp_path / "group" / ds, kind))


def test_group_stops_at_deadline_and_resumes(tmp_path, datasets):
    items = [(tmp_path / ds, RunConfig.from_dict({"dataset": ds, "guidance_kind": "iql", **COMMON}))
             for ds in datasets]
    assert GroupRun(items, log=lambda *a: None, deadline=0.0, datasets=datasets).execute() == []
    steps = {json.loads((d / "checkpoints" / "checkpoint.json").read_text())["step"] for d, _ in items}
    assert steps == {3}  # one chunk, then the time limit: every run checkpointed at the same step
    assert all(json.loads((d / "config.json").read_text())["dataset"] == c.dataset for d, c in items)
    summaries = GroupRun(items, log=lambda *a: None, datasets=datasets).execute()
    assert all(s["steps"] == 6 and s["status"] == "trained" for s in summaries)
    rows = [json.loads(x) for x in (items[0][0] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]


def test_group_refuses_runs_that_differ_in_more_than_data(datasets):
    a = RunConfig.from_dict({"dataset": "bullet-hopper-medium-v0", "algo": "dql", **COMMON})
    b = RunConfig.from_dict({"dataset": "bullet-hopper-medium-replay-v0", "algo": "dql", **{**COMMON, "seeds": 3}})
    with pytest.raises(MDPTError, match="differ in seeds"):
        GroupRun([("x", a), ("y", b)], datasets=datasets)
