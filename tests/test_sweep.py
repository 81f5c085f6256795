"""`mdpt sweep`: a 2-trial grid in a local spawn process and on a local Ray instance (tiny trials)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import d4rl_arrays, write_raw_hdf5


def _spec(tmp_path: Path, grid: dict | None = None) -> Path:
    data = write_raw_hdf5(tmp_path / "tiny.hdf5", d4rl_arrays(seed=4),
                          {"env_id": "HopperBulletEnv-v0", "ref_min_score": 0.0, "ref_max_score": 10.0})
    spec = {
        "base": {"dataset": str(data), "steps": 5, "chunk": 5, "batch_size": 16, "seeds": 2, "eval_episodes": 1,
                 "eval_max_steps": 2, "candidates": 2, "policy": {"hidden": 8, "depth": 1},
                 "guidance": {"hidden": 8, "depth": 1}},
        "grid": grid or {"algo": ["dql", "idql"]},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_expand_grid(tmp_path):
    from mdpt.experiments.config import load_yaml
    from mdpt.experiments.sweep import expand

    spec = load_yaml(_spec(tmp_path, {"algo": ["dql", "idql"], "mode": ["joint", "guidance-first"],
                                      "policy.eta": [0.5]}))
    trials = expand(spec)
    assert [t["name"] for t in trials] == ["trial-000-dql-joint-0.5", "trial-001-dql-guidance-first-0.5",
                                           "trial-002-idql-joint-0.5", "trial-003-idql-guidance-first-0.5"]
    policy = trials[1]["config"]["policy"]
    assert {k: policy[k] for k in ("hidden", "depth", "eta", "algo")} == {"hidden": 8, "depth": 1, "eta": 0.5, "algo": "dql"}
    assert trials[3]["config"]["seeds"] == 2 and trials[3]["config"]["eval"]["max_steps"] == 2
    # the older top-level eval_max_steps goes into base; base's own value wins
    base = {k: v for k, v in spec["base"].items() if k != "eval_max_steps"}
    assert expand({"base": base, "grid": {"algo": ["dql"]}, "eval_max_steps": 7})[0]["config"]["eval"]["max_steps"] == 7
    assert expand({**spec, "eval_max_steps": 7})[0]["config"]["eval"]["max_steps"] == 2


def test_sweep_validates_every_trial_first(tmp_path, run_cli):
    spec = _spec(tmp_path, {"algo": ["dql", "dqn"]})
    code, _, err = run_cli("sweep", spec, "--out", tmp_path / "out")
    assert code == 2 and "trial trial-001-dqn" in err and "unknown algo" in err
    assert not (tmp_path / "out").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: {}\ngrd: {}\n")
    code, _, err = run_cli("sweep", bad, "--out", tmp_path / "out")
    assert code == 2 and "unknown key 'grd'" in err


def _check(out: Path, launcher: str):
    result = json.loads((out / "sweep.json").read_text())
    assert result["launcher"] == launcher
    trials = result["trials"]
    assert [t["name"] for t in trials] == ["trial-000-dql", "trial-001-idql"]
    for t in trials:
        assert t["status"] == "ok", t.get("error")
        assert t["summary"]["algo"] == t["grid"]["algo"] and t["summary"]["seeds"] == [0, 1]
        assert len(t["summary"]["final"]["guided"]["scores"]) == 2
        assert (Path(t["run_dir"]) / "policy" / "meta.json").exists()


def test_sweep_local_processes(tmp_path, run_cli):
    code, out, err = run_cli("sweep", _spec(tmp_path), "--workers", "1", "--out", tmp_path / "out")
    assert code == 0, err
    _check(tmp_path / "out", "local")


def test_sweep_ray(tmp_path, run_cli):
    pytest.importorskip("ray")
    code, out, err = run_cli("sweep", _spec(tmp_path), "--launcher", "ray", "--address", "local",
                             "--workers", "2", "--out", tmp_path / "out")
    assert code == 0, err
    _check(tmp_path / "out", "ray")


def test_ray_missing_is_one_line(tmp_path, run_cli, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code, _, err = run_cli("sweep", _spec(tmp_path), "--launcher", "ray", "--out", tmp_path / "out")
    assert code == 2 and "pip install" in err and len(err.strip().splitlines()) == 1


def test_ray_trials_ask_for_their_resources_and_cap_gpu_memory():
    from mdpt.errors import MDPTError
    from mdpt.experiments.sweep import trial_resources

    cpu = trial_resources(2.0, 0.0)
    assert (cpu["num_cpus"], cpu["num_gpus"]) == (2.0, 0.0) and cpu["runtime_env"]["env_vars"]["JAX_PLATFORMS"] == "cpu"
    gpu = trial_resources(1.0, 0.25)["runtime_env"]["env_vars"]
    assert gpu["JAX_PLATFORMS"] == "cuda" and gpu["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert gpu["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.225"
    import pytest

    with pytest.raises(MDPTError):
        trial_resources(0.0, 0.0)
