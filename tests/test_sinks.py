"""Metrics sinks beside metrics.jsonl: TensorBoard (the real package) and Weights & Biases (a stub of
its API: the tests never reach the network), chosen by `log.backends`."""

from __future__ import annotations

import sys
import types

import pytest

from mdpt.errors import MDPTError
from mdpt.experiments.config import RunConfig
from mdpt.experiments.runner import Run

SMALL = {"guidance": {"hidden": 8, "depth": 1}, "batch_size": 8, "steps": 6, "chunk": 2, "seeds": 2}


def _run(tmp_path, tiny_dataset, backends):
    config = RunConfig.from_dict({"dataset": "tiny", "log": {"backends": backends}, **SMALL})
    return Run(tmp_path / "run", config, progress=False, log=lambda *a: None, dataset=tiny_dataset).execute()


def test_tensorboard_receives_the_training_scalars(tmp_path, tiny_dataset):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _run(tmp_path, tiny_dataset, ["jsonl", "tensorboard"])
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = events.Tags()["tensors"] or events.Tags()["scalars"]
    assert "train/guidance/q_loss" in tags and "train/guidance/v_loss" in tags
    series = events.Tensors("train/guidance/q_loss") if events.Tags()["tensors"] else events.Scalars("train/guidance/q_loss")
    assert [e.step for e in series] == [2, 4, 6]  # one point per chunk, at its last step


def test_wandb_gets_a_stable_resumable_run(tmp_path, tiny_dataset, monkeypatch):
    calls = {"init": [], "log": [], "finish": 0}

    class FakeRun:
        def log(self, values, step):
            calls["log"].append((step, values))

        def finish(self):
            calls["finish"] += 1

    def init(**kwargs):
        calls["init"].append(kwargs)
        return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    _run(tmp_path, tiny_dataset, ["jsonl", "wandb"])
    (kw,) = calls["init"]
    assert kw["project"] == "mdpt" and kw["resume"] == "allow" and kw["name"] == "run" and len(kw["id"]) == 16
    assert kw["config"]["guidance"]["kind"] == "iql"
    assert [s for s, _ in calls["log"]] == [2, 4, 6] and calls["finish"] == 1
    assert "train/guidance/q_loss" in calls["log"][0][1]


def test_a_missing_package_is_one_line_before_training(tmp_path, tiny_dataset, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard.summary", None)  # import fails
    with pytest.raises(MDPTError, match=r"pip install 'mdpt\[tensorboard\]'"):
        _run(tmp_path, tiny_dataset, ["tensorboard"])
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
