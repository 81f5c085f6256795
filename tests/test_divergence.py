"""A small MDP on which joint DQL's critic diverges without LayerNorm or clipping (the failure seen
on bullet walker2d), and the published default critic stays within max |r| / (1 - gamma).

The data's actions sit in a tiny ball around 0 and the reward ignores them, so every action the
Q term pushes the policy towards is out of distribution: the critic's extrapolation there feeds
its own targets. A plain MLP critic grows past the bound and keeps growing; the value check stops
the run and keeps the last checkpoint written while the values were within the bound.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mdpt.data.dataset import Dataset
from mdpt.data.registry import env_spec_for
from mdpt.errors import RunStopped
from mdpt.experiments.config import RunConfig
from mdpt.experiments.runner import Run
from mdpt.io import read_json


def off_support_mdp(n: int = 4000, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, 26)).astype(np.float32)
    act = np.clip(rng.normal(0.0, 0.001, size=(n, 6)), -1, 1).astype(np.float32)
    episode_level = np.repeat(rng.uniform(0, 1, size=n // 100), 100)
    rew = (episode_level + 0.1 * np.tanh(obs[:, 0])).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[99::100] = True
    return Dataset(obs, act, rew, np.zeros(n, bool), timeouts, rng.normal(size=(n, 26)).astype(np.float32),
                   env=env_spec_for("HalfCheetahBulletEnv-v0"), dataset_id="off-support-mdp")


def config(**guidance) -> RunConfig:
    return RunConfig.from_dict({
        "dataset": "off-support-mdp", "algo": "dql", "steps": 4000, "chunk": 500, "checkpoint_every": 500,
        "batch_size": 64, "eval_variants": [], "divergence": {"margin": 1.2, "patience": 2},
        "policy": {"hidden": 64, "eta": 20.0, "lr": 1e-3, "lr_schedule": "constant"},
        "guidance": {"hidden": 64, "lr": 3e-3, "discount": 0.9, "lr_schedule": "constant", **guidance}})


@pytest.fixture(scope="module")
def mdp():
    return off_support_mdp()


def q_trajectory(run_dir) -> list[float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [max(r["guidance/q_abs_max"]) for r in rows if r["phase"] == "train"]


def test_plain_critic_diverges_and_the_run_stops_with_the_last_good_checkpoint(tmp_path, mdp):
    plain = config(layer_norm=False, first_activation="same")  # Diffusion-QL's critic, unclipped
    assert plain.guidance.grad_clip is None
    with pytest.raises(RunStopped) as e:
        Run(tmp_path, plain, progress=False, log=lambda *a: None, dataset=mdp).execute()
    msg = str(e.value)
    assert "diverging" in msg and "last good checkpoint" in msg and "\n" not in msg
    summary = read_json(tmp_path / "summary.json")
    vc = summary["value_check"]
    q = q_trajectory(tmp_path)
    assert summary["status"] == "diverged" and not vc["within_bound"]
    assert q[-1] > vc["limit"] and q[-1] > q[-2]  # past the bound and still growing when stopped
    kept = read_json(tmp_path / "checkpoints" / "checkpoint.json")["step"]
    assert kept < vc["first_exceeded_step"]  # nothing written once the values left the bound


def test_published_default_critic_stays_within_its_bound(tmp_path, mdp):
    default = config()  # the authors' LayerNorm critic
    assert default.guidance.layer_norm and default.guidance.first_activation == "tanh"
    summary = Run(tmp_path, default, progress=False, log=lambda *a: None, dataset=mdp).execute()
    vc = summary["value_check"]
    assert vc["within_bound"] and vc["max_abs_q"] < vc["bound"]
    assert summary["status"] == "finished" and summary["steps"] == 4000
    # killed after its last checkpoint, before the summary: the resumed run trains nothing and still
    # reports the values and the speed its log recorded
    (tmp_path / "summary.json").unlink()
    again = Run(tmp_path, default, resume=True, progress=False, log=lambda *a: None, dataset=mdp).execute()
    assert again["value_check"] == vc and again["value_check"]["max_abs_q"] == max(q_trajectory(tmp_path))
    assert again["seconds_per_step"] > 0
