"""Studies (`mdpt study`), guidance transfer, `mdpt evaluate` and `mdpt report` on tiny data.

One transfer study (dql + idql joint, 2 seeds, 20 steps, tiny networks) is trained once per
module; the other tests evaluate, recombine and report its artifacts. Evaluation episodes are
capped at a few env steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import d4rl_arrays, write_raw_hdf5

TINY = ["--steps", "20", "--seeds", "2", "--eval-episodes", "1", "--eval-max-steps", "3",
        "--set", "chunk=10", "--set", "batch_size=16", "--set", "policy.hidden=16", "--set", "policy.depth=1",
        "--set", "guidance.hidden=16", "--set", "guidance.depth=1", "--set", "candidates=4", "--no-progress"]
ATTRS = {"env_id": "HopperBulletEnv-v0", "ref_min_score": 0.0, "ref_max_score": 10.0}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    return write_raw_hdf5(tmp_path_factory.mktemp("data") / "tiny-hopper.hdf5", d4rl_arrays(seed=3), ATTRS)


@pytest.fixture(scope="module")
def transfer_study(tmp_path_factory, data_file) -> Path:
    from mdpt.cli.main import main

    out = tmp_path_factory.mktemp("transfer")
    code = main(["study", "transfer", "--dataset", str(data_file), "--algos", "dql,idql", *TINY,
                 "--set", "eval_variants=[]", "--out", str(out)])
    assert code == 0
    return out


def test_transfer_study_matrix(transfer_study):
    t = json.loads((transfer_study / "transfer" / "transfer.json").read_text())
    assert t["policies"] == ["dql-s0", "dql-s1", "idql-s0", "idql-s1"]
    assert t["guidances"] == ["dql-critic-s0", "dql-critic-s1", "iql-s0", "iql-s1"]
    assert sorted(map(tuple, t["diagonal"])) == [("dql-s0", "dql-critic-s0"), ("dql-s1", "dql-critic-s1"),
                                                  ("idql-s0", "iql-s0"), ("idql-s1", "iql-s1")]
    scores = np.asarray(t["scores"])
    assert scores.shape == (4, 4, 1, 1)  # policies x guidances x (1 policy seed) x episodes
    assert np.isfinite(scores).all() and t["mismatched"] == []
    s = t["summary"]
    assert s["own"]["cells"] == 4 and s["seed_swapped"]["cells"] == 4
    cross = {(r["policy"], r["guidance"]) for r in s["cross_algorithm"]}
    assert cross == {("dql", "iql"), ("idql", "dql-critic")}
    assert all(r["stronger"] in r["own_means"] for r in s["cross_algorithm"])
    report = (transfer_study / "report" / "report.md").read_text()
    assert "Guidance transfer" in report and "dql-joint" in report and "idql-joint" in report


def test_report_command(transfer_study, tmp_path, run_cli):
    runs = transfer_study / "runs"
    code, out, err = run_cli("report", runs / "dql-joint", runs / "idql-joint", "--out", tmp_path / "rep")
    assert code == 0, err
    assert (tmp_path / "rep" / "report.md").exists() and str(tmp_path / "rep" / "report.md") in out
    code, _, err = run_cli("report", tmp_path / "missing", "--out", tmp_path / "rep2")
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_evaluate_command(transfer_study, run_cli):
    runs = transfer_study / "runs"
    code, out, err = run_cli("evaluate", "--policy", runs / "dql-joint" / "policy", "--guidance",
                             runs / "idql-joint" / "guidance", "--guidance-seed", "1", "--candidates", "3",
                             "--episodes", "2", "--max-steps", "3", "--selector", "argmax")
    assert code == 0, err
    assert "seed 0:" in out and "seed 1:" in out and "reference d4rl" in out and "IQM" in out

    code, out, err = run_cli("evaluate", "--policy", runs / "idql-joint" / "policy", "--policy-seed", "1",
                             "--episodes", "2", "--max-steps", "3", "--reference", "dataset", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["policy_seeds"] == [1] and r["guidance"] is None and r["reference"] == "dataset"
    assert np.asarray(r["returns"]).shape == (1, 2) and np.asarray(r["scores"]).shape == (1, 2)
    # the dataset reference comes from the file's attrs (min 0, max 10)
    np.testing.assert_allclose(r["scores"], 10.0 * np.asarray(r["returns"]))
    assert r["summary"]["n"] == 2


def test_evaluate_errors(transfer_study, tmp_path, run_cli):
    runs = transfer_study / "runs"
    code, _, err = run_cli("evaluate", "--policy", tmp_path / "nope")
    assert code == 2 and err.startswith("mdpt: error:") and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("evaluate", "--policy", runs / "dql-joint" / "policy", "--policy-seed", "5")
    assert code == 2 and "seed index 5" in err
    code, _, err = run_cli("evaluate", "--policy", runs / "dql-joint" / "policy", "--selector", "argmax")
    assert code == 2 and "needs a guidance" in err


def test_transfer_refuses_other_data_unless_allowed(transfer_study, tmp_path, run_cli):
    from mdpt.agent import SelectorConfig
    from mdpt.errors import MDPTError
    from mdpt.experiments.config import RunConfig
    from mdpt.experiments.runner import Run
    from mdpt.experiments.studies import TransferSource, transfer_matrix

    other = write_raw_hdf5(tmp_path / "other.hdf5", d4rl_arrays(seed=9), ATTRS)
    cfg = RunConfig.from_dict({"dataset": str(other), "guidance_kind": "iql", "steps": 10, "chunk": 10,
                               "batch_size": 16, "seeds": 2, "guidance": {"hidden": 16, "depth": 1}})
    Run(tmp_path / "other-iql", cfg, progress=False, log=lambda *_: None).execute()
    runs = transfer_study / "runs"
    sources = [TransferSource("dql", runs / "dql-joint" / "policy", "dql-critic", runs / "dql-joint" / "guidance"),
               TransferSource(None, None, "other-iql", tmp_path / "other-iql" / "guidance")]
    sel = SelectorConfig("argmax", 1.0, 3)
    with pytest.raises(MDPTError, match="allow-data-mismatch"):
        transfer_matrix(sources, sel, episodes=1, max_steps=2, log=lambda *_: None)
    t = transfer_matrix(sources, sel, episodes=1, max_steps=2, allow_mismatch=True, log=lambda *_: None)
    assert len(t["mismatched"]) == 4 and all(g.startswith("other-iql") for _, g in t["mismatched"])
    code, out, err = run_cli("evaluate", "--policy", runs / "dql-joint" / "policy", "--guidance",
                             tmp_path / "other-iql" / "guidance", "--episodes", "1", "--max-steps", "2", "--json")
    assert code == 2 and "allow-data-mismatch" in err
    code, out, err = run_cli("evaluate", "--policy", runs / "dql-joint" / "policy", "--guidance",
                             tmp_path / "other-iql" / "guidance", "--episodes", "1", "--max-steps", "2",
                             "--allow-data-mismatch", "--json")
    assert code == 0, err
    assert json.loads(out)["mismatch_override"] is True


def test_necessity_study(tmp_path, data_file, run_cli):
    code, out, err = run_cli("study", "necessity", "--dataset", data_file, "--algos", "dql", *TINY,
                             "--eval-every", "10", "--set", "candidates=2", "--out", tmp_path)
    assert code == 0, err
    assert out.strip().endswith(f"report: {tmp_path / 'report' / 'report.md'}")
    for mode in ("joint", "guidance-first"):
        s = json.loads((tmp_path / "runs" / f"dql-{mode}" / "summary.json").read_text())
        assert set(s["final"]) == {"guided", "unguided", "random-guidance"}
        rows = [json.loads(x) for x in (tmp_path / "runs" / f"dql-{mode}" / "metrics.jsonl").read_text().splitlines()]
        assert sorted({r["step"] for r in rows if r["phase"] == "eval"}) == [10, 20]
    assert (tmp_path / "runs" / "dql-guidance-first" / "guidance-run" / "guidance").is_dir()
    # running it again resumes: finished runs are not retrained
    code, out, err = run_cli("study", "necessity", "--dataset", data_file, "--algos", "dql", *TINY,
                             "--eval-every", "10", "--set", "candidates=2", "--out", tmp_path)
    assert code == 0, err
    assert "step 10 guided" not in out  # resumed at the end: nothing retrained or re-evaluated


def test_study_options_and_errors(tmp_path, data_file, run_cli):
    from mdpt.experiments.studies import make_config

    c = make_config(str(data_file), {"algo": "idql", "mode": "guidance-first", "steps": 5}, {"seeds": 2},
                    ["policy.hidden=16"])
    assert c.guidance_kind == "iql" and c.seeds == 2 and c.policy == {"hidden": 16}
    assert make_config(str(data_file), {"algo": "dql"}).guidance_kind == "dql-critic"
    code, _, err = run_cli("study", "necessity", "--dataset", data_file, "--algos", "dqn", "--out", tmp_path)
    assert code == 2 and "unknown algo 'dqn'" in err
    code, _, err = run_cli("study", "gfdt-vs-joint", "--dataset", data_file, "--set", "nonsense=1",
                           "--out", tmp_path)
    assert code == 2 and "unknown key 'nonsense'" in err
    assert not (tmp_path / "runs").exists()
