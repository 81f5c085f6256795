"""The findings' verdicts: numbers per training seed gathered from a reproduction's runs and
transfer cells, one calibrated family per finding (`evaluation/rules.py`).

- finding 1, stage: per (dataset, algorithm, control), the per-seed gap guided-joint minus control
  at the first and at the last evaluation step they share, paired by seed; a curve whose two points
  were evaluated with different candidates or episodes is left out and named (`mismatched`);
- finding 1, algorithm: per (dataset, control, step), two algorithms' per-seed gaps;
- finding 2: guidance-first minus joint at their last common step, guided (the claim) and sampled
  plainly (the policies alone), per (dataset, algorithm); and every diffusion policy against the
  baselines (BC, IQL's AWR policy) trained on the same data with the same budget and seeds;
- the `arms` study: every guidance-first arm (IQL stage 1, the joint run's own critic frozen, the authors'
  stage 1) minus joint at the last step, with its own selection and with joint's; and the eta-0 control
  minus joint, re-selected by IQL and, the authors' way, by the joint critic;
- finding 3: own vs swapped guidance on the same policy seeds over every seed-spread cell (the seed
  IQR, tested by seed), and the authors' measure, each seed's variance over episodes; the same for
  the cross-algorithm swaps and the guidance ensembles.
Numbers only; the sentences are `findings.py`'s.
"""

from __future__ import annotations

import numpy as np

from mdpt.errors import MDPTError
from mdpt.evaluation import rules
from mdpt.evaluation.inference import seed_means
from mdpt.reproduction.analysis import series, swap_cells
from mdpt.reproduction.plan import (
    ARMS,
    BASELINE,
    BASELINES,
    BC,
    CONTROLS_WITH_Q,
    GF_AUTHORS,
    GF_CRITIC,
    GFDT,
    JOINT,
    JOINT_SELECTION,
    NECESSITY_CONTROLS,
    OWN,
    run_name,
    swap_group,
    swap_key,
)

ARM_LABELS = {GFDT: "guidance-first, IQL stage 1", GF_CRITIC: "guidance-first, joint's own critic frozen",
              GF_AUTHORS: "guidance-first, the authors' stage 1", BC: "eta 0"}


def _points(run: dict, variant: str) -> dict[int, tuple[np.ndarray, tuple]]:
    """step -> (scores (seeds, episodes), (candidates, episodes)) of one evaluated variant."""
    out = {}
    for step, scores, row in run["evals"].get(variant, []):
        x = np.asarray(scores, float)
        out[int(step)] = (x, ((row or {}).get("candidates"), x.shape[1]))
    return out


def _gaps(runs: dict, algo: str, control) -> dict[int, tuple[np.ndarray, tuple]] | None:
    joint, other = runs.get(run_name(algo, JOINT)), runs.get(run_name(algo, control.role))
    if joint is None or other is None:
        return None
    guided, ctrl = _points(joint, "guided"), _points(other, control.variant)
    out = {}
    for t in sorted(set(guided) & set(ctrl)):
        (g, pg), (c, pc) = guided[t], ctrl[t]
        if g.shape[0] == c.shape[0]:
            out[t] = (seed_means(g) - seed_means(c), (pg, pc))
    return out


def all_gaps(data: dict) -> dict[tuple, dict[int, tuple[np.ndarray, tuple]]]:
    """(dataset, algorithm, control) -> the per-seed gaps at every common step, each computed once for the
    stage and the algorithm families."""
    out = {}
    for ds, runs in sorted(data["runs"].items()):
        for algo in data["protocol"].algos:
            for control in NECESSITY_CONTROLS:
                if gaps := _gaps(runs, algo, control):
                    out[(ds, algo, control)] = gaps
    return out


def stage_inputs(gaps_of: dict) -> tuple[dict, list[str]]:
    curves, mismatched = {}, []
    for (ds, algo, control), gaps in gaps_of.items():
        if len(gaps) < 2:
            continue
        first, last = min(gaps), max(gaps)
        label = f"{ds} {algo}, {control.label}: step {first} -> {last}"
        if gaps[first][1] != gaps[last][1]:  # the two points were evaluated differently
            mismatched.append(label)
            continue
        curves[label] = (gaps[first][0], gaps[last][0])
    return curves, mismatched


def algorithm_inputs(gaps_of: dict) -> dict:
    contrasts = {}
    for ds in sorted({key[0] for key in gaps_of}):
        for control in NECESSITY_CONTROLS:
            names = sorted(a for (d, a, c) in gaps_of if d == ds and c == control)
            for i, a in enumerate(names):
                for b in names[i + 1:]:
                    ga, gb = gaps_of[(ds, a, control)], gaps_of[(ds, b, control)]
                    for t in sorted(set(ga) & set(gb)):
                        contrasts[f"{ds} {control.label}, step {t}: {a} - {b}"] = (ga[t][0], gb[t][0])
    return contrasts


def gfdt_inputs(data: dict, variant: str) -> dict:
    settings = {}
    for ds, runs in sorted(data["runs"].items()):
        for algo in data["protocol"].algos:
            joint, gf = runs.get(run_name(algo, JOINT)), runs.get(run_name(algo, GFDT))
            if not joint or not gf:
                continue
            sj, sg = dict(series(joint, variant)), dict(series(gf, variant))
            common = sorted(set(sj) & set(sg))
            if common:
                t = common[-1]
                settings[f"{ds} {algo} at step {t}"] = (seed_means(sg[t]), seed_means(sj[t]))
    return settings


def baseline_inputs(data: dict) -> dict:
    """(diffusion policy, baseline) per-seed scores at their last common step: every joint and guidance-first
    run against every baseline run of its dataset (same data, budget and seeds)."""
    pairs = {}
    for ds, runs in sorted(data["runs"].items()):
        for algo in data["protocol"].algos:
            for role in (JOINT, GFDT):
                policy = runs.get(run_name(algo, role))
                for base in BASELINES:
                    baseline = runs.get(run_name(base, BASELINE))
                    if not policy or not baseline:
                        continue
                    sp, sb = dict(series(policy, "guided")), dict(series(baseline, "guided"))
                    common = sorted(set(sp) & set(sb))
                    if common and sp[common[-1]].shape[0] == sb[common[-1]].shape[0]:
                        t = common[-1]
                        pairs[f"{ds} {run_name(algo, role)} - {run_name(base, BASELINE)} at step {t}"] = (
                            seed_means(sp[t]), seed_means(sb[t]))
    return pairs


def arm_inputs(data: dict) -> tuple[dict, dict]:
    """The `arms` study at the last step, every arm minus joint per seed (independent runs): ({label: (guidance-first
    arm, joint)}, {label: (eta-0 control, joint)}), each arm with its own selection and, where evaluated, with the
    joint run's (its algorithm's joint critic of the same step at the task beta; beside joint's own cell at the
    swaps' candidate count when there is one)."""
    arms, eta0 = {}, {}
    for ds, runs in sorted(data["runs"].items()):
        cells = data["transfer"].get(ds, {})
        for algo in (a for a in data["protocol"].algos if a in CONTROLS_WITH_Q):
            joint = runs.get(run_name(algo, JOINT))
            if not joint or not series(joint, "guided"):
                continue
            t, joint_final = series(joint, "guided")[-1]
            own_joint = cells.get(swap_key(run_name(algo, JOINT), t, OWN))
            joint_at_swaps = np.asarray(own_joint["scores"] if own_joint else joint_final, float)
            for role in (*ARMS, BC):
                name, into = run_name(algo, role), eta0 if role == BC else arms
                run = runs.get(name)
                own = dict(series(run, "guided")).get(t) if run else None
                if own is not None and np.shape(own)[0] == np.shape(joint_final)[0]:
                    label = "IQL re-selection" if role == BC else "own selection"
                    into[f"{ds} {algo} {ARM_LABELS[role]}, {label} - joint, step {t}"] = (
                        seed_means(own), seed_means(joint_final))
                cell = cells.get(swap_key(name, t, JOINT_SELECTION))
                if cell and np.shape(cell["scores"]) == joint_at_swaps.shape:
                    label = "the authors' re-selection (joint's critic)" if role == BC else "joint's selection"
                    into[f"{ds} {algo} {ARM_LABELS[role]}, {label} - joint, step {t}"] = (
                        seed_means(np.asarray(cell["scores"], float)), seed_means(joint_at_swaps))
    return arms, eta0


def spread_inputs(data: dict, group: str = "spread") -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Own and swapped (seeds, episodes) scores of every swap of `group` (`plan.swap_group`: the paper's
    seed-spread swaps, cross-algorithm, ensembles); cells may differ in episodes."""
    own, swapped = [], []
    for ds, runs in sorted(data["runs"].items()):
        for _name, _step, kind, o, s, _cell in swap_cells(data["transfer"].get(ds, {}), runs):
            if swap_group(kind) == group:
                own.append(o)
                swapped.append(s)
    return own, swapped


def spread_verdict(own: list[np.ndarray], swapped: list[np.ndarray]) -> dict | None:
    """The seed-IQR family of one group of swaps with its measures, and the authors' episode measure."""
    if not own or len({o.shape[0] for o in own}) > 1:  # one seed count: the seed is the unit across cells
        return None
    means_own = np.stack([seed_means(o) for o in own])
    means_swapped = np.stack([seed_means(s) for s in swapped])
    out = {**_safe(rules.spread_rule, means_own, means_swapped),
           "measures": rules.seed_iqr_measures(means_own, means_swapped), "episodes": None}
    if all(o.shape[1] >= 2 for o in own):
        out["episodes"] = {**rules.episode_spread_change(own, swapped),
                           "test": _safe(rules.episode_spread_test, own, swapped)}
    return out


def _safe(fn, *args):
    """A rule's Finding (or Test) as JSON, or why it could not be computed (e.g. too few seeds for any test)."""
    try:
        return fn(*args).to_json()
    except MDPTError as e:
        return {"word": "not computed", "why": str(e), "comparisons": 0, "verdicts": {}}


def verdicts(data: dict) -> dict:
    gaps_of = all_gaps(data)
    curves, mismatched = stage_inputs(gaps_of)
    out = {"stage": _safe(rules.stage_rule, curves) if curves else None, "stage_mismatched": mismatched,
           "algorithm": None, "gfdt": None, "gfdt_plain": None}
    if contrasts := algorithm_inputs(gaps_of):
        out["algorithm"] = _safe(rules.algorithm_rule, contrasts)
    if settings := gfdt_inputs(data, "guided"):
        out["gfdt"] = _safe(rules.gfdt_rule, settings)
    if settings := gfdt_inputs(data, "unguided"):
        out["gfdt_plain"] = _safe(rules.gfdt_rule, settings)
    if pairs := baseline_inputs(data):  # "supported": the diffusion policy scores above the baseline
        out["baselines"] = _safe(rules.gfdt_rule, pairs)
    arms, eta0 = arm_inputs(data) if "arms" in data["protocol"].studies else ({}, {})
    if arms:  # "supported": guidance-first's gain stays with the confounds taken apart
        out["arms"] = _safe(rules.gfdt_rule, arms)
    if eta0:  # "supported": without guidance in training the policy scores below joint, however it is selected
        out["arms_eta0"] = _safe(lambda x: rules.gfdt_rule(x, claimed="lower"), eta0)
    for group in ("spread", "cross", "ensemble"):
        out[group if group == "spread" else f"spread_{group}"] = spread_verdict(*spread_inputs(data, group))
    return out
