"""`mdpt train-guidance` and `mdpt train-policy`."""

from __future__ import annotations

import argparse
import json

from mdpt.errors import MDPTError

# CLI flag -> RunConfig key, for flags shared by both commands.
COMMON = {
    "dataset": str, "env": str, "steps": int, "seeds": int, "seed": int, "batch_size": int, "chunk": int,
    "checkpoint_every": int,
}
POLICY_ONLY = {
    "algo": str, "mode": str, "guidance_path": str, "guidance_seed": int, "guidance_kind": str,
    "guidance_steps": int, "eval_every": int, "eval_episodes": int, "eval_max_steps": int, "selector": str, "beta": float,
    "candidates": int, "temperature": float, "cfg_weight": float, "reference": str,
}


def register(subparsers) -> None:
    g = subparsers.add_parser("train-guidance", help="train a guidance module (value estimator) from a dataset")
    g.add_argument("--kind", dest="guidance_kind", choices=["iql", "sarsa", "dql-critic"])
    g.add_argument("--policy", dest="policy_path", help="dql-critic: a trained policy giving the next actions")
    _common(g)
    g.set_defaults(func=run_guidance)

    p = subparsers.add_parser("train-policy", help="train a diffusion policy, jointly or guidance-first")
    p.add_argument("--algo", choices=["dql", "idql", "edp", "cfg"])
    p.add_argument("--mode", choices=["joint", "guidance-first"])
    p.add_argument("--guidance", dest="guidance_path", help="guidance module directory (guidance-first)")
    p.add_argument("--guidance-seed", type=int, help="use this seed index of the guidance module for all seeds")
    p.add_argument("--guidance-kind", choices=["iql", "sarsa", "dql-critic"],
                   help="guidance trained in the loop (joint) or first (guidance-first without --guidance)")
    p.add_argument("--guidance-steps", type=int, help="steps for the guidance trained first (default --steps)")
    p.add_argument("--eval-every", type=int, help="evaluate every K steps (0: only at the end)")
    p.add_argument("--no-eval", action="store_true", help="skip evaluation")
    p.add_argument("--eval-variants", help="comma-separated: guided,unguided,random-guidance")
    p.add_argument("--eval-episodes", type=int)
    p.add_argument("--eval-max-steps", type=int, help="cap evaluation episodes at this many env steps")
    p.add_argument("--selector", choices=["softmax", "argmax", "none"])
    p.add_argument("--beta", type=float)
    p.add_argument("--candidates", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--cfg-weight", type=float)
    p.add_argument("--reference", choices=["d4rl", "dataset"])
    p.add_argument("--allow-data-mismatch", action="store_true", default=None,
                   help="use a guidance module trained on other data (recorded in the results)")
    _common(p)
    p.set_defaults(func=run_policy)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help="dataset id (e.g. bullet-hopper-medium-v0) or HDF5 path")
    p.add_argument("--env", help="environment for a dataset path without env_id in its attrs")
    p.add_argument("--steps", type=int)
    p.add_argument("--seeds", type=int, help="number of seeds, trained vmapped in one program")
    p.add_argument("--seed", type=int, help="first seed (seeds are SEED..SEED+S-1)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--chunk", type=int, help="steps per jitted call (metrics come back once per chunk)")
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--config", help="YAML file of settings; flags override it")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set policy.eta=0.5 (value parsed as YAML)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--no-progress", action="store_true")


def build_config(args, keys: dict, fixed: dict | None = None):
    from mdpt.experiments.config import RunConfig, load_yaml

    d = load_yaml(args.config) if args.config else {}
    for key in keys:
        value = getattr(args, key, None)
        if value is not None:
            d[key] = value
    if getattr(args, "no_eval", False):
        d["eval_variants"] = []
    elif getattr(args, "eval_variants", None):
        d["eval_variants"] = [v.strip() for v in args.eval_variants.split(",") if v.strip()]
    if getattr(args, "allow_data_mismatch", None):
        d["allow_data_mismatch"] = True
    for item in args.set:
        apply_override(d, item)
    d.update(fixed or {})
    if "dataset" not in d:
        raise MDPTError("no dataset: pass --dataset ID or set `dataset:` in --config")
    return RunConfig.from_dict(d)


def apply_override(d: dict, item: str) -> None:
    import yaml

    if "=" not in item:
        raise MDPTError(f"--set {item!r}: expected KEY=VALUE")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise MDPTError(f"--set {item!r}: value is not valid YAML") from None
    from mdpt.experiments.config import set_dotted

    set_dotted(d, key, value, f"--set {item!r}")


def run_guidance(args) -> int:
    config = build_config(args, {**COMMON, "guidance_kind": str, "policy_path": str}, {"algo": None})
    return _execute(args, config)


def run_policy(args) -> int:
    config = build_config(args, {**COMMON, **POLICY_ONLY})
    if config.algo is None:
        raise MDPTError("no algorithm: pass --algo dql|idql|edp|cfg")
    return _execute(args, config)


def _execute(args, config) -> int:
    from mdpt.experiments.runner import Run

    summary = Run(args.out, config, resume=args.resume, progress=not args.no_progress).execute()
    print(json.dumps({k: summary[k] for k in ("name", "algo", "mode", "guidance_kind", "steps", "seconds_per_step")}))
    for variant, row in summary["final"].items():
        print(f"final {variant}: normalized score {row['mean']:.1f} at step {row['step']} "
              f"(best {summary['best'][variant]['mean']:.1f} at step {summary['best'][variant]['step']}; "
              f"reference {summary['reference']}; dataset mean {summary['dataset_mean_score']:.1f})")
    print(f"artifacts in {args.out}")
    return 0
