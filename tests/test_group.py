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
    assert [s["status"] for s in summaries] == ["finished", "finished"]  # no evaluations configured: none pending
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
    assert all(s["steps"] == 6 and s["status"] == "finished" for s in summaries)
    rows = [json.loads(x) for x in (items[0][0] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]


def test_group_refuses_runs_that_differ_in_more_than_data(datasets):
    a = RunConfig.from_dict({"dataset": "bullet-hopper-medium-v0", "algo": "dql", **COMMON})
    b = RunConfig.from_dict({"dataset": "bullet-hopper-medium-replay-v0", "algo": "dql", **{**COMMON, "seeds": 3}})
    with pytest.raises(MDPTError, match="differ in seeds"):
        GroupRun([("x", a), ("y", b)], datasets=datasets)


EVAL = {**{k: v for k, v in COMMON.items() if k != "eval_variants"},  # one name per setting (a conflict else)
        "eval": {"every": 3, "episodes": 1, "max_steps": 3, "variants": ["guided"]}}


def _evals(run_dir) -> list[tuple]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return sorted((r["step"], r["variant"], r["returns"]) for r in rows if r["phase"] == "eval")


def test_a_run_trained_without_evaluation_is_evaluated_later_exactly_as_along_training(tmp_path, datasets):
    ds = "bullet-hopper-medium-v0"
    config = RunConfig.from_dict({"dataset": ds, "algo": "dql", **EVAL})
    quiet = {"progress": False, "log": lambda *a: None, "dataset": datasets[ds]}
    Run(tmp_path / "along", config, **quiet).execute()
    trained = Run(tmp_path / "later", config, defer_evaluation=True, **quiet).execute()
    assert trained["status"] == "trained" and trained["final"] == {} and not _evals(tmp_path / "later")
    assert sorted(p.name for p in (tmp_path / "later" / "snapshots").iterdir()) == ["step-000000003", "step-000000006"]
    done = Run(tmp_path / "later", config, resume=True, **quiet).execute()  # a machine with the simulator
    assert _evals(tmp_path / "later") == _evals(tmp_path / "along") and len(_evals(tmp_path / "along")) == 2
    along = json.loads((tmp_path / "along" / "summary.json").read_text())
    assert done["status"] == "finished" and done["evaluated_later"]
    assert (done["final"], done["best"]) == (along["final"], along["best"])
    assert done["seconds_per_step"] == trained["seconds_per_step"]  # the training machine's cost is kept
    best = json.loads((tmp_path / "later" / "best" / "best.json").read_text())
    assert best == json.loads((tmp_path / "along" / "best" / "best.json").read_text())
    _close(_params(tmp_path / "later" / "best", "policy"), _params(tmp_path / "along" / "best", "policy"))
    assert not (tmp_path / "later" / "snapshots").exists()  # kept only while needed (eval.snapshots is off)


def test_a_group_without_the_simulator_keeps_snapshots_that_evaluate_as_along_training(tmp_path, datasets):
    configs = {ds: RunConfig.from_dict({"dataset": ds, "algo": "dql", "mode": "guidance-first",
                                        "stage1": {"guidance_path": "random"}, **EVAL}) for ds in datasets}
    quiet = {"log": lambda *a: None, "datasets": datasets}
    GroupRun([(tmp_path / "along" / ds, c) for ds, c in configs.items()], defer_evaluation=False, **quiet).execute()
    trained = GroupRun([(tmp_path / "later" / ds, c) for ds, c in configs.items()], **quiet).execute()
    assert [s["status"] for s in trained] == ["trained", "trained"]
    for ds, c in configs.items():
        done = Run(tmp_path / "later" / ds, c, resume=True, progress=False, log=lambda *a: None,
                   dataset=datasets[ds]).execute()
        assert done["status"] == "finished" and done["group"] == list(datasets)
        assert _evals(tmp_path / "later" / ds) == _evals(tmp_path / "along" / ds)
        assert len(_evals(tmp_path / "along" / ds)) == 2
