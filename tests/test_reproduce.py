"""`mdpt reproduce` at a toy budget: the whole protocol, the swaps, the report, resuming, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import d4rl_arrays, write_raw_hdf5

from mdpt.errors import MDPTError

DATASET = "bullet-hopper-medium-v0"
TINY = ["--set", "policy.hidden=8", "--set", "policy.depth=1", "--set", "guidance.hidden=8", "--set",
        "guidance.depth=1", "--set", "batch_size=8", "--set", "chunk=2"]
ARGS = ["--datasets", DATASET, "--algos", "dql,idql", "--seeds", "2", "--steps", "4", "--eval-every", "2",
        "--episodes", "2", "--curve-episodes", "1", "--eval-max-steps", "3", "--curve-candidates", "3",
        "--ensemble-k", "2", "--transfer-points", "2", "--no-progress", *TINY]


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory):
    from mdpt.cli.main import main

    root = tmp_path_factory.mktemp("reproduce")
    data = root / "data"
    attrs = {"env_id": "HopperBulletEnv-v0", "ref_min_score": 0.0, "ref_max_score": 10.0}
    write_raw_hdf5(data / f"{DATASET}.hdf5", d4rl_arrays(lengths=(20, 15, 25), seed=3), attrs)
    mp = pytest.MonkeyPatch()
    mp.setenv("MDPT_DATA_DIR", str(data))
    mp.setenv("MDPT_OFFLINE", "1")
    out = root / "out"
    first = main(["reproduce", *ARGS, "--out", str(out)])
    yield out, first, main
    mp.undo()


def test_the_protocol_trains_every_run_and_writes_the_report(reproduction):
    out, code, _ = reproduction
    assert code == 0
    runs = sorted(p.name for p in (out / "runs" / DATASET).iterdir())
    assert runs == ["awr-baseline", "bc-baseline", "critic-authors", "dql-bc", "dql-gfauthors", "dql-gfcritic",
                    "dql-gfdt", "dql-joint", "dql-random", "idql-gfdt", "idql-joint", "iql-a", "iql-b"]
    awr = json.loads((out / "runs" / DATASET / "awr-baseline" / "config.json").read_text())
    assert awr["algo"] == "awr" and awr["stage1"]["guidance_path"].endswith("iql-a/guidance")
    joint = [json.loads(x) for x in (out / "runs" / DATASET / "dql-joint" / "metrics.jsonl").read_text().splitlines()]
    variants = {r["variant"] for r in joint if r["phase"] == "eval"}
    assert variants == {"guided", "unguided", "random-guidance"}
    assert {r["candidates"] for r in joint if r["phase"] == "eval" and r["variant"] == "guided"} == {3, 50}
    gf = json.loads((out / "runs" / DATASET / "dql-gfdt" / "config.json").read_text())
    assert gf["stage1"]["guidance_path"].endswith("iql-a/guidance")
    bc = json.loads((out / "runs" / DATASET / "dql-bc" / "config.json").read_text())
    assert bc["policy"]["eta"] == 0.0
    arm = {role: json.loads((out / "runs" / DATASET / f"dql-{role}" / "config.json").read_text())["stage1"]
           for role in ("gfcritic", "gfauthors")}
    assert arm["gfcritic"]["guidance_path"].endswith("dql-joint/guidance")
    assert arm["gfauthors"]["guidance_path"].endswith("critic-authors/guidance")
    cells = json.loads((out / "transfer" / f"{DATASET}.json").read_text())["cells"]
    selected = {k: c for k, c in cells.items() if k.endswith("|joint-selection")}
    assert sorted(selected) == ["dql-bc@4|joint-selection", "dql-gfauthors@4|joint-selection",
                                "dql-gfdt@4|joint-selection"]
    assert all(c["guidance"][0].endswith("dql-joint/snapshots/step-000000004/guidance") for c in selected.values())
    report = (out / "report" / "report.md").read_text()
    assert "## Findings" in report and "1. **Guidance necessity" in report and "2. **GFDT" in report
    assert "3. **" in report and "the paper reports -86%" in report
    assert "### GFDT vs joint (the paper's table)" in report and "### Guidance necessity" in report
    assert f"- command: `mdpt reproduce --datasets {DATASET} --algos dql,idql" in report
    assert f"--out {out}`" in report and "- versions (as each run recorded them): backend cpu" in report
    assert "- wall time: training and evaluation of 13 runs" in report and "untimed" not in report
    assert "Against the baselines (each diffusion policy minus BC or IQL's AWR policy" in report
    assert "With the confounds taken apart" in report and "Eta 0 selected both ways" in report
    assert "### Guidance-first with the confounds taken apart (arm minus joint, last step)" in report
    assert "| comparison | difference [95% CI] | p (Holm, 5) | effect (sd) | seeds | verdict |" in report
    findings = json.loads((out / "report" / "findings.json").read_text())
    arms = findings["verdicts"]["arms"]
    assert arms["comparisons"] == 5 and any("joint's own critic frozen, own selection" in k for k in arms["verdicts"])
    assert findings["verdicts"]["arms_eta0"]["comparisons"] == 2
    assert findings["datasets"][DATASET]["gfdt"][0]["algo"] == "dql"
    assert findings["datasets"][DATASET]["gfdt"][0]["plain_step"] == 4
    assert findings["datasets"][DATASET]["gfdt"][0]["stage1"]["run"] == "iql-a"
    assert "shared: dql: iql-a, 4 steps at" in report and "with the stage-1 guidance's training added" in report
    assert "| GFDT - joint, plain sampling |" in report
    assert findings["verdicts"]["spread_cross"]["measures"]["cells"] > 0 and findings["verdicts"]["spread_ensemble"]
    assert "The seed IQR own -> with the other algorithm's guidance: **" in report
    values = {row["run"]: row for row in findings["datasets"][DATASET]["values"]}
    assert {"dql-joint", "iql-a", "iql-b"} <= set(values) and "dql-gfdt" not in values
    assert "### Critic values" in report and ("Values: all" in report or "**Warning, values:**" in report)
    data = json.loads((out / "data" / f"{DATASET}.json").read_text())
    assert data["episodes"] == 3 and data["normalized"]["reference"] == "d4rl"
    assert f"Data: 3 episodes, 60 transitions; the data's own episodes score {data['normalized']['mean']:.1f}" in report
    assert "Every learning curve (run x inference variant) ends between" in report


@pytest.mark.parametrize("width, caveat", [(2.0, True), (30.0, False)])
def test_a_dataset_whose_curves_all_end_together_gets_a_caveat(width, caveat):
    from mdpt.reproduction.findings import findings

    spread = {"range": width, "low": ("dql-bc unguided", 60.0), "high": ("dql-joint guided", 60.0 + width)}
    result = {"datasets": {DATASET: {"gfdt": [], "necessity": {}, "transfer": {"cross": []}, "methods_spread": spread,
                                     "data": {"mean": 64.1}}},
              "spread_cells": 0}
    text = "\n".join(findings(result))
    assert ("this dataset barely separates the methods" in text) is caveat
    assert ("beside the data's own episodes at 64.1" in text) is caveat


def test_the_gfdt_finding_states_its_test_corrected_p_effect_and_seeds():
    """Finding 2 reads its calibrated family: the word, the test, the Holm-adjusted p, the effect size and the
    seeds of every setting; the plain-sampling family beside it; the cost as before."""
    from mdpt.evaluation import rules
    from mdpt.reproduction.analysis import _with_stage1
    from mdpt.reproduction.findings import findings

    rng = np.random.default_rng(0)
    row = {"algo": "dql", "ms_per_step": (150.0, 50.0), "peak_mib": (80.0, 50.0), "final_step": 15000,
           "stage1": {"run": "iql-a", "steps": 30000, "ms_per_step": 25.0}}
    row["time_with_stage1"] = _with_stage1(row)  # as gfdt_table adds it
    label = f"{DATASET} dql at step 15000"
    verdicts = {"gfdt": rules.gfdt_rule({label: (rng.normal(30, 3, 9), rng.normal(10, 3, 9))}).to_json(),
                "gfdt_plain": rules.gfdt_rule({label: ([10.0, 11, 12], [9.0, 10, 11])}).to_json()}
    result = {"datasets": {DATASET: {"gfdt": [row], "necessity": {}, "transfer": {"cross": []}}},
              "spread_cells": 0, "verdicts": verdicts}
    text = findings(result)[1]
    assert "time ratio GF/joint 0.33..0.33" in text
    assert "guidance's training added to guidance-first whole, the time ratio is 0.67..0.67" in text  # (50+50)/150
    assert "**GFDT gives a better final score than joint training** (guidance-first minus joint" in text
    assert ": **supported** (1 comparison, two-sample permutation test (exact), Welch t interval, Holm-adjusted" in text
    assert f"{label}: higher: +" in text and "(Holm, 1 comparison), effect +" in text and "n = 9 v 9" in text
    assert "(plain sampling from both, no selection): **not enough seeds (n = 3; needs >= 4)**" in text


def test_a_critic_past_its_bound_is_flagged_in_the_findings():
    from mdpt.reproduction.findings import findings

    def result(q):
        row = {"run": "dql-joint", "max_abs_q": q, "bound": 100.0, "share": q / 100.0, "within": q <= 100.0,
               "first_exceeded_step": None if q <= 100.0 else 5000}
        return {"datasets": {DATASET: {"gfdt": [], "necessity": {}, "transfer": {"cross": []}, "values": [row]}},
                "spread_cells": 0}

    assert "the largest |Q| is 40% of its bound" in "\n".join(findings(result(40.0)))
    flagged = "\n".join(findings(result(250.0)))
    assert "**Warning, values:** 1 of 1 critics left their bound" in flagged and "from step 5000" in flagged


def test_guidance_swaps_at_matched_checkpoints(reproduction):
    out, _, _ = reproduction
    cells = json.loads((out / "transfer" / f"{DATASET}.json").read_text())["cells"]
    kinds = {key.split("|")[1] for key in cells}
    assert {"seed-swapped", "independent-iql", "idql-joint-guidance", "dql-joint-guidance",
            "ensemble-2-mean", "ensemble-2-min"} <= kinds
    assert {int(key.split("@")[1].split("|")[0]) for key in cells} == {2, 4}  # step-matched checkpoints
    cross = cells["idql-joint@4|dql-joint-guidance"]
    assert cross["selector"]["beta"] == 100.0 and cross["selector"]["candidates"] == 256  # its own scale
    assert cells["dql-joint@4|idql-joint-guidance"]["selector"]["beta"] == 0.5


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _untimed(rows: list[dict]) -> list[dict]:
    """Metrics rows without their timings and provenance: what training and evaluation computed."""
    return [{k: v for k, v in r.items() if not k.endswith("_s") and k != "derived_from"} for r in rows]


def _run_config(run_dir: Path):
    from mdpt.experiments.config import RunConfig

    saved = json.loads((run_dir / "config.json").read_text())
    return RunConfig.from_dict({k: v for k, v in saved.items() if k not in ("versions", "preset")})


def test_idql_guidance_first_is_derived_from_its_joint_run_and_equals_training_it(reproduction, tmp_path):
    """The derived run trains its first chunk only, yet every score and every saved policy equals what
    training it in full gives."""
    import jax

    from mdpt.artifacts import load_policy
    from mdpt.experiments.runner import Run

    out, _, _ = reproduction
    derived = out / "runs" / DATASET / "idql-gfdt"
    summary = json.loads((derived / "summary.json").read_text())
    assert summary["derived_from"]["run"].endswith("idql-joint") and summary["derived_from"]["trained_steps"] == 2
    assert summary["seconds_per_step"] > 0 and summary["peak_memory_bytes"] > 0  # its own program's cost
    assert [r["step"] for r in _rows(derived) if r.get("derived_from")] == [4]
    assert "IDQL: the guidance-first policy is the joint run's policy" in (out / "report" / "report.md").read_text()

    trained = tmp_path / "trained"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MDPT_DATA_DIR", str(out.parent / "data"))
        Run(trained, _run_config(derived), progress=False).execute()
    assert _untimed(_rows(derived)) == _untimed(_rows(trained))
    for sub in ("policy", "best/policy", "snapshots/step-000000002/policy", "snapshots/step-000000004/policy"):
        a, b = load_policy(derived / sub).params, load_policy(trained / sub).params
        assert all(np.array_equal(np.asarray(x), np.asarray(y))
                   for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)), sub


def test_a_run_that_does_not_match_its_joint_run_is_trained_instead(reproduction, tmp_path, capsys):
    from mdpt.experiments.derived import DerivedRun

    out, _, _ = reproduction
    runs = out / "runs" / DATASET
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MDPT_DATA_DIR", str(out.parent / "data"))
        # dql-joint's policy is another policy: its first chunk's losses differ
        DerivedRun(tmp_path / "gf", _run_config(runs / "idql-gfdt"), runs / "dql-joint", progress=False,
                   log=print).execute()
    assert "not derived from" in capsys.readouterr().out
    assert "derived_from" not in json.loads((tmp_path / "gf" / "summary.json").read_text())
    assert not any(r.get("derived_from") for r in _rows(tmp_path / "gf"))
    assert (tmp_path / "gf" / "checkpoints").exists()


def test_only_a_policy_that_ignores_its_guidance_is_derived_and_the_estimate_counts_one_chunk():
    from mdpt.reproduction.estimate import estimate_seconds
    from mdpt.reproduction.plan import plan
    from mdpt.reproduction.protocol import Protocol

    p = Protocol(datasets=(DATASET,), steps=10_000, studies=("gfdt-vs-joint",), base={"chunk": 500})
    items = {it.name: it for it in plan(p, Path("runs"))}
    assert {n: it.derive_from for n, it in items.items() if it.derive_from} == {"idql-gfdt": "idql-joint"}
    assert "idql-joint" in items["idql-gfdt"].after and items["idql-gfdt"].trained_steps == 500
    every = {it.name: it for it in plan(Protocol(datasets=(DATASET,), steps=10_000, derive=False), Path("runs"))}
    assert not any(it.derive_from for it in every.values()) and every["idql-gfdt"].trained_steps == 10_000
    cost = lambda items: estimate_seconds([items["idql-gfdt"]], p, "gpu")  # noqa: E731
    assert cost(items) == pytest.approx(cost(every) / 20)


def test_a_second_call_resumes_without_redoing_anything(reproduction, capsys):
    out, _, main = reproduction
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("summary.json")}
    cells = (out / "transfer" / f"{DATASET}.json").read_text()
    assert main(["reproduce", *ARGS, "--out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("summary.json")} == before
    assert json.loads((out / "transfer" / f"{DATASET}.json").read_text()) == json.loads(cells)
    assert "13 runs planned, 13 done" in capsys.readouterr().out
    assert main(["reproduce", "--report-only", "--out", str(out)]) == 0


def test_runs_written_before_a_preset_default_moved_still_continue_and_a_changed_setting_does_not(
        reproduction, tmp_path, capsys):
    import shutil

    out, _, main = reproduction
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    stage1 = copy / "runs" / DATASET / "iql-a" / "config.json"
    joint = copy / "runs" / DATASET / "dql-joint" / "config.json"
    older = json.loads(stage1.read_text())  # as an older MDPT wrote it: a setting it did not have, a preset value
    del older["policy"]["time_dim"]  # it held in the policy settings of a run that trains no policy
    older["policy"]["net"] = "lnresnet"
    stage1.write_text(json.dumps(older))
    joint_cfg = json.loads(joint.read_text())
    del joint_cfg["policy"]["time_dim"]  # the default (16) it then took
    joint.write_text(json.dumps(joint_cfg))
    capsys.readouterr()
    assert main(["reproduce", *ARGS, "--out", str(copy)]) == 0
    assert "13 runs planned, 13 done" in capsys.readouterr().out
    older["guidance"]["expectile"] = 0.9  # a setting that changes what was trained
    stage1.write_text(json.dumps(older))
    assert main(["reproduce", *ARGS, "--out", str(copy)]) == 2
    assert "iql-a: made with other options" in capsys.readouterr().err


def test_a_plan_over_budget_is_refused_up_front(tmp_path, reproduction):
    from mdpt.reproduction.execute import Reproduction
    from mdpt.reproduction.protocol import Protocol

    big = Reproduction(Protocol(datasets=(DATASET,), steps=200_000, seeds=5), tmp_path / "big")
    with pytest.raises(MDPTError, match="more than --budget-hours 1"):
        big.check_budget(1.0, "cpu")
    assert not (tmp_path / "big").exists()
    with pytest.raises(MDPTError, match="--ensemble-k"):
        Protocol(datasets=(DATASET,), seeds=2, ensemble_k=3).validate()


def test_swaps_at_one_candidate_count_are_compared_with_the_own_guidance_at_that_count(reproduction, tmp_path):
    import shutil

    from mdpt.reproduction.analysis import analyse, load

    out, _, main = reproduction
    shutil.copytree(out, tmp_path / "out")
    path = tmp_path / "out" / "transfer" / f"{DATASET}.json"
    assert main(["reproduce", *ARGS, "--swap-candidates", "2", "--out", str(tmp_path / "out")]) == 0
    cells = json.loads(path.read_text())["cells"]
    own = {key for key in cells if key.endswith("|own")}
    arms = {f"dql-{role}@4|own" for role in ("gfcritic", "gfauthors", "bc")}  # beside their joint-selection cells
    assert own == {f"{algo}-{mode}@{t}|own" for algo in ("dql", "idql") for mode in ("joint", "gfdt") for t in (2, 4)} | arms
    assert cells["dql-gfcritic@4|own"]["guidance"][0].endswith("dql-joint/guidance")
    assert cells["dql-bc@4|own"]["guidance"][0].endswith("iql-a/guidance")
    assert {c["selector"]["candidates"] for c in cells.values()} == {2}  # every cell re-evaluated at 2
    assert cells["dql-gfdt@4|own"]["guidance"][0].endswith("iql-a/guidance")
    rows = analyse(load(tmp_path / "out"))["datasets"][DATASET]["transfer"]["swaps"]
    row = next(r for r in rows if r["policy"] == "dql-joint" and r["step"] == 4)
    assert row["own"][0] == pytest.approx(np.mean(cells["dql-joint@4|own"]["scores"]))
    report = (tmp_path / "out" / "report" / "report.md").read_text()
    assert "at the swaps' candidate count and episode seeds" in report and "--swap-candidates 2" in report


def test_report_only_records_the_data_line_when_the_data_is_found(reproduction, tmp_path, monkeypatch, capsys):
    import shutil

    out, _, main = reproduction
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    (copy / "data" / f"{DATASET}.json").unlink()  # a reproduction made before the data was recorded
    assert main(["reproduce", "--report-only", "--out", str(copy)]) == 0
    assert (copy / "data" / f"{DATASET}.json").exists() and "Data: 3 episodes" in (copy / "report" / "report.md").read_text()
    (copy / "data" / f"{DATASET}.json").unlink()
    monkeypatch.setenv("MDPT_DATA_DIR", str(tmp_path / "nowhere"))
    assert main(["reproduce", "--report-only", "--out", str(copy)]) == 0
    assert f"note: no data line for {DATASET}" in capsys.readouterr().out
    assert "Data: " not in (copy / "report" / "report.md").read_text()


def test_the_estimate_counts_each_evaluation_at_its_candidate_count_and_the_swaps():
    from mdpt.reproduction.estimate import estimate_seconds, evaluation_seconds
    from mdpt.reproduction.execute import Reproduction
    from mdpt.reproduction.plan import plan, planned_swaps
    from mdpt.reproduction.protocol import Protocol

    p = Protocol(datasets=(DATASET,), steps=15_000, eval_every=5_000, curve_candidates=32)
    runs = {it.name: it for it in plan(p, Path("runs"))}
    # measured on hopper-medium (results/reproduce-cpu): 264 s and 3628 s of evaluation
    assert 200 < evaluation_seconds(runs["dql-joint"], p) < 400
    assert 2900 < evaluation_seconds(runs["idql-joint"], p) < 4500  # 256 final candidates of a wider network
    swaps = planned_swaps(p)
    assert len(swaps) == 23 and estimate_seconds([], p, "cpu", swaps) > 2 * 3600  # IDQL's final swaps at 256
    assert len([sw for sw in swaps if sw.kind == "joint-selection"]) == 3  # dql's gfdt, gfauthors, bc
    cheap = Protocol(datasets=(DATASET,), steps=15_000, eval_every=5_000, curve_candidates=32, swap_candidates=32)
    assert estimate_seconds([], cheap, "cpu", planned_swaps(cheap)) < estimate_seconds([], p, "cpu", swaps) / 3
    assert len(Reproduction(cheap, "nowhere").remaining_swaps()) == 34  # and the 8 + 3 own cells, each once


def test_killed_while_swapping_resumes_the_missing_cells_only(reproduction):
    out, _, main = reproduction
    path = out / "transfer" / f"{DATASET}.json"
    full = json.loads(path.read_text())["cells"]
    kept = dict(list(full.items())[: len(full) // 2])  # what a kill halfway through the swaps leaves
    path.write_text(json.dumps({"dataset": DATASET, "cells": kept}))
    assert main(["reproduce", *ARGS, "--out", str(out)]) == 0
    again = json.loads(path.read_text())["cells"]
    assert again.keys() == full.keys()
    assert all(again[k]["scores"] == full[k]["scores"] for k in full)  # deterministic: the same cells


def test_a_crash_while_writing_the_report_keeps_the_previous_one(reproduction, monkeypatch):
    from mdpt.reproduction import render as findings

    out, _, _ = reproduction
    before = (out / "report" / "report.md").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("disk went away while writing figures")

    monkeypatch.setattr(findings, "render", broken)
    with pytest.raises(RuntimeError):
        findings.write_report(out)
    assert (out / "report" / "report.md").read_text() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".report.")]  # no half-written report left


def test_a_second_process_on_the_same_directory_is_refused(reproduction):
    from mdpt.experiments.rundir import RunLock
    from mdpt.reproduction.execute import Reproduction
    from mdpt.reproduction.protocol import Protocol

    out, _, _ = reproduction
    with RunLock(out, "reproduction directory"):  # the first process holds it
        with pytest.raises(MDPTError, match="another mdpt process is using this reproduction directory"):
            Reproduction(Protocol(datasets=(DATASET,), seeds=2, ensemble_k=2), out).execute()


def test_an_unwritable_results_directory_is_one_line(tmp_path, reproduction, capsys):
    out, _, main = reproduction
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")  # unwritable for every user, root included
    code = main(["reproduce", *ARGS, "--out", str(blocker / "out")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "a-file" in err


def test_necessity_tests_the_change_of_a_gap_and_names_curves_it_cannot_test():
    """Finding 1's stage part tests gap(last) - gap(first) paired by seed (a change of significance is not a
    change); curves whose two points were evaluated differently are named, not tested."""
    from mdpt.evaluation import rules
    from mdpt.reproduction.findings import necessity_finding

    rng = np.random.default_rng(1)
    moved = (rng.normal(-40, 5, 9), rng.normal(0, 5, 9))
    still = (rng.normal(3, 5, 9), rng.normal(3, 5, 9))
    stage = rules.stage_rule({"dql plain sampling": moved, "idql plain sampling": still}).to_json()
    algorithm = rules.algorithm_rule({"plain sampling, step 5000: dql - idql": (moved[0], still[0])}).to_json()
    result = {"datasets": {}, "verdicts": {"stage": stage, "algorithm": algorithm,
                                           "stage_mismatched": ["hopper dql, random guidance: step 5000 -> 15000"]}}
    text = necessity_finding(result)
    assert "Stage (the gap guided-joint minus control at the last evaluation minus at the first): **supported**" in text
    assert "dql plain sampling: higher: +" in text and "sign-flip permutation test" in text
    assert "Algorithm (two algorithms' gaps for one control and step): **supported**" in text
    assert "Left out of the stage test" in text and "hopper dql, random guidance: step 5000 -> 15000" in text
    null = rules.stage_rule({"a": still, "b": (rng.normal(3, 5, 9), rng.normal(3, 5, 9))}).to_json()
    assert "**not shown**" in necessity_finding({"datasets": {}, "verdicts": {"stage": null}})


def test_the_seed_spread_of_cross_algorithm_swaps_and_ensembles_is_tested_as_the_papers_measure():
    from mdpt.evaluation import rules
    from mdpt.reproduction.findings import other_spreads_sentence

    own = np.array([[10.0, 20, 30, 40, 50, 60], [15.0, 25, 35, 45, 55, 65]])
    cross = {"word": rules.spread_rule(own, own / 5).word, "measures": rules.seed_iqr_measures(own, own / 5)}
    text = other_spreads_sentence({"spread_cross": cross, "spread_ensemble": None})
    assert text.startswith(" The seed IQR own -> with the other algorithm's guidance: **")
    assert "-20.0 points per cell (median), -80% relative, over 2 cells" in text
    assert other_spreads_sentence({}) == ""


def test_a_report_of_a_reproduction_in_progress_names_the_runs_still_to_come(reproduction, tmp_path):
    import shutil

    out, _, main = reproduction
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    (copy / "runs" / DATASET / "dql-bc" / "summary.json").unlink()
    assert main(["reproduce", "--report-only", "--out", str(copy)]) == 0
    report = (copy / "report" / "report.md").read_text()
    assert "Not finished yet: dql-bc (the same command continues them)" in report
    from mdpt.reproduction.analysis import final_spread

    one = {"dql-joint": {"evals": {"guided": [(4, np.array([[1.0], [2.0]]), None)]}}}
    assert final_spread(one, methods_only=True) is None  # one finished method: nothing to compare, no caveat
    assert "Not finished yet" not in (out / "report" / "report.md").read_text()


def test_runs_of_one_name_train_as_one_program_per_environment_in_an_order_that_keeps_inputs_first(tmp_path):
    from mdpt.experiments.config import RunConfig
    from mdpt.reproduction.execute import training_batches
    from mdpt.reproduction.plan import plan
    from mdpt.reproduction.protocol import Protocol

    hopper = ("bullet-hopper-medium-v0", "bullet-hopper-expert-v0")
    p = Protocol(datasets=(*hopper, "bullet-halfcheetah-medium-v0"), steps=10, eval_every=5, studies=("gfdt-vs-joint",))
    items = plan(p, tmp_path)
    configs = {it.key: RunConfig.from_dict(it.settings) for it in items}
    batches = training_batches(items, configs, tmp_path, group=True)
    named = [(b[0].name, tuple(it.dataset for it in b)) for b in batches]
    assert named[:2] == [("iql-a", hopper), ("iql-a", ("bullet-halfcheetah-medium-v0",))]
    assert [("idql-gfdt", (ds,)) for ds in p.datasets] == [x for x in named if x[0] == "idql-gfdt"]  # derived: alone
    order = [b[0].name for b in batches]
    assert all(order.index(dep) < order.index(it.name) for it in items for dep in it.after)
    assert sorted(it.key for b in batches for it in b) == sorted(it.key for it in items)
    assert training_batches(items, configs, tmp_path, group=False) == [[it] for it in items]
    # a run that resumes from another step than its mates trains alone
    ckpt = tmp_path / "bullet-hopper-expert-v0" / "dql-joint" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / "checkpoint.json").write_text('{"step": 5}')
    joint = [tuple(it.dataset for it in b) for b in training_batches(items, configs, tmp_path, True)
             if b[0].name == "dql-joint"]
    assert sorted(joint) == [("bullet-halfcheetah-medium-v0",), ("bullet-hopper-expert-v0",),
                             ("bullet-hopper-medium-v0",)]


def test_train_only_then_the_same_command_with_the_simulator_evaluates_every_run(tiny_data_dir, tmp_path):
    from mdpt.experiments.rundir import run_status as run_state
    from mdpt.reproduction.execute import Reproduction
    from mdpt.reproduction.protocol import Protocol

    tiny = {"policy": {"hidden": 8, "depth": 1}, "guidance": {"hidden": 8, "depth": 1}, "batch_size": 8, "chunk": 2}
    p = Protocol(datasets=("bullet-hopper-medium-v0", "bullet-hopper-expert-v0"), algos=("dql",), seeds=2, steps=4,
                 eval_every=2, curve_episodes=1, final_episodes=1, eval_max_steps=3, curve_candidates=3,
                 studies=("gfdt-vs-joint",), ensemble_k=2, base=tiny)
    out, lines = tmp_path / "out", []
    Reproduction(p, out, log=lines.append).execute(train_only=True, group=True)
    states = {it.key: run_state(out / "runs" / it.key) for it in Reproduction(p, out).planned()}
    assert {k: v for k, v in states.items() if v != "trained"} == {f"{ds}/iql-a": "done" for ds in p.datasets}
    assert any("dql-joint on bullet-hopper-medium-v0, bullet-hopper-expert-v0 (one program)" in x for x in lines)
    assert "copy" in lines[-1] and "without --train-only" in lines[-1]
    assert "8 of 10 runs are trained but not evaluated yet" in (out / "report" / "report.md").read_text()
    moved = tmp_path / "elsewhere"  # copied to the machine with the simulator
    out.rename(moved)
    out = moved
    Reproduction(p, out, log=lines.append).execute()
    assert any("the stage-1 paths of 6 run(s) now point inside it" in x for x in lines)
    assert all(run_state(out / "runs" / key) == "done" for key in states)
    summary = json.loads((out / "runs" / "bullet-hopper-expert-v0" / "dql-gfdt" / "summary.json").read_text())
    assert summary["evaluated_later"] and summary["group"] == list(p.datasets)
    assert sorted(summary["final"]) == ["guided", "unguided"] and summary["final"]["guided"]["step"] == 4
    findings = json.loads((out / "report" / "findings.json").read_text())
    row = findings["datasets"]["bullet-hopper-expert-v0"]["gfdt"][0]
    assert row["programs"] == [2, 2] and None not in row["ms_per_step"]  # both grouped alike: compared
    report = (out / "report" / "report.md").read_text()
    assert "not evaluated yet" not in report and "their ms/step and peak memory are that program's" in report


def test_the_arms_study_plans_each_stage1_critic_once_and_only_for_algorithms_trained_on_their_critic():
    from mdpt.reproduction.plan import plan, planned_swaps
    from mdpt.reproduction.protocol import Protocol

    def names(**kw):
        return [it.name for it in plan(Protocol(datasets=(DATASET,), **kw), Path("runs"))]

    every = names()
    assert every.count("critic-authors") == 1 and {"dql-gfcritic", "dql-gfauthors"} <= set(every)
    assert not any(n.startswith("idql-gf") and n != "idql-gfdt" for n in every)  # IDQL's policy never reads it
    authors = names(stage1="authors")
    assert authors.count("critic-authors") == 1 and "dql-gfauthors" not in authors  # gfdt is that arm
    assert "critic-authors" not in names(studies=("gfdt-vs-joint", "transfer"))
    items = {it.name: it for it in plan(Protocol(datasets=(DATASET,)), Path("runs"))}
    assert items["dql-gfcritic"].after == ("dql-joint",) and items["dql-gfauthors"].after == ("critic-authors",)
    assert every.index("dql-joint") < every.index("dql-gfcritic")
    p = Protocol(datasets=(DATASET,), studies=("arms",))
    assert {sw.key for sw in planned_swaps(p)} == {"dql-gfdt@30000|joint-selection",
                                                    "dql-gfauthors@30000|joint-selection"}  # no eta-0 run planned
