"""Markdown + PNG report over finished run directories (``mdpt report``).

``write_report(run_dirs, out_dir)`` writes ``out_dir/report.md`` and the PNG figures it links;
every file is written atomically (temp file + rename). Nothing is timestamped, so the same
runs give the same report. The run directory format is in `reports/runs.py`.

Statistics (``mdpt.evaluation.stats``): point estimates pool all seeds x episodes; CIs are
percentile bootstraps that resample training seeds (episodes when a setting has one seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mdpt.data.registry import reference_bounds
from mdpt.errors import MDPTError
from mdpt.evaluation import stats
from mdpt.io import write_bytes_atomic
from mdpt.reports.figures import fig_boxes, fig_cost, fig_learning_curves, fig_transfer
from mdpt.reports.markdown import fmt, hms, mib, pct, slug, steps_k, table
from mdpt.reports.runs import (
    VARIANT_STYLES,
    cost_key,
    env_of,
    final_best,
    guidance_kind,
    load_run,
    train_wall_s,
)


def _reference_note(runs: list[dict]) -> list[str]:
    lines = []
    seen = set()
    for run in runs:
        ref = str(run["summary"].get("reference", "d4rl"))
        dataset = run["config"]["dataset"]
        env = env_of(dataset)
        bounds = run["summary"].get("reference_bounds")
        key = (ref, env.name if env else dataset, tuple(bounds) if bounds else None)
        if key in seen:
            continue
        seen.add(key)
        if bounds:
            lo, hi = bounds
        elif ref == "d4rl" and env is not None:
            lo, hi = reference_bounds(env, "d4rl")
        else:
            lo = hi = None
        where = {"d4rl": "D4RL `infos.py` constants (min = random policy, max = expert)",
                 "raw": "no reference: the scores are raw episode returns"}.get(
            ref, "the dataset's own ref_min_score/ref_max_score (a made file: min = mean return of uniform random "
                 "actions, max = mean episode return of its expert data; a Minari dataset: its metadata)")
        span = f": min {lo:.2f}, max {hi:.2f}" if lo is not None else ""
        lines.append(f"- `{ref}` reference for {key[1]}{span}, from {where}.")
    return lines


def _score_row(name: str, variant: str, step, scores: np.ndarray, derived: bool, opts: dict) -> list:
    s = stats.summarize(scores, **opts)
    mark = "*" if derived else ""
    return [name, variant, f"{step}{mark}" if step is not None else "n/a",
            f"{s['n_seeds']}x{s['n_episodes']}" if s["n_episodes"] else str(s["n"]),
            f"{fmt(s['mean'])} [{fmt(s['mean_ci_low'])}, {fmt(s['mean_ci_high'])}]", fmt(s["median"]),
            f"{fmt(s['iqm'])} [{fmt(s['iqm_ci_low'])}, {fmt(s['iqm_ci_high'])}]", fmt(s["iqr"])]


SCORE_HEADER = ("run", "variant", "step", "seeds x episodes", "mean [CI]", "median", "IQM [CI]", "IQR")


def _unique_names(runs: list[dict]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        base = run["name"]
        if base in seen:
            seen[base] += 1
            run["name"] = f"{base} ({seen[base]})"
        else:
            seen[base] = 1


def _sim_share(run: dict) -> str:
    sim = tot = 0.0
    for series in run["evals"].values():
        for _, _, row in series:
            if isinstance(row.get("sim_s"), int | float) and isinstance(row.get("eval_s"), int | float):
                sim += row["sim_s"]
                tot += row["eval_s"]
    return f"{100 * sim / tot:.0f}%" if tot > 0 else "n/a"


def _cost_section(runs: list[dict]) -> list[str]:
    rows = []
    for r in sorted(runs, key=cost_key):
        s, c = r["summary"], r["config"]
        sps = s.get("seconds_per_step")
        rows.append([r["name"], c["algo"], c["mode"], c["dataset"], guidance_kind(c) or "n/a",
                     "n/a" if sps is None else f"{1e3 * float(sps):.2f}", mib(s.get("peak_memory_bytes")),
                     hms(train_wall_s(r)), _sim_share(r)])
    lines = table(("run", "algo", "mode", "dataset", "guidance", "ms / step", "peak memory",
                    "train wall time", "eval time in simulator"), rows)
    # joint vs guidance-first pairs with the same algo and dataset; their guidance kinds may differ
    # (DQL joint trains its dql-critic, DQL guidance-first uses an iql module), so both are named
    groups: dict[tuple, dict[str, dict]] = {}
    for r in runs:
        c = r["config"]
        groups.setdefault((c["algo"], c["dataset"]), {}).setdefault(c["mode"], r)
    pairs = []
    for (algo, dataset), by_mode in sorted(groups.items()):
        if "joint" in by_mode and "guidance-first" in by_mode:
            j, g = by_mode["joint"]["summary"], by_mode["guidance-first"]["summary"]
            kinds = " / ".join(str(guidance_kind(by_mode[m]["config"]) or "n/a")
                               for m in ("joint", "guidance-first"))
            pairs.append([algo, dataset, kinds,
                          pct(_rel(j.get("seconds_per_step"), g.get("seconds_per_step"))),
                          pct(_rel(j.get("peak_memory_bytes"), g.get("peak_memory_bytes"))),
                          pct(_rel(train_wall_s(by_mode["joint"]), train_wall_s(by_mode["guidance-first"])))])
    if pairs:
        lines += ["", "Guidance-first relative to joint training (negative = cheaper):", ""]
        lines += table(("algo", "dataset", "guidance (joint / guidance-first)", "time / step", "peak memory",
                         "train wall time"), pairs)
    return lines


def _rel(a, b):
    if a is None or b is None or float(a) == 0:
        return None
    return (float(b) - float(a)) / float(a)


def _transfer_section(run: dict, figure: str, opts: dict) -> list[str]:
    t = run["transfer"]
    P, G = len(t["policies"]), len(t["guidances"])
    lines = [f"### Transfer: {run['name']}", "",
             f"![guidance transfer heatmap]({figure})", "",
             f"Rows: policies; columns: the guidance used at inference. Cells: mean (IQM) normalized score "
             f"(`{t.get('reference', 'd4rl')}` reference) over policy seeds x episodes; **bold** = the "
             "policy's own training guidance.", ""]
    rows = []
    for i in range(P):
        cells = []
        for j in range(G):
            c = t["cells"][i][j]
            txt = f"{fmt(c.mean())} ({fmt(stats.iqm(c))})"
            cells.append(f"**{txt}**" if t["own"][i, j] else txt)
        rows.append([t["policies"][i], *cells])
    lines += table(("policy \\ guidance", *t["guidances"]), rows)
    own = [t["cells"][i][j] for i in range(P) for j in range(G) if t["own"][i, j]]
    other = [t["cells"][i][j] for i in range(P) for j in range(G) if not t["own"][i, j]]
    group_rows = []
    pooled = {}
    for label, cells in (("own guidance (diagonal)", own), ("swapped guidance (off-diagonal)", other)):
        if not cells:
            continue
        s = stats.summarize(cells, **opts)
        flat = np.concatenate([c.reshape(-1) for c in cells])
        cell_means = np.array([c.mean() for c in cells])
        pooled[label] = (flat, cell_means)
        group_rows.append([label, len(cells), s["n"], fmt(s["mean"]), fmt(s["median"]),
                           f"{fmt(s['iqm'])} [{fmt(s['iqm_ci_low'])}, {fmt(s['iqm_ci_high'])}]", fmt(s["iqr"]),
                           fmt(stats.iqr(cell_means)) if len(cells) > 1 else "n/a"])
    lines += ["", *table(("cells", "count", "scores", "mean", "median", "IQM [CI]", "IQR (all scores)",
                            "IQR (cell means)"), group_rows)]
    if len(pooled) == 2:
        (a_flat, a_means), (b_flat, b_means) = pooled.values()
        change = stats.relative_iqr_change(a_flat, b_flat)
        lines += ["", f"Relative IQR change, swapped vs own guidance: all scores {pct(change)}"
                  + (f"; cell means {pct(stats.relative_iqr_change(a_means, b_means))}"
                     if len(a_means) > 1 and len(b_means) > 1 else "")
                  + " (negative = swapped guidance gives a narrower spread)."]
    return lines + [""]


def curve_lines(runs: list[dict], n_boot: int, seed: int, confidence: float) -> list[dict]:
    """The learning-curve figure's lines: per run and variant, the mean score per step and its bootstrap CI."""
    out = []
    for i, run in enumerate(runs):
        for variant, series in run["evals"].items():
            # resampling seeds, the pooled mean is the mean of the drawn seeds' means: same draws, less work
            cis = np.array([stats.bootstrap_ci(x.mean(axis=1, keepdims=True) if x.shape[0] > 1 else x, "mean",
                                               confidence, n_boot, seed) for _, x, _ in series])
            n_seeds = sorted({x.shape[0] for _, x, _ in series})
            out.append({"run": i, "label": f"{run['name']} · {variant}", "style": VARIANT_STYLES.get(variant, "-."),
                        "seeds": "/".join(map(str, n_seeds)) + (" seed" if n_seeds == [1] else " seeds"),
                        "steps": np.array([s for s, _, _ in series], dtype=float),
                        "means": np.array([x.mean() for _, x, _ in series]), "low": cis[:, 0], "high": cis[:, 1]})
    return out


def box_categories(runs: list[dict]) -> list[tuple]:
    """The score-box figure's categories: (name, variant, steps text, final scores, best scores, and the
    per-seed means of both) per run and variant."""
    cats = []
    for run in runs:
        fb = final_best(run)
        for variant in fb["final"]:
            f = fb["final"][variant]
            b = fb["best"].get(variant, f)
            cats.append((run["name"], variant, f"steps {steps_k(f[0])} / {steps_k(b[0])}", f[1], b[1],
                         f[1].mean(axis=1), b[1].mean(axis=1)))
    return cats


def runs_section(runs: list[dict], opts: dict) -> list[str]:
    """The runs, their score reference and how the statistics below are computed."""
    ci = f"{opts['confidence']:.0%}"
    md = ["# MDPT report", ""]
    md += table(("run", "algo", "mode", "dataset", "guidance", "seeds", "steps", "reference", "directory"),
                [[r["name"], r["config"]["algo"], r["config"]["mode"], r["config"]["dataset"],
                  guidance_kind(r["config"]) or "n/a", r["config"].get("seeds", "n/a"),
                  r["config"].get("steps", "n/a"), r["summary"].get("reference", "d4rl"), f"`{r['dir']}`"]
                 for r in runs])
    md += ["", "## Score reference", "",
           "Normalized score = 100 * (R - min) / (max - min), R the undiscounted episode return.", ""]
    md += _reference_note(runs)
    return md + ["", f"Statistics pool every seed x episode score of a setting. IQM = mean of the middle 50% "
                 f"(25% trimmed each side); IQR = 75th - 25th percentile. [CI] = {ci} percentile bootstrap "
                 f"({opts['n_boot']} resamples, seed {opts['seed']}) resampling training seeds (episodes when a "
                 "setting has one seed). A step marked * was derived from metrics.jsonl (summary.json had no entry).",
                 ""]


def curves_section(group: list[dict], dataset: str, out_dir: Path, opts: dict) -> list[str]:
    curved = [r for r in group if r["evals"]]
    if not curved:
        return []
    name = f"learning_curves_{slug(dataset)}.png"
    own = {r["summary"].get("dataset_mean_score") for r in curved} - {None}
    data_mean = own.pop() if len(own) == 1 else None  # one dataset, scored on one reference
    fig_learning_curves(curve_lines(curved, opts["n_boot"], opts["seed"], opts["confidence"]), curved, dataset,
                        out_dir / name, opts["confidence"], data_mean)
    return [f"![learning curves]({name})", "",
            f"Mean normalized score over seeds (each seed: the mean of its evaluation episodes) "
            f"against policy gradient steps; band: {opts['confidence']:.0%} bootstrap CI resampling seeds (episodes "
            "for a single-seed run)" + (f"; dotted: the data's own episodes ({fmt(data_mean)})" if data_mean is not None
                                       else "") + ".", ""]


def scores_section(group: list[dict], dataset: str, out_dir: Path, opts: dict) -> list[str]:
    """Final and best-checkpoint scores of a dataset's runs, with their box figure."""
    finals, bests, md = [], [], []
    for r in group:
        fb = final_best(r)
        finals += [_score_row(r["name"], v, *fb["final"][v], opts) for v in fb["final"]]
        bests += [_score_row(r["name"], v, *fb["best"][v], opts) for v in fb["best"]]
    if finals:
        box = f"scores_{slug(dataset)}.png"
        if fig_boxes(box_categories(group), group, dataset, out_dir / box):
            md += [f"![score distributions]({box})", "",
                   "Boxes: quartiles of all seed x episode scores (whiskers 1.5 IQR); diamonds: per-seed means.", ""]
        md += ["### Final scores (last iterate)", "", *table(SCORE_HEADER, finals), ""]
    if bests:
        md += ["### Best-checkpoint scores", "",
               "Selected on the same evaluation episodes they report, so biased upward; compare runs on "
               "the last iterate.", "", *table(SCORE_HEADER, bests), ""]
    return md


def time_section(runs: list[dict], out_dir: Path) -> list[str]:
    md = ["## Time and memory", ""]
    if fig_cost(runs, out_dir / "cost.png"):
        md += ["![time and memory](cost.png)", ""]
    return md + _cost_section(runs) + [""]


def transfer_sections(runs: list[dict], out_dir: Path, opts: dict) -> list[str]:
    transfers = [r for r in runs if r["transfer"] is not None]
    if not transfers:
        return []
    md = ["## Guidance transfer", ""]
    for r in transfers:
        name = f"transfer_{slug(r['name'])}.png"
        t = r["transfer"]
        mean = np.array([[c.mean() for c in row] for row in t["cells"]])
        iq = np.array([[stats.iqm(c) for c in row] for row in t["cells"]])
        fig_transfer(t, mean, iq, f"{t.get('dataset', r['config']['dataset'])}: guidance transfer", out_dir / name)
        md += _transfer_section(r, name, opts)
    return md


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path, *, n_boot: int = 2000, seed: int = 0,
                 confidence: float = 0.95) -> Path:
    """Write ``out_dir/report.md`` and its PNG figures for the given run directories."""
    if not run_dirs:
        raise MDPTError("no run directories given; pass at least one")
    runs = [load_run(d) for d in run_dirs]
    _unique_names(runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    opts = {"n_boot": n_boot, "seed": seed, "confidence": confidence}
    md = runs_section(runs, opts)
    for dataset in sorted({r["config"]["dataset"] for r in runs}):
        group = [r for r in runs if r["config"]["dataset"] == dataset]
        md += [f"## {dataset}", ""] + curves_section(group, dataset, out_dir, opts) + \
            scores_section(group, dataset, out_dir, opts)
    md += time_section(runs, out_dir) + transfer_sections(runs, out_dir, opts)
    path = out_dir / "report.md"
    write_bytes_atomic(path, ("\n".join(md).rstrip() + "\n").encode())
    return path
