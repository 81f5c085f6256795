"""The reproduction's analysis: tables in the paper's form, necessity gaps, transfer spreads,
costs, and a findings section that says, for each of the paper's three findings, whether our data
supports it, with numbers and bootstrap CIs.

Everything is computed from the run directories and transfer results on disk
(`reproduce.Reproduction` writes them), so `write_report` can be rerun at any time; the report
directory is replaced atomically (a crash leaves the previous report).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np

from mdpt.errors import MDPTError
from mdpt.evaluation import stats
from mdpt.experiments.report import _figure, _save, load_run
from mdpt.experiments.reproduce import STUDIES, read_protocol, transfer_cells
from mdpt.io import read_json, temp_prefix, write_bytes_atomic, write_json_atomic
from mdpt.settings import flatten

N_BOOT = 2000
CONFIDENCE = 0.95
NARROW_SPREAD = 5.0  # normalized points: curves that all end closer than this cannot rank the methods
SPREAD_SWAPS = ("seed-swapped", "independent-iql")  # the swaps of the paper's IQR finding


# ----------------------------------------------------------------------------- statistics
def seed_means(scores) -> np.ndarray:
    return np.asarray(scores, float).mean(axis=1)


def mean_ci(scores, seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-seed means and its bootstrap CI (resampling seeds)."""
    m = seed_means(scores)
    rng = np.random.default_rng(seed)
    reps = m[rng.integers(0, len(m), size=(N_BOOT, len(m)))].mean(1)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return float(m.mean()), float(lo), float(hi)


def diff_ci(a, b, seed: int = 0) -> tuple[float, float, float]:
    """mean(a) - mean(b) over seeds, CI from resampling each setting's seeds independently."""
    ma, mb = seed_means(a), seed_means(b)
    rng = np.random.default_rng(seed)
    ra = ma[rng.integers(0, len(ma), size=(N_BOOT, len(ma)))].mean(1)
    rb = mb[rng.integers(0, len(mb), size=(N_BOOT, len(mb)))].mean(1)
    lo, hi = np.percentile(ra - rb, [2.5, 97.5])
    return float(ma.mean() - mb.mean()), float(lo), float(hi)


def iqr(x) -> float:
    q25, q75 = np.percentile(np.asarray(x, float), [25, 75])
    return float(q75 - q25)


def _seed_cells(pairs) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(seed_means(a), seed_means(b)) for a, b in pairs if np.asarray(a).shape[0] > 1]


def _iqr_bootstrap(cells, stat, seed: int) -> tuple[float, float, float] | None:
    """stat(own IQRs, swapped IQRs) of the cells, with a bootstrap CI resampling seeds within cells (the same
    seeds for own and swapped); None where the statistic is undefined."""
    if not cells:
        return None
    point = stat(np.array([iqr(a) for a, _ in cells]), np.array([iqr(b) for _, b in cells]))
    if not np.isfinite(point):
        return None
    rng = np.random.default_rng(seed)
    draws = [[rng.integers(0, len(a), len(a)) for a, _ in cells] for _ in range(N_BOOT)]
    # each cell's IQRs of all resamples at once: (N_BOOT, cells)
    resampled = [np.stack([d[c] for d in draws]) for c in range(len(cells))]  # per cell: (N_BOOT, seeds)
    own, swapped = (np.stack([stats.iqr(pair[side][idx], axis=-1) for pair, idx in zip(cells, resampled, strict=True)], 1)
                    for side in (0, 1))
    reps = [stat(o, s) for o, s in zip(own, swapped, strict=True)]
    lo, hi = np.nanpercentile(reps, [2.5, 97.5])
    return float(point), float(lo), float(hi)


def _relative(own: np.ndarray, swapped: np.ndarray) -> float:
    return (swapped.sum() - own.sum()) / own.sum() if own.sum() > 0 else np.nan


def spread_change(pairs: list[tuple[np.ndarray, np.ndarray]], seed: int = 0) -> tuple[float, float, float] | None:
    """Relative change of the seed spread, own -> swapped guidance (the paper's measure): (sum IQR_swap -
    sum IQR_own) / sum IQR_own over cells (each cell: the per-seed means of one policy at one step)."""
    return _iqr_bootstrap(_seed_cells(pairs), _relative, seed)


def spread_difference(pairs: list[tuple[np.ndarray, np.ndarray]], seed: int = 0) -> tuple[float, float, float] | None:
    """Mean change of the seed IQR per cell, in score points: defined where every own IQR is ~0, where the
    relative change is not."""
    return _iqr_bootstrap(_seed_cells(pairs), lambda own, swapped: float(np.mean(swapped - own)), seed)


def auc(series: list[tuple[int, np.ndarray]]) -> float:
    """Area under the mean learning curve, divided by its step span (an average score)."""
    steps = np.array([s for s, _ in series], float)
    means = np.array([np.mean(x) for _, x in series])
    if len(steps) == 1:
        return float(means[0])
    return float(np.trapezoid(means, steps) / (steps[-1] - steps[0]))


def steps_to(series: list[tuple[int, np.ndarray]], target: float) -> int | None:
    for step, x in series:
        if np.mean(x) >= target:
            return int(step)
    return None


# ----------------------------------------------------------------------------- loading
def _series(run: dict, variant: str) -> list[tuple[int, np.ndarray]]:
    return [(s, x) for s, x, _ in run["evals"].get(variant, [])]


def load(out: Path) -> dict:
    """{dataset: {run name: loaded run}} and the transfer cells of every dataset."""
    protocol = read_protocol(out)
    runs: dict[str, dict] = {}
    trained: list[str] = []
    for key in protocol["runs"]:
        dataset, name = key.split("/", 1)
        path = out / "runs" / key
        if (path / "summary.json").exists():
            try:
                run = load_run(path)
            except MDPTError:
                continue
            if run["summary"].get("status") == "trained":  # trained elsewhere, its evaluations still to come
                trained.append(key)
            else:
                runs.setdefault(dataset, {})[name] = run
    transfer = {}
    for path in sorted((out / "transfer").glob("*.json")) if (out / "transfer").exists() else []:
        transfer[path.stem] = transfer_cells(path)
    datasets = {path.stem: read_json(path, "dataset statistics")
                for path in (sorted((out / "data").glob("*.json")) if (out / "data").exists() else [])}
    return {"protocol": protocol["protocol"], "runs": runs, "transfer": transfer, "data": datasets,
            "planned": protocol["runs"], "trained": trained}


# ----------------------------------------------------------------------------- analyses
def gfdt_table(runs: dict, algos) -> list[dict]:
    rows = []
    for algo in algos:
        joint, gf = runs.get(f"{algo}-joint"), runs.get(f"{algo}-gfdt")
        if not joint or not gf or not _series(joint, "guided") or not _series(gf, "guided"):
            continue
        sj, sg = _series(joint, "guided"), _series(gf, "guided")
        j_final, g_final = sj[-1][1], sg[-1][1]
        plain = _last_common_step(joint, gf, "unguided")
        js, gs = joint["summary"], gf["summary"]
        comparable = program_size(js) == program_size(gs)  # time and memory are those of each run's whole program
        row = {
            "algo": algo, "joint_final": mean_ci(j_final), "gfdt_final": mean_ci(g_final),
            "final_diff": diff_ci(g_final, j_final), "joint_auc": auc(sj), "gfdt_auc": auc(sg),
            # the same policies sampled without selection: separates what training did from what the selector did
            "plain_diff": diff_ci(plain[2], plain[1]) if plain else None, "plain_step": plain[0] if plain else None,
            "steps_to_90_joint": steps_to(sj, 0.9 * float(np.mean(j_final))),
            "steps_to_90_gfdt": steps_to(sg, 0.9 * float(np.mean(j_final))),
            "ms_per_step": (_ms(js), _ms(gs)) if comparable else (None, None),
            "peak_mib": (_mib(js), _mib(gs)) if comparable else (None, None),
            "programs": (program_size(js), program_size(gs)),
            "train_wall_s": (_wall(joint), _wall(gf)), "final_step": int(sg[-1][0]),
            "seeds": int(np.asarray(g_final).shape[0]), "episodes": int(np.asarray(g_final).shape[1]),
            "joint_guidance": joint["config"]["guidance"]["kind"], "gfdt_guidance": gf["summary"].get("guidance_kind"),
            "selector": (js.get("preset", {}).get("selector"), gs.get("preset", {}).get("selector")),
            "stage1": stage1_cost(gf, runs) if comparable else None,
            "gfdt_derived": bool(gs.get("derived_from")),
        }
        row["time_with_stage1"] = _with_stage1(row)
        rows.append(row)
    return rows


def program_size(summary: dict) -> int:
    """Datasets in the program that trained a run: more than 1 when grouped (`mdpt reproduce --group`)."""
    return len(summary.get("group") or [None])


def stage1_cost(gf: dict, runs: dict) -> dict | None:
    """The guidance-first run's stage-1 guidance: its run, steps and time per step (trained once, shared by every
    guidance-first policy of the dataset; counted whole here, its most expensive reading)."""
    path = (gf["config"].get("stage1") or {}).get("guidance_path")
    name = Path(path).parent.name if path and path != "random" else None
    run = runs.get(name) if name else None
    if run is None or _ms(run["summary"]) is None or program_size(run["summary"]) != program_size(gf["summary"]):
        return None
    return {"run": name, "steps": int(run["summary"].get("steps") or 0), "ms_per_step": _ms(run["summary"])}


def _with_stage1(row: dict) -> float | None:
    """GF/joint time for the same number of policy steps, the stage-1 guidance's steps added to guidance-first."""
    (joint_ms, gf_ms), st = row["ms_per_step"], row.get("stage1")
    if None in (joint_ms, gf_ms) or not st:
        return None
    steps = row["final_step"]
    return (gf_ms * steps + st["ms_per_step"] * st["steps"]) / (joint_ms * steps)


def _last_common_step(a: dict, b: dict, variant: str):
    """(step, a's scores, b's scores) at the last step at which both runs evaluated `variant`, or None."""
    sa, sb = dict(_series(a, variant)), dict(_series(b, variant))
    common = sorted(set(sa) & set(sb))
    return (common[-1], sa[common[-1]], sb[common[-1]]) if common else None


def _ms(summary):
    s = summary.get("seconds_per_step")
    return 1e3 * s if s else None


def _mib(summary):
    b = summary.get("peak_memory_bytes")
    return b / 2**20 if b else None


def _wall(run):
    return float(sum(r.get("wall_s", 0.0) for r in run["train"]))


# (label, run, variant) pairs whose difference from the guided joint run is a necessity gap
NECESSITY_CONTROLS = [
    ("inference: no guidance (plain sampling)", "joint", "unguided"),
    ("inference: random guidance", "joint", "random-guidance"),
    ("training: no guidance (eta 0), critic re-selection", "bc", "guided"),
    ("training: no guidance (eta 0), plain sampling", "bc", "unguided"),
    ("training: random frozen critic", "random", "guided"),
]


def necessity(runs: dict, algos) -> dict:
    """Per algorithm and control: the gap guided-joint minus control at every evaluation step."""
    out = {}
    for algo in algos:
        joint = runs.get(f"{algo}-joint")
        if not joint:
            continue
        guided = dict(_series(joint, "guided"))
        for label, run_suffix, variant in NECESSITY_CONTROLS:
            control_run = runs.get(f"{algo}-{run_suffix}")
            if control_run is None:
                continue
            series = dict(_series(control_run, variant))
            common = sorted(set(guided) & set(series))
            if common:
                out.setdefault(algo, {})[label] = [(t, *diff_ci(guided[t], series[t])) for t in common]
    return out


def final_spread(runs: dict, methods_only: bool = False) -> dict | None:
    """The last-iterate mean score of every learning curve (each run x inference variant; with
    `methods_only` the guided curves of the joint and guidance-first runs) and their range: a dataset
    on which the methods all end within a few points cannot tell them apart."""
    finals = {f"{name} {variant}": float(np.mean(seed_means(series[-1][1])))
              for name, run in sorted(runs.items()) for variant, series in sorted(run["evals"].items())
              if series and (not methods_only or (variant == "guided" and name.endswith(("-joint", "-gfdt"))))}
    if len(finals) < 2:  # one curve has no spread to speak of
        return None
    low, high = min(finals, key=finals.get), max(finals, key=finals.get)
    return {"finals": finals, "low": (low, finals[low]), "high": (high, finals[high]),
            "range": finals[high] - finals[low]}


def critic_values(runs: dict) -> list[dict]:
    """Every trained critic's largest |Q| over training against its bound max |r| / (1 - gamma)."""
    rows = []
    for name, run in sorted(runs.items()):
        vc = run["summary"].get("value_check")
        if vc:
            rows.append({"run": name, "max_abs_q": vc["max_abs_q"], "bound": vc["bound"],
                         "share": vc["max_abs_q"] / vc["bound"], "within": vc["within_bound"],
                         "first_exceeded_step": vc.get("first_exceeded_step")})
    return rows


def data_scores(summary: dict | None) -> dict | None:
    """The data's own episodes, scored like the policies (`normalized`: reference, mean, min, max)."""
    if not summary:
        return None
    return {"episodes": summary["episodes"], "transitions": summary["transitions"], **summary["normalized"]}


def _swap_cells(cells: dict, runs: dict):
    """(run name, step, swap kind, own scores, swapped scores, cell) of every swap whose own side is known:
    its `own` cell (the same count and seed as the swap) when evaluated, else the run's guided curve."""
    for key, cell in cells.items():
        run_name, rest = key.split("@", 1)
        step, kind = rest.split("|", 1)
        if kind == "own":
            continue
        own_cell = cells.get(f"{run_name}@{step}|own")
        run = runs.get(run_name)
        own = own_cell["scores"] if own_cell else dict(_series(run, "guided")).get(int(step)) if run else None
        if own is None or np.asarray(own).shape != np.asarray(cell["scores"]).shape:
            continue
        yield run_name, int(step), kind, np.asarray(own, float), np.asarray(cell["scores"], float), cell


def transfer(cells: dict, runs: dict) -> tuple[dict, dict[str, list[tuple[np.ndarray, np.ndarray]]]]:
    """Own vs swapped scores per cell, the spread change, cross-algorithm means, ensembles; and the
    (own, swapped) scores of the cells by `_swap_group`."""
    pairs = {"spread": [], "cross": [], "ensemble": []}
    rows = {"spread": [], "cross": [], "ensemble": []}
    for run_name, step, kind, own, swapped, cell in _swap_cells(cells, runs):
        group = _swap_group(kind)
        pairs[group].append((own, swapped))
        rows[group].append({"policy": run_name, "step": step, "swap": kind, "own": mean_ci(own),
                            "swapped": mean_ci(swapped), "own_iqr": iqr(seed_means(own)),
                            "swapped_iqr": iqr(seed_means(swapped)), "selector": cell.get("selector"),
                            "critic": cell.get("critic")})
    own_pairs = pairs["spread"]
    summary = {"spread": spread_change(own_pairs), "spread_points": spread_difference(own_pairs),
               "swaps": rows["spread"], "cross": rows["cross"], "ensembles": rows["ensemble"],
               "cells": len(own_pairs), "own_cells": sum(key.endswith("|own") for key in cells)}
    return summary, pairs


def analyse(data: dict) -> dict:
    algos = data["protocol"]["algos"]
    per, pairs = {}, {"spread": [], "cross": [], "ensemble": []}
    for ds, runs in sorted(data["runs"].items()):
        moved, ds_pairs = transfer(data["transfer"].get(ds, {}), runs)
        for group, cells in ds_pairs.items():
            pairs[group] += cells
        per[ds] = {"gfdt": gfdt_table(runs, algos), "necessity": necessity(runs, algos), "transfer": moved,
                   "data": data_scores(data.get("data", {}).get(ds)), "spread": final_spread(runs),
                   "methods_spread": final_spread(runs, methods_only=True), "values": critic_values(runs)}
    all_pairs = pairs["spread"]
    return {"datasets": per, "spread_all": spread_change(all_pairs), "spread_points": spread_difference(all_pairs),
            "spread_cells": len(all_pairs),
            "other_spreads": {group: (spread_change(pairs[group]), spread_difference(pairs[group]), len(pairs[group]))
                              for group in ("cross", "ensemble") if pairs[group]},
            "swap_candidates": data["protocol"].get("swap_candidates")}


def _swap_group(kind: str) -> str:
    return "spread" if kind in SPREAD_SWAPS else "ensemble" if kind.startswith("ensemble-") else "cross"


# ----------------------------------------------------------------------------- findings
def other_spreads_sentence(spreads: dict) -> str:
    """The seed-spread change of the cross-algorithm swaps and of the guidance ensembles, measured as the
    paper's finding is (relative, and in points per cell)."""
    names = {"cross": "with the other algorithm's guidance", "ensemble": "with a guidance ensemble"}
    parts = [f"{names[group]} {_ci(rel, 0, pct=True)} ({_ci(points)} points per cell, {n} cells)"
             for group, (rel, points, n) in spreads.items()]
    return f" The seed IQR changes own -> {'; '.join(parts)}." if parts else ""


def _fmt(x, digits=1):
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(t, digits=1, pct=False):
    if t is None:
        return "n/a"
    k = 100.0 if pct else 1.0
    unit = "%" if pct else ""
    return f"{k * t[0]:+.{digits}f}{unit} [{k * t[1]:+.{digits}f}, {k * t[2]:+.{digits}f}]"


def _excludes_zero(ci) -> bool:
    return ci[1] > 0 or ci[2] < 0


def _stage_changed(first, last) -> bool:
    """A gap that becomes, or stops being, distinguishable from 0, or that changes sign with both CIs
    excluding 0."""
    if _excludes_zero(first) != _excludes_zero(last):
        return True
    return _excludes_zero(first) and (first[0] > 0) != (last[0] > 0)


def algorithm_contrasts(result: dict) -> list[tuple]:
    """(dataset, control, step, (algo, gap CI), (algo, gap CI)) where two algorithms' gaps for the same control
    at the same step have disjoint CIs: the control matters more for one algorithm than for the other."""
    out = []
    for ds, r in result["datasets"].items():
        nec = r["necessity"]
        algos = sorted(nec)
        for i, a in enumerate(algos):
            for b in algos[i + 1:]:
                for label in sorted(set(nec[a]) & set(nec[b])):
                    gb = {t: ci for t, *ci in nec[b][label]}
                    for t, *ca in nec[a][label]:
                        cb = gb.get(t)
                        if cb is not None and (ca[1] > cb[2] or cb[1] > ca[2]):
                            out.append((ds, label, t, (a, ca), (b, cb)))
    return out


def necessity_finding(result: dict) -> str:
    """Finding 1 in two parts: does a control's gap change between the first and the last evaluation
    (training stage), and do two algorithms' gaps for the same control differ (algorithm)?"""
    rows = [(ds, algo, label, series[0], series[-1]) for ds, r in result["datasets"].items()
            for algo, controls in r["necessity"].items() for label, series in controls.items() if len(series) >= 2]
    if not rows:
        return "1. **Guidance necessity: inconclusive** (no learning curves with controls yet)."
    changes = [x for x in rows if _stage_changed(x[3][1:4], x[4][1:4])]
    contrasts = algorithm_contrasts(result)
    paired = any(len(r["necessity"]) >= 2 for r in result["datasets"].values())
    stage = "supported" if changes else "not supported"
    algorithm = ("supported" if contrasts else "not supported" if paired
                 else "untested (one algorithm with controls)")
    verdict = ("supported" if changes and contrasts else "not supported" if not changes and not contrasts
               else "partly supported")
    example = max(changes or rows, key=lambda x: abs(x[4][1] - x[3][1]))  # the largest move along training
    text = (f"1. **Guidance necessity depends on training stage and algorithm: {verdict}** by our data "
            f"(stage: {stage}; algorithm: {algorithm}). Of {len(rows)} (dataset, algorithm, control) gap curves, "
            f"{sum(_excludes_zero(x[3][1:4]) for x in rows)} have a CI that excludes 0 at the first evaluation and "
            f"{sum(_excludes_zero(x[4][1:4]) for x in rows)} at the last; {len(changes)} change between the two (in "
            f"sign or in whether the CI excludes 0). "
            f"E.g. {example[0]} {example[1]}, {example[2]}: gap {_ci(example[3][1:4])} at step {example[3][0]}, "
            f"{_ci(example[4][1:4])} at step {example[4][0]}.")
    if contrasts:
        ds, label, t, (a, ca), (b, cb) = contrasts[0]
        text += (f" Between algorithms, {len(contrasts)} (control, step) pairs have disjoint gap CIs, e.g. {ds} "
                 f"{label} at step {t}: {a} {_ci(ca)}, {b} {_ci(cb)}.")
    return text


def findings(result: dict) -> list[str]:
    lines = [necessity_finding(result)]
    # 2. GFDT vs joint
    gf = [(ds, row) for ds, r in result["datasets"].items() for row in r["gfdt"]]
    if gf:
        better = [x for x in gf if x[1]["final_diff"][1] > 0]
        worse = [x for x in gf if x[1]["final_diff"][2] < 0]
        cheaper = [x for x in gf if None not in x[1]["ms_per_step"] and x[1]["ms_per_step"][1] < x[1]["ms_per_step"][0]]
        mem = [x for x in gf if None not in x[1]["peak_mib"] and x[1]["peak_mib"][1] < x[1]["peak_mib"][0]]
        verdict = ("supported" if better and not worse else "not supported" if worse and not better
                   else "mixed" if better and worse else "inconclusive (no difference outside the CIs)")
        rows = "; ".join(f"{ds} {row['algo']}: GFDT - joint {_ci(row['final_diff'])}" for ds, row in gf)
        ratios = [row["ms_per_step"][1] / row["ms_per_step"][0] for _, row in gf if None not in row["ms_per_step"]]
        mratios = [row["peak_mib"][1] / row["peak_mib"][0] for _, row in gf if None not in row["peak_mib"]]
        lines.append(f"2. **GFDT gives a better final score than joint training: {verdict}** ({len(better)} of "
                     f"{len(gf)} settings better, {len(worse)} worse, CI of the difference excluding 0): {rows}. "
                     f"Cost: guidance-first is cheaper per step in {len(cheaper)} of {len(gf)} "
                     f"(time ratio GF/joint {_fmt(min(ratios), 2) if ratios else 'n/a'}.."
                     f"{_fmt(max(ratios), 2) if ratios else 'n/a'}) and lighter in peak memory in {len(mem)} "
                     f"(ratio {_fmt(min(mratios), 2) if mratios else 'n/a'}..{_fmt(max(mratios), 2) if mratios else 'n/a'})"
                     + stage1_sentence(gf) + "." + plain_sampling_sentence(gf))
    else:
        lines.append("2. **GFDT vs joint: inconclusive** (no finished pair of runs yet).")
    # 3. transfer
    spread = result["spread_all"]
    cross = [(ds, row) for ds, r in result["datasets"].items() for row in r["transfer"]["cross"]]
    if spread:
        verdict = "supported" if spread[2] < 0 else "not supported" if spread[1] > 0 else "inconclusive"
        text = (f"3. **An independently trained guidance at inference shrinks the spread of scores across seeds: "
                f"{verdict}**: relative IQR change own -> swapped {_ci(spread, 0, pct=True)} over "
                f"{result['spread_cells']} step-matched (policy, step) cells (the paper reports -86%)")
        if result.get("spread_points"):
            text += f"; in points, the seed IQR changes by {_ci(result['spread_points'])} per cell"
        text += "."
        if result.get("swap_candidates"):
            text += (f" Own and swapped guidance both score {result['swap_candidates']} candidates per state, on the "
                     "same episode seeds.")
        if cross:
            near = [x for x in cross if x[1]["swapped"][0] >= 0.9 * max(x[1]["own"][0], 1e-9)]
            text += (f" Across algorithms, {len(near)} of {len(cross)} pairings score at least 90% of the policy's "
                     "own-guidance score: " + "; ".join(
                         f"{ds} {row['policy']} with {row['swap']} at step {row['step']}: {_fmt(row['swapped'][0])} vs "
                         f"own {_fmt(row['own'][0])}" for ds, row in cross[:4]) + ".")
        text += other_spreads_sentence(result.get("other_spreads", {}))
        lines.append(text)
    else:
        lines.append("3. **Cross-module transfer: inconclusive** (no step-matched swaps evaluated yet).")
    lines.append(values_line(result))
    for ds, r in result["datasets"].items():
        spread = r.get("methods_spread")
        if spread and spread["range"] < NARROW_SPREAD:
            own = f", beside the data's own episodes at {_fmt(r['data']['mean'])}" if r.get("data") else ""
            lines.append(f"\n**Caveat, {ds}:** the joint and guidance-first policies all end within "
                         f"{_fmt(spread['range'])} points of each other ({_fmt(spread['low'][1])}.."
                         f"{_fmt(spread['high'][1])}{own}): this dataset barely separates the methods, so the "
                         "verdicts above rest on differences of a few points.")
    return lines


def values_line(result: dict) -> str:
    """The critics' values beside their bounds: a critic past its bound makes its runs' scores suspect."""
    rows = [(ds, row) for ds, r in result["datasets"].items() for row in r.get("values", [])]
    if not rows:
        return "\nValues: no trained critic recorded its |Q| yet."
    past = [f"{ds} {row['run']} (|Q| {row['max_abs_q']:.3g} of {row['bound']:.3g}, from step {row['first_exceeded_step']})"
            for ds, row in rows if not row["within"]]
    if past:
        return (f"\n**Warning, values:** {len(past)} of {len(rows)} critics left their bound max |r| / (1 - gamma): "
                f"{'; '.join(past)}. Scores selected or trained by them are suspect.")
    ds, top = max(rows, key=lambda x: x[1]["share"])
    return (f"\nValues: all {len(rows)} trained critics stayed inside their bound max |r| / (1 - gamma) over training; "
            f"the largest |Q| is {100 * top['share']:.0f}% of its bound ({ds} {top['run']}: {top['max_abs_q']:.3g} of "
            f"{top['bound']:.3g}).")


def waiting_for_evaluation(data: dict) -> list[str]:
    """A line for the runs trained without evaluation (`mdpt reproduce --train-only`), if any."""
    if not data["trained"]:
        return []
    return [f"**{len(data['trained'])} of {len(data['planned'])} runs are trained but not evaluated yet** "
            "(`--train-only`, e.g. on a GPU machine without the simulator): copy this directory to a machine with the "
            "simulator and run the same command there without --train-only; the findings below use the evaluated "
            "runs only.", ""]


def _stage1_note(row: dict) -> str:
    st = row.get("stage1")
    if not st:
        return f"{row['algo']}: n/a"
    return (f"{row['algo']}: {st['run']}, {st['steps']} steps at {_fmt(st['ms_per_step'], 2)} ms, GF/joint time "
            f"{_fmt(row['time_with_stage1'], 2)} with it")


def stage1_sentence(gf: list[tuple[str, dict]]) -> str:
    ratios = [row["time_with_stage1"] for _, row in gf if row["time_with_stage1"] is not None]
    if not ratios:
        return ""
    return (f"; with the stage-1 guidance's training added to guidance-first whole, the time ratio is "
            f"{_fmt(min(ratios), 2)}..{_fmt(max(ratios), 2)}")


def plain_sampling_sentence(gf: list[tuple[str, dict]]) -> str:
    """The GFDT - joint difference of the policies themselves (plain sampling), and where the selector made the
    guided difference: joint and guidance-first policies are selected by different guidance at its own preset."""
    plain = [(ds, row) for ds, row in gf if row.get("plain_diff")]
    if not plain:
        return ""
    text = (" The policies alone (plain sampling from both, no selection): " + "; ".join(
        f"{ds} {row['algo']} at step {row['plain_step']}: {_ci(row['plain_diff'])}" for ds, row in plain) + ".")
    by_selection = [f"{ds} {row['algo']}" for ds, row in plain
                    if _excludes_zero(row["final_diff"]) and row["plain_diff"][0] * row["final_diff"][0] <= 0]
    if by_selection:
        text += (f" In {', '.join(by_selection)} the guided difference comes from the selection at inference (each "
                 "mode's guidance with its own preset): sampled plainly, the policies differ the other way or not at "
                 "all.")
    return text


def data_line(r: dict) -> list[str]:
    """Where the data's own episodes score, and where every learning curve ends."""
    parts = []
    if r.get("data"):
        d = r["data"]
        parts.append(f"Data: {d['episodes']} episodes, {d['transitions']} transitions; the data's own episodes score "
                     f"{_fmt(d['mean'])} (min {_fmt(d['min'])}, max {_fmt(d['max'])}; `{d['reference']}` reference).")
    if r.get("spread"):
        sp = r["spread"]
        parts.append(f"Every learning curve (run x inference variant) ends between {_fmt(sp['low'][1])} "
                     f"({sp['low'][0]}) and {_fmt(sp['high'][1])} ({sp['high'][0]}).")
    return [" ".join(parts), ""] if parts else []


# ----------------------------------------------------------------------------- report
def _fig_curves(runs: dict, ds: str, path: Path) -> None:
    fig = _figure(8.0, 4.6)
    ax = fig.add_subplot()
    for name, run in sorted(runs.items()):
        for variant, style in (("guided", "-"), ("unguided", "--")):
            series = _series(run, variant)
            if not series or (variant == "unguided" and not name.endswith("-joint")):
                continue
            steps = [s for s, _ in series]
            cis = [mean_ci(x) for _, x in series]
            line, = ax.plot(steps, [c[0] for c in cis], style, marker="o", ms=3, label=f"{name} · {variant}")
            ax.fill_between(steps, [c[1] for c in cis], [c[2] for c in cis], color=line.get_color(), alpha=0.12, lw=0)
    ax.set_xlabel("policy gradient steps")
    ax.set_ylabel("normalized score")
    ax.set_title(f"{ds}: mean over seeds, 95% bootstrap CI")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


def _fig_necessity(nec: dict, ds: str, path: Path) -> None:
    fig = _figure(8.0, 3.2 * max(1, len(nec)))
    for i, (algo, controls) in enumerate(sorted(nec.items())):
        ax = fig.add_subplot(len(nec), 1, i + 1)
        for label, series in controls.items():
            steps = [s[0] for s in series]
            line, = ax.plot(steps, [s[1] for s in series], marker="o", ms=3, label=label)
            ax.fill_between(steps, [s[2] for s in series], [s[3] for s in series], color=line.get_color(), alpha=0.12,
                            lw=0)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_title(f"{ds} {algo}: guided joint minus control (95% CI)")
        ax.set_xlabel("policy gradient steps")
        ax.set_ylabel("score gap")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)


def _table(header, rows) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def render(out: Path, data: dict, result: dict, report_dir: Path, header: list[str]) -> str:
    p = data["protocol"]
    md = ["# Reproduction of the paper's three findings", ""] + header + [
        f"Protocol: datasets {', '.join(p['datasets'])}; algorithms {', '.join(p['algos'])}; {p['seeds']} seeds "
        f"(vmapped); {p['steps']} steps; evaluation every {p['eval_every']} steps on {p['curve_episodes']} episodes "
        f"per seed (curves) and {p['final_episodes']} at the last step (final points){_cands(p)}; stage-1 guidance "
        f"`{p['stage1']}`" + (f", unfrozen at step {p['unfreeze_at']}" if p.get("unfreeze_at") else "") +
        "; scores normalized with the `d4rl` reference (D4RL's bullet constants). Every score is last-iterate "
        "unless marked; CIs are 95% percentile bootstraps resampling seeds.", "",
        "## Findings", ""] + waiting_for_evaluation(data) + findings(result) + [""]
    for ds, r in result["datasets"].items():
        runs = data["runs"][ds]
        md += [f"## {ds}", ""] + data_line(r)
        planned = (key.split("/", 1) for key in data["planned"])
        pending = [name for dataset, name in planned if dataset == ds and name not in runs]
        trained = [name for name in pending if f"{ds}/{name}" in data["trained"]]
        if trained:
            md += [f"Trained without evaluation (`--train-only`): {', '.join(trained)}; the same command without "
                   "--train-only, on a machine with the simulator, evaluates them.", ""]
            pending = [name for name in pending if name not in trained]
        if pending:
            md += [f"Not finished yet: {', '.join(pending)} (the same command continues them); every number below "
                   "and in the findings comes from the finished runs only.", ""]
        if any(_series(run, "guided") for run in runs.values()):
            _fig_curves(runs, ds, report_dir / f"curves_{ds}.png")
            md += [f"![learning curves](curves_{ds}.png)", ""]
        if r["gfdt"]:
            md += ["### GFDT vs joint (the paper's table)", ""]
            md += _table(("algo", "joint final", "GFDT final", "GFDT - joint", "GFDT - joint, plain sampling",
                          "AUC joint / GFDT",
                          "steps to 90% of joint final (joint / GFDT)", "ms/step joint / GFDT",
                          "peak MiB joint / GFDT", "guidance joint / GFDT", "selection joint / GFDT"),
                         [[x["algo"], _ci(x["joint_final"]), _ci(x["gfdt_final"]), _ci(x["final_diff"]),
                           _ci(x["plain_diff"]) if x.get("plain_diff") else "n/a",
                           f"{_fmt(x['joint_auc'])} / {_fmt(x['gfdt_auc'])}",
                           f"{x['steps_to_90_joint']} / {x['steps_to_90_gfdt']}",
                           f"{_fmt(x['ms_per_step'][0], 2)} / {_fmt(x['ms_per_step'][1], 2)}",
                           f"{_fmt(x['peak_mib'][0])} / {_fmt(x['peak_mib'][1])}",
                           f"{x['joint_guidance']} / {x['gfdt_guidance']}", f"{x['selector'][0]} / {x['selector'][1]}"]
                          for x in r["gfdt"]])
            md += ["", f"Final = guided score at step {r['gfdt'][0]['final_step']}, {r['gfdt'][0]['seeds']} seeds x "
                   f"{r['gfdt'][0]['episodes']} episodes. Plain sampling = the same two policies without selection "
                   "(one candidate) at that step. AUC = mean score over the learning curve. ms/step is the policy's "
                   "training step; guidance-first also needs its stage-1 guidance, trained once per dataset and "
                   "shared: " + "; ".join(_stage1_note(x) for x in r["gfdt"]) + ".", ""]
            derived = [x["algo"] for x in r["gfdt"] if x.get("gfdt_derived")]
            if derived:
                md += [f"{', '.join(a.upper() for a in derived)}: the guidance-first policy is the joint run's policy (its "
                       "loss never reads a critic; checked bit for bit on the first chunk, then taken from the joint run's "
                       "snapshots), so its GFDT - joint difference is that of the two guidance modules selecting its "
                       "actions; its ms/step and peak memory are its own program's.", ""]
            grouped = sorted({n for x in r["gfdt"] for n in x["programs"] if n > 1})
            if grouped:
                md += ["Some runs trained as one program with the other datasets of their environment "
                       f"({', '.join(map(str, grouped))} datasets, `--group`): their ms/step and peak memory are that "
                       "program's; a pair trained in programs of different sizes is not compared (n/a).", ""]
        if r["necessity"]:
            _fig_necessity(r["necessity"], ds, report_dir / f"necessity_{ds}.png")
            md += ["### Guidance necessity", "", f"![necessity gaps](necessity_{ds}.png)", ""]
            rows = [[algo, label, _ci(series[0][1:]), _ci(series[-1][1:])]
                    for algo, controls in sorted(r["necessity"].items()) for label, series in controls.items()]
            md += _table(("algo", "control", "gap at the first evaluation", "gap at the last"), rows) + [""]
            if "idql" in r["necessity"]:
                md += ["IDQL's policy never sees its critic in training: its training-time controls are IDQL itself; "
                       "its necessity is the inference-time gap.", ""]
        if r.get("values"):
            md += ["### Critic values", ""]
            md += _table(("run", r"largest \|Q\| over training (any seed)", r"bound max \|r\| / (1 - gamma)", "share",
                          "within the bound"),
                         [[x["run"], f"{x['max_abs_q']:.3g}", f"{x['bound']:.3g}", f"{100 * x['share']:.0f}%",
                           "yes" if x["within"] else f"no, from step {x['first_exceeded_step']}"] for x in r["values"]])
            md += ["", "Runs without a row train no critic of their own (they read a frozen guidance module).", ""]
        t = r["transfer"]
        if t["swaps"] or t["cross"] or t["ensembles"]:
            md += ["### Cross-module transfer (step-matched checkpoints)", ""]
            rows = [[x["policy"], x["step"], x["swap"], (x["selector"] or {}).get("candidates", "?"), _ci(x["own"]),
                     _ci(x["swapped"]), f"{_fmt(x['own_iqr'])} -> {_fmt(x['swapped_iqr'])}"]
                    for x in t["swaps"] + t["cross"] + t["ensembles"]]
            md += _table(("policy", "step", "guidance at inference", "candidates", "own guidance", "swapped",
                          "seed IQR own -> swapped"), rows) + [""]
            if t["own_cells"]:
                md += ["Own guidance: the policy re-evaluated with its own guidance at the swaps' candidate count and "
                       "episode seeds (`--swap-candidates`), so each row differs only in the guidance.", ""]
            if t["spread"]:
                md += [f"Relative IQR change own -> swapped over {t['cells']} cells: {_ci(t['spread'], 0, pct=True)}; "
                       f"per cell, in points: {_ci(t['spread_points'])}.", ""]
    return "\n".join(md) + "\n"


def command_line(p: dict, out: Path) -> str:
    """The `mdpt reproduce` call that makes this protocol."""
    words = ["mdpt reproduce", f"--datasets {','.join(p['datasets'])}", f"--algos {','.join(p['algos'])}",
             f"--seeds {p['seeds']}", f"--seed {p['seed']}", f"--steps {p['steps']}", f"--eval-every {p['eval_every']}",
             f"--curve-episodes {p['curve_episodes']}", f"--episodes {p['final_episodes']}"]
    for key, flag in (("curve_candidates", "--curve-candidates"), ("eval_max_steps", "--eval-max-steps"),
                      ("unfreeze_at", "--unfreeze-at"), ("swap_candidates", "--swap-candidates")):
        if p.get(key) is not None:
            words.append(f"{flag} {p[key]}")
    words += [f"--stage1 {p['stage1']}", f"--ensemble-k {p['ensemble_k']}", f"--transfer-points {p['transfer_points']}"]
    if p.get("derive") is False:
        words.append("--train-every-run")
    words += [f"--set {k}={json.dumps(v)}" for k, v in sorted(flatten(p.get("base") or {}).items())]
    return " ".join(words + [f"--out {out}"])


def provenance(data: dict, out: Path) -> list[str]:
    """Command, versions, machines and wall time of what is on disk (each run records its own)."""
    runs = [run for per_ds in data["runs"].values() for run in per_ds.values()]
    seen = {json.dumps(run["config"].get("versions", {}), sort_keys=True) for run in runs}
    versions = "; ".join(", ".join(f"{k} {v}" for k, v in json.loads(x).items()) for x in sorted(seen)) or "n/a"
    run_wall = sum(float(r.get("wall_s", 0.0)) for run in runs for r in run["metrics"])
    cells = [c for per_ds in data["transfer"].values() for c in per_ds.values()]
    swap_wall = sum(float(c.get("wall_s", 0.0)) for c in cells)
    untimed = sum("wall_s" not in c for c in cells)
    studies = data["protocol"].get("studies") or STUDIES
    subset = "" if len(studies) == len(STUDIES) else f", restricted to the {', '.join(studies)} study (`mdpt study`)"
    return [f"- command: `{command_line(data['protocol'], out)}`{subset}",
            f"- versions (as each run recorded them): {versions}",
            f"- report written on: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} "
            f"(simulation always runs on a CPU; each run's backend is in its versions)",
            f"- wall time: training and evaluation of {len(runs)} runs {run_wall / 3600:.2f} h; {len(cells)} "
            f"transfer evaluations {swap_wall / 3600:.2f} h" + (f" ({untimed} of them untimed)" if untimed else ""),
            ""]


def _cands(p: dict) -> str:
    return f"; curves with {p['curve_candidates']} candidates" if p.get("curve_candidates") else ""


def write_report(out: str | Path, header: list[str] | None = None) -> Path:
    """Regenerate out/report/ from the runs on disk; the old report stays until the new one is whole."""
    out = Path(out)
    data = load(out)
    result = analyse(data)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix("report"), suffix=".tmp", dir=out))
    try:
        text = render(out, data, result, tmp, provenance(data, out) if header is None else header)
        write_bytes_atomic(tmp / "report.md", text.encode())
        write_json_atomic(tmp / "findings.json", json.loads(json.dumps(result, default=_plain)))
        from mdpt.artifacts import _replace_dir

        _replace_dir(tmp, out / "report")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "report" / "report.md"


def _plain(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
