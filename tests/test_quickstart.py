"""`mdpt quickstart --tiny`: the whole pipeline on tiny data, offline."""

from __future__ import annotations

import json


def test_quickstart_tiny(tiny_data_dir, tmp_path, run_cli):
    out = tmp_path / "qs"
    code, stdout, err = run_cli("quickstart", "--tiny", "--no-progress", "--out", out)
    assert code == 0, err
    assert f"from {tiny_data_dir}" in stdout
    for stage in ("stage 1/4", "stage 2/4", "stage 3/4", "stage 4/4"):
        assert stage in stdout
    assert stdout.strip().endswith(f"report: {out / 'report' / 'report.md'}")
    t = json.loads((out / "transfer" / "transfer.json").read_text())
    assert t["policies"] == ["dql-joint-s0", "dql-joint-s1", "dql-gfdt-s0", "dql-gfdt-s1"]
    assert t["guidances"] == ["dql-critic-s0", "dql-critic-s1", "iql-s0", "iql-s1"]
    assert ["dql-gfdt-s1", "iql-s1"] in t["diagonal"] and ["dql-joint-s0", "dql-critic-s0"] in t["diagonal"]
    assert {(r["policy"], r["guidance"]) for r in t["summary"]["cross_algorithm"]} == {
        ("dql-joint", "iql"), ("dql-gfdt", "dql-critic")}
    meta = json.loads((out / "runs" / "dql-guidance-first" / "policy" / "meta.json").read_text())
    assert meta["trained_with_guidance"]["kind"] == "iql"
    assert meta["trained_with_guidance"]["path"] == str((out / "runs" / "iql-guidance" / "guidance").resolve())
    rows = [json.loads(x) for x in (out / "runs" / "dql-joint" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["phase"] == "eval"]
    assert {r["variant"] for r in evals} == {"guided", "unguided"} and all("sim_s" in r for r in evals)
    assert json.loads((out / "runs" / "dql-joint" / "config.json").read_text())["eval"]["max_steps"] == 3
    report = (out / "report" / "report.md").read_text()
    assert "Guidance transfer" in report and "bullet-hopper-medium-v0" in report
    assert list((out / "report").glob("*.png"))


def test_quickstart_bad_budget(tiny_data_dir, tmp_path, run_cli):
    code, _, err = run_cli("quickstart", "--steps", "0", "--out", tmp_path / "qs")
    assert code == 2 and "--steps must be >= 1" in err
