"""The reproduction's analysis, numbers only: from a reproduction directory (`load`) to the tables in
the paper's form, the necessity gaps, the transfer spreads and the costs (`analyse`, which
findings.json stores). The verdict sentences are in `findings.py`, the Markdown and figures in
`render.py`; the statistics are `evaluation/stats.py`'s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mdpt.errors import MDPTError
from mdpt.evaluation.inference import seed_means
from mdpt.evaluation.stats import diff_ci, iqr, mean_ci
from mdpt.experiments.rundir import run_status
from mdpt.io import read_json
from mdpt.reports.runs import load_run, train_wall_s
from mdpt.reproduction.plan import (
    BASELINE,
    GFDT,
    JOINT,
    METHODS,
    NECESSITY_CONTROLS,
    OWN,
    parse_swap_key,
    run_name,
    run_role,
    swap_group,
    swap_key,
)
from mdpt.reproduction.protocol import Protocol, read_protocol, transfer_cells

SWAP_GROUPS = ("spread", "cross", "ensemble", "arms")


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


def series(run: dict, variant: str) -> list[tuple[int, np.ndarray]]:
    return [(s, x) for s, x, _ in run["evals"].get(variant, [])]


def load(out: Path) -> dict:
    """A reproduction directory as data: the protocol, {dataset: {run name: loaded run}} of the finished
    runs, the transfer cells and data statistics of every dataset, the planned run keys, those trained
    but not evaluated yet (`trained`) and those finished whose files cannot be read (`unreadable`: key ->
    the reason; e.g. a copy without the metrics). Every other planned run is not finished yet."""
    saved = read_protocol(out)
    runs: dict[str, dict] = {}
    trained: list[str] = []
    unreadable: dict[str, str] = {}
    for key in saved["runs"]:
        dataset, name = key.split("/", 1)
        path = out / "runs" / key
        status = run_status(path)
        if status == "trained":  # trained elsewhere, its evaluations still to come
            trained.append(key)
        elif status == "done":
            try:
                runs.setdefault(dataset, {})[name] = load_run(path)
            except MDPTError as e:
                unreadable[key] = str(e)
    transfer = {}
    for path in sorted((out / "transfer").glob("*.json")) if (out / "transfer").exists() else []:
        transfer[path.stem] = transfer_cells(path)
    datasets = {path.stem: read_json(path, "dataset statistics")
                for path in (sorted((out / "data").glob("*.json")) if (out / "data").exists() else [])}
    return {"protocol": Protocol.from_json(saved["protocol"]), "runs": runs, "transfer": transfer,
            "data": datasets, "planned": saved["runs"], "trained": trained, "unreadable": unreadable}


def gfdt_table(runs: dict, algos) -> list[dict]:
    rows = []
    for algo in algos:
        joint, gf = runs.get(run_name(algo, JOINT)), runs.get(run_name(algo, GFDT))
        if not joint or not gf or not series(joint, "guided") or not series(gf, "guided"):
            continue
        sj, sg = series(joint, "guided"), series(gf, "guided")
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
            "peak_mib": (_peak_mib(js), _peak_mib(gs)) if comparable else (None, None),
            "programs": (program_size(js), program_size(gs)),
            "train_wall_s": (train_wall_s(joint), train_wall_s(gf)), "final_step": int(sg[-1][0]),
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
    sa, sb = dict(series(a, variant)), dict(series(b, variant))
    common = sorted(set(sa) & set(sb))
    return (common[-1], sa[common[-1]], sb[common[-1]]) if common else None


def _peak_mib(summary):
    b = summary.get("peak_memory_bytes")
    return b / 2**20 if b else None


def _ms(summary):
    s = summary.get("seconds_per_step")
    return 1e3 * s if s else None


def necessity(runs: dict, algos) -> dict:
    """Per algorithm and control: the gap guided-joint minus control at every evaluation step."""
    out = {}
    for algo in algos:
        joint = runs.get(run_name(algo, JOINT))
        if not joint:
            continue
        guided = dict(series(joint, "guided"))
        for label, role, variant in NECESSITY_CONTROLS:
            control_run = runs.get(run_name(algo, role))
            if control_run is None:
                continue
            control = dict(series(control_run, variant))
            common = sorted(set(guided) & set(control))
            if common:
                paired = role == JOINT  # the same policy seeds, sampled two ways
                out.setdefault(algo, {})[label] = [(t, *diff_ci(guided[t], control[t], paired)) for t in common]
    return out


def final_spread(runs: dict, methods_only: bool = False) -> dict | None:
    """The last-iterate mean score of every learning curve (each run x inference variant; with
    `methods_only` the guided curves of the joint and guidance-first runs) and their range: a dataset
    on which the methods all end within a few points cannot tell them apart."""
    finals = {f"{name} {variant}": float(np.mean(seed_means(series[-1][1])))
              for name, run in sorted(runs.items()) for variant, series in sorted(run["evals"].items())
              if series and (not methods_only or (variant == "guided" and run_role(name) in METHODS))}
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


def swap_cells(cells: dict, runs: dict):
    """(run name, step, swap kind, own scores, swapped scores, cell) of every swap whose own side is known:
    its `own` cell (the same count and seed as the swap) when evaluated, else the run's guided curve."""
    for key, cell in cells.items():
        name, step, kind = parse_swap_key(key)
        if kind == OWN:
            continue
        own_cell = cells.get(swap_key(name, step, OWN))
        run = runs.get(name)
        own = own_cell["scores"] if own_cell else dict(series(run, "guided")).get(step) if run else None
        if own is None or np.asarray(own).shape != np.asarray(cell["scores"]).shape:
            continue
        yield name, step, kind, np.asarray(own, float), np.asarray(cell["scores"], float), cell


def transfer(cells: dict, runs: dict) -> tuple[dict, dict[str, list[tuple[np.ndarray, np.ndarray]]]]:
    """Own vs swapped scores per cell, the spread change, cross-algorithm means, ensembles; and the
    (own, swapped) scores of the cells by `_swap_group`."""
    pairs = {group: [] for group in SWAP_GROUPS}
    rows = {group: [] for group in SWAP_GROUPS}
    for name, step, kind, own, swapped, cell in swap_cells(cells, runs):
        group = swap_group(kind)
        pairs[group].append((own, swapped))
        rows[group].append({"policy": name, "step": step, "swap": kind, "own": mean_ci(own),
                            "swapped": mean_ci(swapped), "own_iqr": iqr(seed_means(own)),
                            "swapped_iqr": iqr(seed_means(swapped)), "selector": cell.get("selector"),
                            "critic": cell.get("critic")})
    summary = {"swaps": rows["spread"], "cross": rows["cross"], "ensembles": rows["ensemble"],
               "cells": len(pairs["spread"]), "own_cells": sum(parse_swap_key(key)[2] == OWN for key in cells)}
    if rows["arms"]:  # the `arms` study's selections
        summary["arms"] = rows["arms"]
    return summary, pairs


PROFILE_TAUS = tuple(range(0, 101, 5))  # normalized-score thresholds of the performance profiles


def across_tasks(data: dict) -> dict | None:
    """rliable's aggregates of the last guided evaluation of every method (joint, guidance-first and baseline runs)
    over the datasets where all of them finished with one seed count: IQM, mean, median and optimality gap with
    stratified-bootstrap intervals, each algorithm's P(guidance-first > joint), and the score distributions."""
    from mdpt.evaluation.aggregate import improvement, interval_estimates

    finals: dict[str, dict[str, np.ndarray]] = {}
    for ds, runs in data["runs"].items():
        for name, run in runs.items():
            if run_role(name) in (*METHODS, BASELINE) and series(run, "guided"):
                finals.setdefault(name, {})[ds] = seed_means(series(run, "guided")[-1][1])
    if not finals:
        return None
    tasks = sorted(set.intersection(*(set(m) for m in finals.values())))
    if not tasks or len({x.shape for m in finals.values() for ds, x in m.items() if ds in tasks}) != 1:
        return None
    scores = {name: np.stack([m[ds] for ds in tasks], axis=1) for name, m in sorted(finals.items())}
    better = {}
    for algo in data["protocol"].algos:
        joint, gf = scores.get(run_name(algo, JOINT)), scores.get(run_name(algo, GFDT))
        if joint is not None and gf is not None:
            better[f"{run_name(algo, GFDT)} over {run_name(algo, JOINT)}"] = improvement(gf, joint)
    taus = np.asarray(PROFILE_TAUS, float)
    return {"tasks": tasks, "runs": int(next(iter(scores.values())).shape[0]),
            "estimates": interval_estimates(scores), "improvement": better, "taus": list(PROFILE_TAUS),
            "profiles": {k: [float(np.mean(x > t)) for t in taus] for k, x in scores.items()}}


def analyse(data: dict) -> dict:
    algos = data["protocol"].algos
    per, pairs = {}, {group: [] for group in SWAP_GROUPS}
    for ds, runs in sorted(data["runs"].items()):
        moved, ds_pairs = transfer(data["transfer"].get(ds, {}), runs)
        for group, cells in ds_pairs.items():
            pairs[group] += cells
        per[ds] = {"gfdt": gfdt_table(runs, algos), "necessity": necessity(runs, algos), "transfer": moved,
                   "data": data_scores(data.get("data", {}).get(ds)), "spread": final_spread(runs),
                   "methods_spread": final_spread(runs, methods_only=True), "values": critic_values(runs)}
    return {"datasets": per, "spread_cells": len(pairs["spread"]), "across_tasks": across_tasks(data),
            "swap_candidates": data["protocol"].swap_candidates}
