"""Studies (`mdpt study`), guidance transfer, `mdpt evaluate` and `mdpt report` on tiny data.

One module-scoped set of runs is trained once: the necessity study (dql joint and guidance-first,
3 evaluation variants), the same study again (it resumes: nothing is retrained), then the
transfer study (dql + idql joint, 2 seeds) in the same directory, which resumes the necessity
study's dql-joint run (same config) and trains idql-joint. The other tests evaluate, recombine
and report these artifacts. Networks are 8 wide, 1 deep; evaluation episodes are capped at 3 steps.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import d4rl_arrays, write_raw_hdf5

TINY = ["--steps", "10", "--seeds", "2", "--eval-episodes", "1", "--eval-max-steps", "3", "--eval-every", "5",
        "--set", "chunk=5", "--set", "batch_size=16", "--set", "policy.hidden=8", "--set", "policy.depth=1",
        "--set", "guidance.hidden=8", "--set", "guidance.depth=1", "--set", "candidates=2", "--no-progress"]
VARIANTS = ["--set", "eval_variants=[guided,unguided,random-guidance]"]  # the necessity study's, for sharing
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
    """{"out": dir, "necessity": (code, stdout, stderr), "necessity_again": ..., "transfer": ...}."""
    out = tmp_path_factory.mktemp("studies")
    result = {"out": out}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MDPT_OFFLINE", "1")
        result["necessity"] = _main("study", "necessity", "--dataset", data_file, "--algos", "dql", *TINY,
                                    "--out", out)
        result["necessity_again"] = _main("study", "necessity", "--dataset", data_file, "--algos", "dql", *TINY,
                                          "--out", out)
        result["transfer"] = _main("study", "transfer", "--dataset", data_file, "--algos", "dql,idql", *TINY,
                                   *VARIANTS, "--out", out)
    return result


@pytest.fixture(scope="module")
def transfer_study(studies) -> Path:
    code, _, err = studies["transfer"]
    assert code == 0, err
    return studies["out"]


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
    code, out, err = run_cli("report", runs / "dql-joint", runs / "idql-joint", runs / "dql-guidance-first",
                             "--out", tmp_path / "rep")
    assert code == 0, err
    assert (tmp_path / "rep" / "report.md").exists() and str(tmp_path / "rep" / "report.md") in out
    # dql joint (dql-critic) and guidance-first (iql) are paired by algorithm and dataset
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "Guidance-first relative to joint" in report and "dql-critic / iql" in report
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
    cfg = RunConfig.from_dict({"dataset": str(other), "guidance_kind": "iql", "steps": 5, "chunk": 5,
                               "batch_size": 16, "seeds": 2, "guidance": {"hidden": 8, "depth": 1}})
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


def test_necessity_study(studies):
    out_dir = studies["out"]
    code, out, err = studies["necessity"]
    assert code == 0, err
    assert out.strip().endswith(f"report: {out_dir / 'report' / 'report.md'}")
    for mode in ("joint", "guidance-first"):
        s = json.loads((out_dir / "runs" / f"dql-{mode}" / "summary.json").read_text())
        assert set(s["final"]) == {"guided", "unguided", "random-guidance"}
        rows = [json.loads(x) for x in (out_dir / "runs" / f"dql-{mode}" / "metrics.jsonl").read_text().splitlines()]
        evals = [r for r in rows if r["phase"] == "eval"]
        assert sorted({r["step"] for r in evals}) == [5, 10]
        assert all(r["eval_s"] >= r["sim_s"] >= 0 and r["policy_s"] >= 0 for r in evals)
        assert all(len(r["returns"]) == 2 for r in evals)
    assert (out_dir / "runs" / "dql-guidance-first" / "guidance-run" / "guidance").is_dir()
    meta = json.loads((out_dir / "runs" / "dql-guidance-first" / "policy" / "meta.json").read_text())
    path = meta["trained_with_guidance"]["path"]
    assert Path(path).is_absolute() and Path(path) == (out_dir / "runs" / "dql-guidance-first" / "guidance-run"
                                                       / "guidance").resolve()
    config = json.loads((out_dir / "runs" / "dql-joint" / "config.json").read_text())
    assert config["eval"]["max_steps"] == 3
    # running it again resumed: finished runs were not retrained
    code, out, err = studies["necessity_again"]
    assert code == 0, err
    assert "step 5 guided" not in out  # resumed at the end: nothing retrained or re-evaluated
    # the transfer study resumed the shared dql-joint run too
    assert "step 5 guided" not in studies["transfer"][1].split("training idql-joint")[0]


def test_study_options_and_errors(tmp_path, data_file, run_cli):
    from mdpt.experiments.studies import make_config

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
