"""`mdpt evaluate`, `mdpt study`, `mdpt sweep`, `mdpt report` and `mdpt quickstart`."""

from __future__ import annotations

import json
from pathlib import Path

from mdpt.errors import MDPTError


def register(subparsers) -> None:
    from mdpt.agent import MAX_CANDIDATES, SELECTION_LIMITS
    from mdpt.cli.flags import SEED, count, number
    from mdpt.evaluation.api import MAX_ENV_STEPS, MAX_EPISODES
    from mdpt.experiments.config import MAX_SEEDS, MAX_STEPS
    from mdpt.reproduction.protocol import STUDIES

    steps, seed_index = count(1, MAX_STEPS), count(0, MAX_SEEDS - 1, "an index into the module's seeds")
    e = subparsers.add_parser("evaluate", help="evaluate a saved policy (all seeds in parallel), with or without guidance",
                              description="Unset selection settings come from the modules: the guidance's own rule "
                                          "and beta, the policy's own candidate count and temperature (presets).")
    e.add_argument("--policy", required=True, help="policy directory (or a run directory holding policy/)")
    e.add_argument("--guidance", nargs="+", metavar="DIR",
                   help="guidance module directory; several: an ensemble (see --guidance-ensemble)")
    e.add_argument("--policy-seed", type=seed_index, help="evaluate only this seed index of the policy")
    e.add_argument("--guidance-seed", type=seed_index, help="use this seed index of the guidance for every policy seed")
    e.add_argument("--selector", choices=["softmax", "argmax", "none"],
                   help="default: the guidance's own rule (softmax) with --guidance, none without")
    e.add_argument("--beta", type=number(0, SELECTION_LIMITS["beta"]), help="softmax inverse temperature (default: the guidance's own)")
    e.add_argument("--candidates", type=count(1, MAX_CANDIDATES), help="candidate actions per state (default: the policy's own)")
    e.add_argument("--temperature", type=number(0, SELECTION_LIMITS["temperature"]), help="sampling temperature (default: the policy's own)")
    e.add_argument("--cfg-weight", type=number(-SELECTION_LIMITS["cfg_weight"], SELECTION_LIMITS["cfg_weight"]),
                   default=1.0, help="cfg policies: guidance weight (default: 1.0)")
    e.add_argument("--critic", choices=["target", "online"], default="target",
                   help="score candidates with the target (Polyak) critic or the online one (default: target)")
    e.add_argument("--guidance-ensemble", choices=["mean", "min"], default="mean",
                   help="several guidance modules: combine their min-Q by mean or min (default: mean)")
    e.add_argument("--episodes", type=count(1, MAX_EPISODES), default=10)
    e.add_argument("--seed", type=SEED, default=0, help="env seeds are SEED..SEED+E-1")
    e.add_argument("--max-steps", type=count(1, MAX_ENV_STEPS), help="cap each episode at this many env steps (default: the env's limit)")
    e.add_argument("--reference", choices=["d4rl", "dataset", "raw"], default=None,
                   help="score reference (default: the policy's dataset's preset: dataset for Minari ids, else d4rl)")
    e.add_argument("--allow-data-mismatch", action="store_true",
                   help="combine a guidance module trained on other data (marked in the results)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=run_evaluate)

    s = subparsers.add_parser("study", help="one of the paper's three studies (or the arms that take guidance-first's "
                                            "confounds apart), end to end, with a report")
    s.add_argument("study", choices=list(STUDIES))
    s.add_argument("--dataset", required=True, help="dataset id or HDF5 path")
    s.add_argument("--algos", default="dql,idql", help="comma-separated algorithms (default dql,idql)")
    s.add_argument("--steps", type=steps, default=100_000)
    s.add_argument("--seeds", type=count(1, MAX_SEEDS), default=3)
    s.add_argument("--eval-every", type=count(0, MAX_STEPS), default=0, help="evaluate every K steps (0: at the end only)")
    s.add_argument("--eval-episodes", type=count(1, MAX_EPISODES), default=10)
    s.add_argument("--eval-max-steps", type=count(1, MAX_ENV_STEPS), help="cap evaluation episodes at this many env steps")
    s.add_argument("--config", help="YAML file of base RunConfig settings")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    s.add_argument("--allow-data-mismatch", action="store_true")
    s.add_argument("--stage1", choices=["iql", "authors"], default="iql",
                   help="guidance-first's stage-1 guidance: iql, or the paper's dql-critic (default: iql)")
    s.add_argument("--unfreeze-at", type=steps, help="step at which guidance-first's guidance trains on")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--out", required=True, help="study directory")
    s.set_defaults(func=run_study_cmd)

    w = subparsers.add_parser("sweep", help="a grid of runs from a YAML file, in local processes or on Ray")
    w.add_argument("spec", metavar="CONFIG.yaml")
    w.add_argument("--launcher", choices=["local", "ray"], default="local")
    w.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    w.add_argument("--workers", type=count(1, 1024), default=1, help="trials run at once")
    w.add_argument("--cpus-per-trial", type=number(0.01, 1024), default=1.0, help="Ray: CPUs each trial asks for (default: 1)")
    w.add_argument("--gpus-per-trial", type=number(0, 64), default=0.0,
                   help="Ray: GPUs (or a fraction) each trial asks for; its JAX then takes no more than that share "
                        "of the GPU's memory and may not fall back to the CPU (default: 0, CPU only)")
    w.add_argument("--out", required=True)
    w.set_defaults(func=run_sweep_cmd)

    r = subparsers.add_parser("report", help="markdown + figures over finished run directories")
    r.add_argument("runs", nargs="+", metavar="RUN_DIR")
    r.add_argument("--out", required=True)
    r.set_defaults(func=run_report)

    q = subparsers.add_parser("quickstart", help="the method end to end on a small CPU budget (~2 min)")
    q.add_argument("--out", default="mdpt-quickstart")
    q.add_argument("--steps", type=steps, help="policy and guidance gradient steps")
    q.add_argument("--seeds", type=count(1, MAX_SEEDS), help="vmapped seeds")
    q.add_argument("--dataset", help="a dataset id or path instead of the default (the data dir's hopper data, else "
                                     "the shipped MuJoCo hopper-medium-v2); a shipped dataset by its id, e.g. bullet-hopper-medium-v0")
    q.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (for tests)")
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=run_quickstart)


# ----------------------------------------------------------------------------- evaluate


def _dataset_attrs(meta: dict) -> dict:
    from mdpt.data.load import load_dataset

    rec = meta.get("dataset") or {}
    for ref in (rec.get("source"), rec.get("id")):
        if not ref:
            continue
        if ref == rec.get("source") and not Path(ref).exists():
            continue
        try:
            return load_dataset(ref, env=rec.get("env_id"), download=False).attrs
        except MDPTError:
            continue
    raise MDPTError(f"reference 'dataset' needs the policy's dataset ({rec.get('id') or rec.get('source')}); "
                    "it was not found: set MDPT_DATA_DIR, or use --reference d4rl")


def _selector_from_args(args):
    from mdpt.agent import SelectorConfig

    return SelectorConfig(args.selector, args.beta, args.candidates, args.temperature, args.cfg_weight, args.critic,
                          args.guidance_ensemble)


def run_evaluate(args) -> int:
    import numpy as np

    from mdpt import presets
    from mdpt.artifacts import load_guidance, load_policy
    from mdpt.evaluation.api import evaluate

    if args.episodes < 1:
        raise MDPTError(f"--episodes must be >= 1, got {args.episodes}")
    selector = _selector_from_args(args)
    policy = load_policy(args.policy, args.policy_seed)
    guidance = [load_guidance(g, args.guidance_seed) for g in args.guidance or []]
    if selector.selector == "none":
        guidance = []
    reference = args.reference or presets.task_reference((policy.meta.get("dataset") or {}).get("id"))
    attrs = _dataset_attrs(policy.meta) if reference == "dataset" else None
    ev = evaluate(policy, guidance or None, selector=selector, episodes=args.episodes, seed=args.seed,
                  max_steps=args.max_steps, reference=reference, dataset_attrs=attrs,
                  allow_mismatch=args.allow_data_mismatch)
    result, scores, summary, rec = ev.result, ev.scores, ev.summary(), ev.record
    seeds = policy.seeds
    mismatch = bool(rec.get("mismatch_override"))
    if args.json:
        print(json.dumps({"policy": str(policy.path), "guidance": [str(g.path) for g in guidance] or None,
                          "policy_seeds": seeds, "guidance_seeds": [g.meta.get("seeds") for g in guidance] or None,
                          "env": result.env.env_id, "selector": rec["selector"], "selector_sources": rec["selector_sources"],
                          "critic": rec.get("critic"), "reference": ev.reference,
                          "mismatch_override": mismatch, "episodes": args.episodes, "seed": args.seed,
                          "max_steps": args.max_steps, "returns": result.returns.tolist(),
                          "scores": scores.tolist(), "lengths": result.lengths.tolist(),
                          "per_seed_mean": scores.mean(axis=1).tolist(), "summary": summary}))
        return 0
    from mdpt.agent import SelectorConfig

    sel = SelectorConfig(**rec["selector"])
    if guidance:
        names = ", ".join(str(g.path) for g in guidance)
        what = f"guidance {names}" + (f" (ensemble: {sel.ensemble})" if len(guidance) > 1 else "")
    else:
        what = "no guidance (plain diffusion sampling)"
    print(f"policy {policy.path} with {what} on {result.env.env_id}: {args.episodes} episode(s) per seed"
          + (" [guidance trained on other data: --allow-data-mismatch]" if mismatch else ""))
    src = rec["selector_sources"]
    print(f"preset: {sel.describe()}" + (f" [critic: {rec['critic']}]" if guidance else "")
          + f" (rule/beta: {src['selector']}; candidates/temperature: {src['candidates']})")
    for i, (s, row) in enumerate(zip(seeds, scores, strict=True)):
        print(f"  seed {s}: mean normalized score {row.mean():.1f} (mean return {result.returns[i].mean():.1f})")
    print(f"all seeds: mean {summary['mean']:.1f} [{summary['mean_ci_low']:.1f}, {summary['mean_ci_high']:.1f}], "
          f"IQM {summary['iqm']:.1f}, median {summary['median']:.1f}, IQR {summary['iqr']:.1f}, "
          f"seed std {summary['seed_std']:.1f} (95% bootstrap CI over {summary['ci_method']}; "
          f"reference {ev.reference}; {len(seeds)} seeds x {args.episodes} episodes)")
    if not np.all(result.finished):
        print(f"note: {int((~result.finished).sum())} episode(s) were cut at --max-steps {args.max_steps}")
    return 0


# ----------------------------------------------------------------------------- study / sweep / report


def run_study_cmd(args) -> int:
    from mdpt.experiments.config import RunConfig, load_yaml
    from mdpt.reproduction.studies import StudyOptions, parse_algos, run_study
    from mdpt.settings import unalias

    o = StudyOptions(dataset=args.dataset, out=Path(args.out), algos=parse_algos(args.algos), steps=args.steps,
                     seeds=args.seeds, eval_every=args.eval_every, eval_episodes=args.eval_episodes,
                     overrides=unalias(RunConfig, load_yaml(args.config), args.config) if args.config else None, sets=tuple(args.set),
                     eval_max_steps=args.eval_max_steps, allow_data_mismatch=args.allow_data_mismatch,
                     progress=not args.no_progress, stage1=args.stage1, unfreeze_at=args.unfreeze_at)
    path = run_study(args.study, o)
    print(f"report: {path}")
    return 0


def run_sweep_cmd(args) -> int:
    from mdpt.experiments.sweep import run_sweep

    run_sweep(args.spec, args.out, args.launcher, args.workers, args.address,
              cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial)
    return 0


def run_report(args) -> int:
    from mdpt.experiments.rundir import claim_folder
    from mdpt.reports.report import write_report

    out = Path(args.out)
    claim_folder(out, lambda name: name == "report.md" or name.endswith(".png"), "report folder")  # else the user's
    path = write_report(args.runs, out)
    print(f"report: {path}")
    return 0


def run_quickstart(args) -> int:
    from mdpt.reproduction.quickstart import quickstart

    quickstart(args.out, args.steps, args.seeds, tiny=args.tiny, progress=not args.no_progress, dataset=args.dataset)
    return 0
