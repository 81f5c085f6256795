import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from mdpt.errors import MDPTError
from mdpt.reports.report import write_report
from mdpt.reports.runs import load_run, load_transfer

HOPPER_MIN, HOPPER_MAX = 20.058972, 1441.8059623430963


def make_run(root: Path, name: str, *, mode: str = "joint", algo: str = "dql", dataset: str = "bullet-hopper-medium-v0",
             seeds: int = 4, episodes: int = 10, steps: int = 20000, every: int = 2000,
             variants=("guided", "unguided", "random-guidance"), level: float = 60.0, seed: int = 0,
             seconds_per_step: float | None = 0.012, peak_memory: int | None = 900 * 2**20,
             transfer: dict | None = None, summary_final: bool = True) -> Path:
    """A synthetic run directory in the runner's format."""
    rng = np.random.default_rng(seed)
    d = root / name
    d.mkdir(parents=True)
    config = {"algo": algo, "mode": mode, "dataset": dataset, "guidance_kind": "iql", "seeds": seeds, "steps": steps}
    (d / "config.json").write_text(json.dumps(config))
    lines, series = [], {}
    offsets = {"guided": 0.0, "unguided": -15.0, "random-guidance": -35.0}
    seed_bias = rng.normal(0, 4, size=(seeds, 1))
    for step in range(every, steps + 1, every):
        lines.append({"phase": "train", "step": step, "wall_s": step * 0.01,
                      "policy/bc_loss": list(rng.uniform(0.1, 1, seeds))})
        for v in variants:
            progress = level * (1 - np.exp(-step / (steps / 3)))
            scores = progress + offsets.get(v, -5.0) + seed_bias + rng.normal(0, 8, size=(seeds, episodes))
            returns = HOPPER_MIN + scores / 100 * (HOPPER_MAX - HOPPER_MIN)
            lines.append({"phase": "eval", "step": step, "variant": v, "returns": returns.tolist(),
                          "scores": scores.tolist(), "reference": "d4rl", "wall_s": step * 0.01 + 1,
                          "sim_s": 3.0, "policy_s": 1.0, "eval_s": 4.5})
            series.setdefault(v, []).append((step, scores))
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    summary = {"name": name, "algo": algo, "mode": mode, "dataset": dataset, "reference": "d4rl",
               "seconds_per_step": seconds_per_step, "peak_memory_bytes": peak_memory}
    if summary_final:
        summary["final"] = {v: {"step": s[-1][0], "scores": s[-1][1].tolist()} for v, s in series.items()}
        summary["best"] = {v: {"step": b[0], "scores": b[1].tolist()}
                           for v, s in series.items() for b in [max(s, key=lambda x: x[1].mean())]}
    (d / "summary.json").write_text(json.dumps(summary))
    if transfer is not None:
        (d / "transfer.json").write_text(json.dumps(transfer))
    return d


def make_transfer(policies=("dql-s0", "dql-s1", "dql-s2"), guidances=("iql-s0", "iql-s1", "iql-s2"),
                  seeds: int = 1, episodes: int = 8, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    scores = []
    for i, _ in enumerate(policies):
        row = []
        for j, _ in enumerate(guidances):
            spread = 20.0 if i == j else 5.0  # own guidance: wide spread, swapped: narrow
            row.append((55 + 3 * i + rng.normal(0, spread, size=(seeds, episodes))).tolist())
        scores.append(row)
    return {"dataset": "bullet-hopper-medium-v0", "reference": "d4rl", "policies": list(policies),
            "guidances": list(guidances), "scores": scores}


@pytest.fixture
def runs(tmp_path):
    t = make_transfer()
    return [
        make_run(tmp_path, "dql-joint", mode="joint", seed=1),
        make_run(tmp_path, "dql-gfdt", mode="guidance-first", level=70, seed=2, seconds_per_step=0.008,
                 peak_memory=560 * 2**20, transfer=t),
        make_run(tmp_path, "idql-cheetah", algo="idql", dataset="bullet-halfcheetah-medium-v0", seeds=1,
                 variants=("guided",), seed=3, peak_memory=None, summary_final=False),
    ]


def test_load_run_reads_all_files(runs):
    r = load_run(runs[0])
    assert r["name"] == "dql-joint" and r["config"]["algo"] == "dql"
    assert set(r["evals"]) == {"guided", "unguided", "random-guidance"}
    steps = [s for s, _, _ in r["evals"]["guided"]]
    assert steps == list(range(2000, 20001, 2000))
    assert r["evals"]["guided"][0][1].shape == (4, 10)
    assert len(r["train"]) == 10 and r["transfer"] is None
    assert load_run(runs[1])["transfer"]["own"].sum() == 3


def test_resumed_run_keeps_the_latest_row(tmp_path):
    d = make_run(tmp_path, "r", variants=("guided",), steps=4000)
    dup = {"phase": "eval", "step": 4000, "variant": "guided", "scores": [[1.0, 2.0]], "reference": "d4rl"}
    with open(d / "metrics.jsonl", "a") as f:
        f.write(json.dumps(dup) + "\n\n")
    series = load_run(d)["evals"]["guided"]
    assert [s for s, _, _ in series] == [2000, 4000]
    assert series[-1][1].tolist() == [[1.0, 2.0]]


def test_scores_derived_from_d4rl_returns(tmp_path):
    d = make_run(tmp_path, "r", variants=("guided",), steps=2000)
    row = {"phase": "eval", "step": 9999, "variant": "guided", "reference": "d4rl",
           "returns": [[HOPPER_MIN, HOPPER_MAX]]}
    with open(d / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    np.testing.assert_allclose(load_run(d)["evals"]["guided"][-1][1], [[0.0, 100.0]])


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda d: (d / "config.json").unlink(), "config.json: run config not found"),
        (lambda d: (d / "summary.json").unlink(), "has not finished"),
        (lambda d: (d / "metrics.jsonl").unlink(), "metrics file not found"),
        (lambda d: (d / "config.json").write_text('{"algo": "dql", '), "not valid JSON"),
        (lambda d: (d / "config.json").write_text('{"algo": "dql"}'), "missing key"),
        (lambda d: (d / "summary.json").write_text("[1, 2]"), "expected a JSON object"),
        (lambda d: (d / "metrics.jsonl").write_text('{"phase": "train", "step": 1}\n{"phase": "ev\n'
                                                    '{"phase": "train", "step": 2}\n'), r"metrics.jsonl:2: not valid"),
        (lambda d: (d / "metrics.jsonl").write_text('{"phase": "eval", "step": 1, "variant": "g", '
                                                    '"scores": [[1, 2], [3]]}\n'), "rectangular"),
        (lambda d: (d / "metrics.jsonl").write_text('{"phase": "eval", "step": "1", "variant": "g"}\n'),
         "integer step"),
        (lambda d: (d / "metrics.jsonl").write_bytes(b"\xff\xfe\x00"), "corrupt"),
        (lambda d: (d / "transfer.json").write_text('{"policies": ["a"], "guidances": ["b"], "scores": [[]]}'),
         "one cell per guidance"),
    ],
)
def test_missing_or_corrupt_files_are_one_line_errors(tmp_path, breakage, message):
    d = make_run(tmp_path, "r", variants=("guided",), steps=2000)
    breakage(d)
    with pytest.raises(MDPTError, match=message) as e:
        load_run(d)
    assert "\n" not in str(e.value)


def test_a_last_line_torn_by_a_kill_is_dropped_as_the_runner_drops_it(tmp_path):
    """`mdpt report` reads metrics.jsonl with the runner's reader: a run killed mid-write still reports."""
    d = make_run(tmp_path, "r", variants=("guided",), steps=2000)
    with open(d / "metrics.jsonl", "a") as f:
        f.write('{"phase": "eval", "step": 3000, "vari')
    assert [s for s, _, _ in load_run(d)["evals"]["guided"]][-1] == 2000


def test_the_train_wall_time_is_the_sum_of_the_training_rows(tmp_path):
    from mdpt.reports.markdown import hms
    from mdpt.reports.runs import train_wall_s

    d = make_run(tmp_path, "r", variants=("guided",), steps=2000, every=500)
    run = load_run(d)
    walls = [r["wall_s"] for r in run["train"]]
    assert len(walls) > 1 and train_wall_s(run) == pytest.approx(sum(walls))  # not the slowest chunk
    assert f"| {hms(sum(walls))} |" in write_report([d], tmp_path / "rep").read_text()


def test_missing_run_directory(tmp_path):
    with pytest.raises(MDPTError, match="run directory not found"):
        load_run(tmp_path / "nope")
    with pytest.raises(MDPTError, match="no run directories"):
        write_report([], tmp_path / "out")


def test_transfer_diagonal_pairs(tmp_path):
    t = make_transfer(policies=("p0", "p1"), guidances=("g0", "g1", "g2"))
    (tmp_path / "t.json").write_text(json.dumps(t))
    assert not load_transfer(tmp_path / "t.json")["own"].any()  # P != G and no pairs: no own cells
    t["diagonal"] = [["p0", "g2"], ["p1", "g0"]]
    (tmp_path / "t.json").write_text(json.dumps(t))
    own = load_transfer(tmp_path / "t.json")["own"]
    assert own.tolist() == [[False, False, True], [True, False, False]]
    t["diagonal"] = [["p0", "nope"]]
    (tmp_path / "t.json").write_text(json.dumps(t))
    with pytest.raises(MDPTError, match="diagonal"):
        load_transfer(tmp_path / "t.json")


def test_write_report_end_to_end(runs, tmp_path):
    out = tmp_path / "report"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. constrained layout collapsing on crowded figures
        path = write_report(runs, out, n_boot=200)
    assert path == out / "report.md"
    md = path.read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["cost.png", "learning_curves_bullet-halfcheetah-medium-v0.png",
                    "learning_curves_bullet-hopper-medium-v0.png", "scores_bullet-halfcheetah-medium-v0.png",
                    "scores_bullet-hopper-medium-v0.png", "transfer_dql-gfdt.png"]
    for name in pngs:
        assert f"]({name})" in md  # every figure is linked
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.mdpt-tmp-*"))  # atomic writes left no temp files
    # reference named, final and best labelled separately, tables present
    assert "`d4rl` reference for hopper: min 20.06, max 1441.81" in md
    assert "### Final scores (last iterate)" in md and "### Best-checkpoint scores" in md
    assert "| dql-joint | dql | joint | bullet-hopper-medium-v0 | iql | 12.00 | 900 MiB |" in md
    assert "| dql | bullet-hopper-medium-v0 | iql / iql | -33.3% | -37.8% |" in md  # gfdt vs joint
    assert "67%" in md  # 3.0 of 4.5 s of evaluation in the simulator
    assert "## Guidance transfer" in md and "Relative IQR change, swapped vs own guidance" in md
    # the halfcheetah run had no final/best in summary.json: derived and marked
    assert "| idql-cheetah | guided | 20000* | 1x10 |" in md


def test_report_numbers_match_stats(tmp_path):
    from mdpt.evaluation import stats

    d = make_run(tmp_path, "r", variants=("guided",), steps=4000)
    out = tmp_path / "out"
    md = write_report([d], out, n_boot=300, seed=5).read_text()
    final = np.asarray(json.loads((d / "summary.json").read_text())["final"]["guided"]["scores"])
    s = stats.summarize(final, n_boot=300, seed=5)
    row = (f"| r | guided | 4000 | 4x10 | {s['mean']:.1f} [{s['mean_ci_low']:.1f}, {s['mean_ci_high']:.1f}] "
           f"| {s['median']:.1f} | {s['iqm']:.1f} [{s['iqm_ci_low']:.1f}, {s['iqm_ci_high']:.1f}] | {s['iqr']:.1f} |")
    assert row in md
    # deterministic: the same inputs give byte-identical output
    again = write_report([d], tmp_path / "out2", n_boot=300, seed=5)
    assert again.read_text() == md
    assert (tmp_path / "out2" / "scores_bullet-hopper-medium-v0.png").read_bytes() == \
        (out / "scores_bullet-hopper-medium-v0.png").read_bytes()


def test_transfer_table_iqr_change(tmp_path):
    from mdpt.evaluation import stats

    t = make_transfer()
    d = make_run(tmp_path, "t", variants=("guided",), steps=2000, transfer=t)
    md = write_report([d], tmp_path / "out", n_boot=100).read_text()
    cells = [np.asarray(t["scores"][i][j]) for i in range(3) for j in range(3)]
    own = np.concatenate([cells[k].ravel() for k in (0, 4, 8)])
    other = np.concatenate([cells[k].ravel() for k in range(9) if k not in (0, 4, 8)])
    change = stats.relative_iqr_change(own, other)
    assert change < 0
    assert f"all scores {100 * change:+.1f}%" in md
    assert f"**{cells[0].mean():.1f} ({stats.iqm(cells[0]):.1f})**" in md  # own cell in bold


def test_duplicate_names_are_disambiguated(tmp_path):
    a = make_run(tmp_path / "a", "same", variants=("guided",), steps=2000)
    b = make_run(tmp_path / "b", "same", variants=("guided",), steps=2000, seed=4)
    md = write_report([a, b], tmp_path / "out", n_boot=50).read_text()
    assert "| same (2) |" in md


def test_crowded_figures_do_not_warn(tmp_path):
    """Many long-named settings and a large transfer matrix still lay out (no collapsed axes)."""
    dirs = [make_run(tmp_path, f"{algo}-{mode}-a-rather-long-run-name", algo=algo, mode=mode, steps=4000,
                     variants=("guided", "unguided"), seed=i)
            for i, (algo, mode) in enumerate((a, m) for a in ("dql", "idql", "edp", "cfg")
                                             for m in ("joint", "guidance-first"))]
    names = [f"policy-seed{k}-long" for k in range(6)]
    dirs.append(make_run(tmp_path, "transfer", variants=("guided",), steps=2000,
                         transfer=make_transfer(policies=names, guidances=[f"iql-critic-seed{k}" for k in range(6)])))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_report(dirs, tmp_path / "out", n_boot=50)
    assert (tmp_path / "out" / "transfer_transfer.png").exists()


def test_constant_transfer_and_single_cell(tmp_path):
    t = {"policies": ["p"], "guidances": ["g"], "scores": [[[[50.0, 50.0]]]], "reference": "d4rl"}
    d = make_run(tmp_path, "t", variants=("guided",), steps=2000, transfer=t)
    md = write_report([d], tmp_path / "out", n_boot=50).read_text()
    assert "**50.0 (50.0)**" in md and "Relative IQR change" not in md  # no off-diagonal cells
