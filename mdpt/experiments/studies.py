"""The paper's three studies, one command each (`mdpt study necessity|gfdt-vs-joint|transfer`), and
the all-pairs guidance-transfer matrix (`transfer_matrix`, used by the quickstart).

A study is `mdpt reproduce` (experiments/reproduce.py) on one dataset restricted to that study's
runs: `necessity` trains the joint and guidance-first policies and the eta-0 and random-critic
controls; `gfdt-vs-joint` the joint and guidance-first policies against the stage-1 guidance;
`transfer` those plus an independent guidance and the step-matched swaps. The layout and the
report are the reproduction's (out/runs/<dataset>/<run>/, out/transfer/, out/report/); a second
call resumes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from mdpt.errors import MDPTError
from mdpt.experiments.reproduce import STUDIES

# ----------------------------------------------------------------------------- running

LOG = logging.getLogger("mdpt")


def make_config(dataset: str, settings: dict, overrides: dict | None = None, sets: list[str] | None = None):
    """RunConfig from study settings over a base mapping (e.g. --config) and `--set key=value` items."""
    from mdpt.experiments.config import load_config

    return load_config(sets=sets, base={"dataset": dataset, **(overrides or {})}, top=settings)


def run_all(configs: dict[str, object], runs_dir: Path, log: Callable | None = None, progress: bool = True,
            dataset=None) -> dict[str, dict]:
    """Run (or resume) each named config in runs_dir/<name>; returns name -> summary.

    Evaluation episodes are capped by each config's `eval_max_steps`.
    """
    log = log or LOG.info
    from mdpt.experiments.runner import Run

    summaries = {}
    for i, (name, config) in enumerate(configs.items(), 1):
        log(f"[{i}/{len(configs)}] training {name} ({config.algo or config.guidance_kind}, "
            f"{config.mode if config.algo else 'guidance'}, {config.steps} steps, {config.seeds} seed(s))")
        run = Run(runs_dir / name, config, resume=True, progress=progress, log=log, dataset=dataset)
        summaries[name] = run.execute()
        if dataset is None:
            dataset = getattr(run, "dataset", None)
    return summaries


def _algos(algos) -> list[str]:
    from mdpt.policies.module import POLICY_ALGOS

    out = [a.strip() for a in (algos.split(",") if isinstance(algos, str) else algos) if a.strip()]
    if not out:
        raise MDPTError("no algorithms given; pass e.g. --algos dql,idql")
    for a in out:
        if a not in POLICY_ALGOS:
            raise MDPTError(f"unknown algo {a!r}; use any of: {', '.join(POLICY_ALGOS)}")
    return out


@dataclass
class StudyOptions:
    dataset: str
    out: Path
    algos: list[str]
    steps: int = 100_000
    seeds: int = 3
    eval_every: int = 0
    eval_episodes: int = 10
    overrides: dict | None = None  # settings under every run (e.g. from a YAML file)
    sets: tuple[str, ...] = ()
    eval_max_steps: int | None = None
    allow_data_mismatch: bool = False
    progress: bool = True
    stage1: str = "iql"
    unfreeze_at: int | None = None

    def protocol(self, study: str):
        """The reproduction protocol restricted to one study on one dataset."""
        from mdpt import presets
        from mdpt.experiments.config import RunConfig, apply_overrides
        from mdpt.experiments.reproduce import Protocol
        from mdpt.settings import unalias

        base = presets.merge(unalias(RunConfig, dict(self.overrides or {}), "--config"),
                             unalias(RunConfig, apply_overrides({}, self.sets), "--set"))
        if self.allow_data_mismatch:
            base["allow_data_mismatch"] = True
        every = self.eval_every or self.steps
        return Protocol(datasets=(self.dataset,), algos=tuple(self.algos), seeds=self.seeds, steps=self.steps,
                        eval_every=min(every, self.steps), curve_episodes=self.eval_episodes,
                        final_episodes=self.eval_episodes, eval_max_steps=self.eval_max_steps, stage1=self.stage1,
                        unfreeze_at=self.unfreeze_at, ensemble_k=min(3, self.seeds), studies=(study,),
                        base=base).validate()


def run_study(name: str, o: StudyOptions, log: Callable | None = None) -> Path:
    """One of the paper's studies on one dataset: the reproduction's protocol restricted to the
    runs (and guidance swaps) that study needs, with the same report."""
    log = log or LOG.info
    from mdpt.evaluation.api import MAX_EPISODES
    from mdpt.experiments.reproduce import Reproduction
    from mdpt.settings import check_count

    if name not in STUDIES:
        raise MDPTError(f"unknown study {name!r}; use one of: {', '.join(STUDIES)}")
    if o.seeds < 1 or o.steps < 1:
        raise MDPTError("--steps and --seeds must be >= 1")
    check_count(o.eval_episodes, "--eval-episodes", 1, MAX_EPISODES)  # the protocol would name reproduce's flag
    return Reproduction(o.protocol(name), o.out, log=log, progress=o.progress).execute()


# ----------------------------------------------------------------------------- transfer


@dataclass
class TransferSource:
    """A policy (S seeds) and/or a guidance module (S seeds) to cross. Either path may be None."""

    policy_label: str | None
    policy_dir: Path | None
    guidance_label: str | None
    guidance_dir: Path | None


def _guidance_label(guidance_dir: Path) -> str:
    from mdpt.artifacts import read_meta

    meta = read_meta(guidance_dir, "guidance")
    return str(meta.get("kind", "guidance"))


def _roll_seeds(art, shift: int):
    from mdpt.artifacts import Artifact

    if shift == 0:
        return art
    params = jax.tree.map(lambda x: np.roll(np.asarray(x), -shift, axis=0), art.params)
    seeds = list(np.roll(np.asarray(art.meta.get("seeds", [])), -shift)) if art.meta.get("seeds") else []
    return Artifact(art.module, params, art.normalizer, {**art.meta, "seeds": [int(s) for s in seeds]}, art.path)


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
    p_names = [f"{lab}-s{sd}" for lab, art in pols for sd in art.meta["seeds"]]
    g_names = [f"{lab}-s{sd}" for lab, art in guis for sd in art.meta["seeds"]]
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
                for i, p_seed in enumerate(p_art.meta["seeds"]):
                    j = (i + k) % g_art.num_seeds if g_art.num_seeds > 1 else 0
                    pn, gn = f"{p_lab}-s{p_seed}", f"{g_lab}-s{g_art.meta['seeds'][j]}"
                    cells[(pn, gn)] = [scores[i].tolist()]
                    returns[(pn, gn)] = [result.returns[i].tolist()]
                    if own is not None and g_art.path is not None and Path(g_art.path).resolve() == own \
                            and (g_art.num_seeds == 1 or i == j):
                        diagonal.append([pn, gn])
                    if agent.record.get("mismatch_override"):
                        mismatched.append([pn, gn])
    matrix = [[cells[(pn, gn)] for gn in g_names] for pn in p_names]
    own_set = {tuple(x) for x in diagonal}
    p_group = {f"{lab}-s{sd}": lab for lab, art in pols for sd in art.meta["seeds"]}
    g_group = {f"{lab}-s{sd}": lab for lab, art in guis for sd in art.meta["seeds"]}
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
    t = transfer_matrix(sources, selector, config.eval.reference, episodes, 1000 + config.seed, max_steps,
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


def dumps(obj) -> str:
    return json.dumps(obj, indent=2)
