"""The all-pairs guidance-transfer matrix (`transfer_matrix`, used by the quickstart): every policy
seed with every guidance seed, and across algorithms, written as a directory `mdpt report` reads
(`write_transfer`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from mdpt.errors import MDPTError
from mdpt.seeding import EVAL_ENV_SEED

LOG = logging.getLogger("mdpt")


@dataclass
class TransferSource:
    """A policy (S seeds) and/or a guidance module (S seeds) to cross. Either path may be None."""

    policy_label: str | None
    policy_dir: Path | None
    guidance_label: str | None
    guidance_dir: Path | None


def _roll_seeds(art, shift: int):
    from mdpt.artifacts import Artifact

    if shift == 0:
        return art
    params = jax.tree.map(lambda x: np.roll(np.asarray(x), -shift, axis=0), art.params)
    seeds = [int(s) for s in np.roll(np.asarray(art.seeds), -shift)]
    return Artifact(art.module, params, art.normalizer, {**art.meta, "seeds": seeds}, art.path)


def _own_guidance(policy_meta: dict) -> Path | None:
    rec = policy_meta.get("trained_with_guidance") or {}
    return Path(rec["path"]).resolve() if rec.get("path") else None


def evaluate_scores(agent, env, episodes: int, seed: int, max_steps: int | None, reference: str,
                    attrs: dict | None):
    """(EvalResult, scores (S, E)) of an agent for all its policy seeds at once."""
    from mdpt.evaluation.api import evaluate_agent

    result = evaluate_agent(agent, env, episodes, seed=seed, max_steps=max_steps)
    return result, result.scores(reference, attrs)


def transfer_matrix(sources: list[TransferSource], selector, reference: str = "d4rl", episodes: int = 10,
                    seed: int = 1000, max_steps: int | None = None, allow_mismatch: bool = False,
                    attrs: dict | None = None, log: Callable | None = None) -> dict:
    """Evaluate every policy seed with every guidance seed; returns the transfer.json object.

    With S policy seeds and S guidance seeds, one evaluation per (policy group, guidance group,
    shift k) runs all S policy seeds at once, seed i with guidance seed (i + k) mod S.
    """
    log = log or LOG.info
    from mdpt.agent import Agent
    from mdpt.artifacts import load_guidance, load_policy
    from mdpt.data.registry import env_spec_for
    from mdpt.evaluation import stats

    pols = [(s.policy_label, load_policy(s.policy_dir)) for s in sources if s.policy_dir is not None]
    guis = [(s.guidance_label, load_guidance(s.guidance_dir)) for s in sources if s.guidance_dir is not None]
    if not pols or not guis:
        raise MDPTError("transfer needs at least one policy and one guidance module")
    env = env_spec_for(pols[0][1].meta["dataset"]["env_id"])
    p_names = [f"{lab}-s{sd}" for lab, art in pols for sd in art.seeds]
    g_names = [f"{lab}-s{sd}" for lab, art in guis for sd in art.seeds]
    if len(set(p_names)) != len(p_names) or len(set(g_names)) != len(g_names):
        raise MDPTError("transfer: two policies (or guidance modules) share a label; give them distinct names")
    cells: dict[tuple[str, str], list] = {}
    returns: dict[tuple[str, str], list] = {}
    diagonal, mismatched = [], []
    selectors: dict[str, str] = {}
    total = sum(1 if g.num_seeds == 1 else g.num_seeds for _, p in pols for _, g in guis)
    done = 0
    for p_lab, p_art in pols:
        own = _own_guidance(p_art.meta)
        for g_lab, g_art in guis:
            shifts = range(g_art.num_seeds) if g_art.num_seeds == p_art.num_seeds else [0]
            if g_art.num_seeds not in (1, p_art.num_seeds):
                raise MDPTError(f"guidance {g_art.path} holds {g_art.num_seeds} seeds, policy {p_art.path} "
                                f"{p_art.num_seeds}; they cannot be paired seed by seed")
            agent = None
            for k in shifts:
                done += 1
                rolled = _roll_seeds(g_art, k)
                # one compiled agent per (policy, guidance) pair; a seed shift only swaps parameters
                agent = Agent(p_art, rolled, selector, allow_mismatch) if agent is None \
                    else agent.with_params(p_art.params, rolled.params)
                selectors[f"{p_lab} x {g_lab}"] = f"{agent.selector.describe()} ({agent.critic_used} critic)"
                result, scores = evaluate_scores(agent, env, episodes, seed, max_steps, reference, attrs)
                log(f"  [{done}/{total}] policy {p_lab} x guidance {g_lab} (seed shift {k}): "
                    f"mean score {scores.mean():.1f}")
                g_seeds = g_art.seeds
                for i, p_seed in enumerate(p_art.seeds):
                    j = (i + k) % len(g_seeds) if len(g_seeds) > 1 else 0
                    pn, gn = f"{p_lab}-s{p_seed}", f"{g_lab}-s{g_seeds[j]}"
                    cells[(pn, gn)] = [scores[i].tolist()]
                    returns[(pn, gn)] = [result.returns[i].tolist()]
                    if own is not None and g_art.path is not None and Path(g_art.path).resolve() == own \
                            and (g_art.num_seeds == 1 or i == j):
                        diagonal.append([pn, gn])
                    if agent.record.get("mismatch_override"):
                        mismatched.append([pn, gn])
    matrix = [[cells[(pn, gn)] for gn in g_names] for pn in p_names]
    own_set = {tuple(x) for x in diagonal}
    p_group = {f"{lab}-s{sd}": lab for lab, art in pols for sd in art.seeds}
    g_group = {f"{lab}-s{sd}": lab for lab, art in guis for sd in art.seeds}
    # own guidance group of each policy group (from the diagonal)
    own_group = {p_group[p]: g_group[g] for p, g in diagonal}

    def flat(keys):
        return [np.asarray(cells[k]) for k in keys]

    diag_keys = [k for k in cells if k in own_set]
    seed_swap = [k for k in cells if k not in own_set and own_group.get(p_group[k[0]]) == g_group[k[1]]]
    cross = [k for k in cells if own_group.get(p_group[k[0]]) not in (None, g_group[k[1]])]
    summary: dict = {}
    if diag_keys:
        summary["own"] = _brief(stats, flat(diag_keys))
    if seed_swap:
        summary["seed_swapped"] = _brief(stats, flat(seed_swap))
        if diag_keys:
            summary["seed_swap_iqr_change"] = stats.relative_iqr_change(
                np.concatenate([c.reshape(-1) for c in flat(diag_keys)]),
                np.concatenate([c.reshape(-1) for c in flat(seed_swap)]))
    cross_rows = []

    def pooled_mean(keys):
        return float(np.mean(np.concatenate([c.reshape(-1) for c in flat(keys)])))

    for pg, gg in sorted({(p_group[k[0]], g_group[k[1]]) for k in cross}):
        here = [k for k in cross if (p_group[k[0]], g_group[k[1]]) == (pg, gg)]
        # the two settings being combined, each with its own guidance: pg's and the one whose own is gg
        base = {}
        for keys in ([k for k in diag_keys if p_group[k[0]] == pg], [k for k in diag_keys if g_group[k[1]] == gg]):
            if keys:
                base[f"{p_group[keys[0][0]]}+{g_group[keys[0][1]]}"] = pooled_mean(keys)
        stronger = max(base, key=base.get) if base else None
        mean = pooled_mean(here)
        ref = base.get(stronger)
        cross_rows.append({"policy": pg, "guidance": gg, "mean": mean, "own_means": base, "stronger": stronger,
                           "stronger_mean": ref, "relative_to_stronger": (mean - ref) / abs(ref) if ref else None})
    summary["cross_algorithm"] = cross_rows
    return {"dataset": pols[0][1].meta["dataset"].get("id") or pols[0][1].meta["dataset"].get("source"),
            "reference": reference, "policies": p_names, "guidances": g_names, "scores": matrix,
            "returns": [[returns[(pn, gn)] for gn in g_names] for pn in p_names],
            "diagonal": diagonal, "mismatched": mismatched, "episodes": episodes, "max_steps": max_steps,
            "selector": {"given": dataclasses.asdict(selector), "resolved": selectors}, "summary": summary,
            "policy_dirs": {lab: str(a.path) for lab, a in pols}, "guidance_dirs": {lab: str(a.path) for lab, a in guis}}


def _brief(stats, cells: list[np.ndarray]) -> dict:
    flat = np.concatenate([c.reshape(-1) for c in cells])
    return {"cells": len(cells), "mean": float(flat.mean()), "median": float(np.median(flat)),
            "iqm": float(stats.iqm(flat)), "iqr": float(stats.iqr(flat)),
            "cell_mean_iqr": float(stats.iqr(np.array([c.mean() for c in cells]))) if len(cells) > 1 else None}


def write_transfer(sources: list[TransferSource], out_dir: Path, config, episodes: int,
                   max_steps: int | None = None, allow_mismatch: bool = False, log: Callable | None = None) -> Path:
    """Evaluate the transfer matrix and write it as a report-readable directory.

    `config` (a RunConfig of one of the policies' runs) gives the selector, reference and dataset.
    """
    log = log or LOG.info
    from mdpt.agent import SelectorConfig
    from mdpt.io import write_bytes_atomic, write_json_atomic

    # each guidance scores with its own rule and beta, each policy samples with its own candidates
    selector = SelectorConfig(cfg_weight=config.selector.cfg_weight, critic=config.selector.critic)
    attrs = None
    if config.eval.reference == "dataset":
        from mdpt.data.load import load_dataset

        attrs = load_dataset(config.dataset, env=config.env).attrs
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t = transfer_matrix(sources, selector, config.eval.reference, episodes, EVAL_ENV_SEED, max_steps,
                        allow_mismatch or config.allow_data_mismatch, attrs, log)
    t["dataset"] = config.dataset
    write_json_atomic(out_dir / "transfer.json", t)
    # a run-directory shell so that report.load_run reads transfer.json
    write_json_atomic(out_dir / "config.json", {"algo": "transfer", "mode": "joint", "dataset": config.dataset,
                                                "guidance_kind": "mixed", "seeds": config.seeds,
                                                "steps": config.steps})
    write_json_atomic(out_dir / "summary.json", {"name": out_dir.name, "algo": "transfer", "mode": "joint",
                                                 "dataset": config.dataset, "reference": config.eval.reference,
                                                 "final": {}, "best": {}, "seconds_per_step": None,
                                                 "peak_memory_bytes": None})
    write_bytes_atomic(out_dir / "metrics.jsonl", b"")
    s = t["summary"]
    if "own" in s and "seed_swapped" in s:
        log(f"transfer: IQR own guidance {s['own']['iqr']:.1f}, seed-swapped {s['seed_swapped']['iqr']:.1f} "
            f"(change {100 * s['seed_swap_iqr_change']:+.0f}%)")
    for row in s["cross_algorithm"]:
        ref = "" if row["stronger"] is None else f" (stronger own setting {row['stronger']}: {row['stronger_mean']:.1f})"
        log(f"transfer: {row['policy']} policy with {row['guidance']} guidance: {row['mean']:.1f}{ref}")
    if t["mismatched"]:
        log(f"transfer: {len(t['mismatched'])} cell(s) pair modules trained on different data (marked)")
    return out_dir
