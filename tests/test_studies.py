"""Studies (`mdpt study`), guidance transfer, `mdpt evaluate` and `mdpt report` on tiny data.

One module-scoped study is trained once: gfdt-vs-joint with dql and idql (the reproduction's
protocol restricted to that study: the IQL stage-1 guidance, joint and guidance-first runs), then
run again (it resumes: nothing is retrained). The other tests evaluate, recombine and report these
artifacts. Networks are 8 wide, 1 deep; evaluation episodes are capped at 3 steps.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import d4rl_arrays, write_raw_hdf5

TINY = ["--steps", "4", "--seeds", "2", "--eval-episodes", "1", "--eval-max-steps", "3", "--eval-every", "2",
        "--set", "chunk=2", "--set", "batch_size=16", "--set", "policy.hidden=8", "--set", "policy.depth=1",
        "--set", "guidance.hidden=8", "--set", "guidance.depth=1", "--set", "candidates=2", "--no-progress"]
ATTRS = {"env_id": "HopperBulletEnv-v0", "ref_min_score": 0.0, "ref_max_score": 10.0}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    return write_raw_hdf5(tmp_path_factory.mktemp("data") / "tiny-hopper.hdf5", d4rl_arrays(seed=3), ATTRS)


def _main(*argv) -> tuple[int, str, str]:
    from mdpt.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def studies(tmp_path_factory, data_file) -> dict:
    """{"out": dir, "gfdt": (code, stdout, stderr), "gfdt_again": ...}."""
    out = tmp_path_factory.mktemp("studies")
    result = {"out": out}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MDPT_OFFLINE", "1")
        for key in ("gfdt", "gfdt_again"):
            result[key] = _main("study", "gfdt-vs-joint", "--dataset", data_file, "--algos", "dql,idql", *TINY,
                                "--out", out)
    return result


@pytest.fixture(scope="module")
def transfer_study(studies) -> Path:
    """The study's runs folder (its dataset's), for the tests that recombine its artifacts."""
    code, _, err = studies["gfdt"]
    assert code == 0, err
    return studies["out"] / "runs" / "tiny-hopper"


def test_gfdt_vs_joint_study(studies, transfer_study):
    out_dir = studies["out"]
    code, out, err = studies["gfdt"]
    assert code == 0, err
    assert out.strip().endswith(f"report: {out_dir / 'report' / 'report.md'}")
    assert sorted(p.name for p in transfer_study.iterdir()) == ["awr-baseline", "bc-baseline", "dql-gfdt", "dql-joint",
                                                                "idql-gfdt", "idql-joint", "iql-a"]
    for run in ("dql-joint", "dql-gfdt"):
        rows = [json.loads(x) for x in (transfer_study / run / "metrics.jsonl").read_text().splitlines()]
        evals = [r for r in rows if r["phase"] == "eval"]
        assert sorted({r["step"] for r in evals}) == [2, 4]
        assert all(r["eval_s"] >= r["sim_s"] >= 0 and r["policy_s"] >= 0 for r in evals)
        assert all(len(r["returns"]) == 2 for r in evals)
    meta = json.loads((transfer_study / "dql-gfdt" / "policy" / "meta.json").read_text())
    path = meta["trained_with_guidance"]["path"]
    assert Path(path).is_absolute() and Path(path) == (transfer_study / "iql-a" / "guidance").resolve()
    report = (out_dir / "report" / "report.md").read_text()
    assert "### GFDT vs joint (the paper's table)" in report and "2. **GFDT" in report
    assert not (out_dir / "transfer").exists()  # this study swaps no guidance
    code, out, err = studies["gfdt_again"]  # resumed: finished runs were not retrained
    assert code == 0, err
    assert "step 2 guided" not in out and "7 runs planned, 7 done" in out


def test_transfer_matrix_all_pairs(transfer_study):
    from mdpt.agent import SelectorConfig
    from mdpt.reproduction.transfer import TransferSource, transfer_matrix

    sources = [TransferSource("dql", transfer_study / "dql-joint" / "policy", "dql-critic",
                              transfer_study / "dql-joint" / "guidance"),
               TransferSource("idql", transfer_study / "idql-joint" / "policy", "iql",
                              transfer_study / "idql-joint" / "guidance")]
    t = transfer_matrix(sources, SelectorConfig(candidates=2), episodes=1, max_steps=3, log=lambda *_: None)
    assert t["policies"] == ["dql-s0", "dql-s1", "idql-s0", "idql-s1"]
    assert t["guidances"] == ["dql-critic-s0", "dql-critic-s1", "iql-s0", "iql-s1"]
    assert sorted(map(tuple, t["diagonal"])) == [("dql-s0", "dql-critic-s0"), ("dql-s1", "dql-critic-s1"),
                                                  ("idql-s0", "iql-s0"), ("idql-s1", "iql-s1")]
    scores = np.asarray(t["scores"])
    assert scores.shape == (4, 4, 1, 1)  # policies x guidances x (1 policy seed) x episodes
    assert np.isfinite(scores).all() and t["mismatched"] == []
    s = t["summary"]
    assert s["own"]["cells"] == 4 and s["seed_swapped"]["cells"] == 4
    assert {(r["policy"], r["guidance"]) for r in s["cross_algorithm"]} == {("dql", "iql"), ("idql", "dql-critic")}
    assert "softmax(beta 0.5)" in t["selector"]["resolved"]["dql x iql"]  # the IQL guidance's own scale


def test_report_command(transfer_study, tmp_path, run_cli):
    runs = transfer_study
    code, out, err = run_cli("report", runs / "dql-joint", runs / "idql-joint", runs / "dql-gfdt",
                             "--out", tmp_path / "rep")
    assert code == 0, err
    assert (tmp_path / "rep" / "report.md").exists() and str(tmp_path / "rep" / "report.md") in out
    # dql joint (dql-critic) and guidance-first (iql) are paired by algorithm and dataset
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "Guidance-first relative to joint" in report and "dql-critic / iql" in report
    code, _, err = run_cli("report", tmp_path / "missing", "--out", tmp_path / "rep2")
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_evaluate_command(transfer_study, run_cli):
    runs = transfer_study
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
    runs = transfer_study
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
    from mdpt.reproduction.transfer import TransferSource, transfer_matrix

    other = write_raw_hdf5(tmp_path / "other.hdf5", d4rl_arrays(seed=9), ATTRS)
    cfg = RunConfig.from_dict({"dataset": str(other), "guidance_kind": "iql", "steps": 5, "chunk": 5,
                               "batch_size": 16, "seeds": 2, "guidance": {"hidden": 8, "depth": 1}})
    Run(tmp_path / "other-iql", cfg, progress=False, log=lambda *_: None).execute()
    runs = transfer_study
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


def test_study_options_and_errors(tmp_path, data_file, run_cli):
    from mdpt.reproduction.studies import make_config

    c = make_config(str(data_file), {"algo": "idql", "mode": "guidance-first", "steps": 5}, {"seeds": 2},
                    ["policy.hidden=16"])
    assert c.guidance_kind == "iql" and c.seeds == 2 and c.policy.hidden == 16 and c.policy.net == "lnresnet"
    assert make_config(str(data_file), {"algo": "dql"}).guidance_kind == "dql-critic"
    code, _, err = run_cli("study", "necessity", "--dataset", data_file, "--algos", "dqn", "--out", tmp_path)
    assert code == 2 and "unknown algo 'dqn'" in err
    code, _, err = run_cli("study", "gfdt-vs-joint", "--dataset", data_file, "--set", "nonsense=1",
                           "--out", tmp_path)
    assert code == 2 and "unknown key 'nonsense'" in err
    assert not (tmp_path / "runs").exists()
