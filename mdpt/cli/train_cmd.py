"""`mdpt train-guidance`, `mdpt train-policy` and `mdpt config show`: flags from the settings tree."""

from __future__ import annotations

import argparse
import json

from mdpt.cli.flags import add_config_flags, config_from_flags
from mdpt.errors import MDPTError

TOP = {"dataset", "env", "steps", "seeds", "seed", "batch_size", "chunk", "checkpoint_every"}


def _guidance_only(name: str) -> bool:
    return name in TOP or name.split(".")[0] in ("guidance", "divergence", "log") or name == "stage1.next_actions"


def _file_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file of settings (nested keys or flat aliases); flags override it")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set policy.eta=0.5 (value parsed as YAML); wins over flags")


def register(subparsers) -> None:
    g = subparsers.add_parser("train-guidance", help="train a guidance module (value estimator) from a dataset",
                              description="Train a guidance module alone. Defaults: the guidance kind's preset "
                                          "(mdpt config show --kind KIND).")
    add_config_flags(g, _guidance_only)
    g.add_argument("--kind", dest="cfg:guidance.kind", default=argparse.SUPPRESS,
                   help="value estimator: iql | sarsa | dql-critic (same as --guidance.kind)")
    _file_flags(g)
    _run_flags(g)
    g.set_defaults(func=run_guidance)

    p = subparsers.add_parser("train-policy", help="train a diffusion policy, jointly or guidance-first",
                              description="Train a diffusion policy. Defaults: the published preset of the algorithm "
                                          "and, where one exists, the task (mdpt config show --algo A --dataset D).")
    add_config_flags(p)
    p.add_argument("--no-eval", action="store_true", help="skip evaluation (same as --eval.variants '[]')")
    _file_flags(p)
    _run_flags(p)
    p.set_defaults(func=run_policy)

    c = subparsers.add_parser("config", help="show the resolved settings of a run (presets applied)")
    csub = c.add_subparsers(dest="config_command", metavar="ACTION", parser_class=c.__class__)
    csub.required = True
    show = csub.add_parser("show", help="print every setting and where it comes from (default, preset, given)",
                           description="Print the resolved settings for the given algo/dataset/flags.")
    add_config_flags(show)
    show.add_argument("--kind", dest="cfg:guidance.kind", default=argparse.SUPPRESS, help="guidance kind")
    _file_flags(show)
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.add_argument("--yaml", action="store_true", help="the resolved settings as a YAML file for --config")
    show.set_defaults(func=run_config_show)
    export = csub.add_parser("export", help="write configs/<algo>/<dataset>.yaml for every published task preset")
    export.add_argument("--out", default="configs", help="folder (default: configs)")
    export.set_defaults(func=run_config_export)


def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--no-progress", action="store_true")


def user_settings(args) -> dict:
    """The nested settings a user gave: --config file < flags < --set items."""
    from mdpt import presets
    from mdpt.experiments.config import RunConfig, apply_overrides, load_yaml
    from mdpt.settings import unalias

    d = unalias(RunConfig, load_yaml(args.config), args.config) if getattr(args, "config", None) else {}
    d = presets.merge(d, config_from_flags(args))
    if getattr(args, "no_eval", False):
        d = presets.merge(d, {"eval": {"variants": []}})
    sets: dict = {}
    apply_overrides(sets, getattr(args, "set", []))
    return presets.merge(d, unalias(RunConfig, sets, "--set"))


def build_config(args, fixed: dict | None = None):
    from mdpt.experiments.config import resolve_config

    d = user_settings(args)
    d.update(fixed or {})
    if not d.get("dataset"):
        raise MDPTError("no dataset: pass --dataset ID or set `dataset:` in --config")
    return resolve_config(d)


def run_guidance(args) -> int:
    config = build_config(args, {"algo": None})
    return _execute(args, config)


def run_policy(args) -> int:
    config = build_config(args)
    if config.algo is None:
        raise MDPTError("no algorithm: pass --algo dql|idql|edp|cfg")
    return _execute(args, config)


def _execute(args, config) -> int:
    from mdpt.experiments.runner import Run

    summary = Run(args.out, config, resume=args.resume, progress=not args.no_progress).execute()
    print(json.dumps({k: summary[k] for k in ("name", "algo", "mode", "guidance_kind", "steps", "seconds_per_step")}))
    print(f"preset: {', '.join(summary['preset']['layers'])}; evaluation: {summary['preset']['selector']}")
    for variant, row in summary["final"].items():
        print(f"final {variant}: normalized score {row['mean']:.1f} at step {row['step']} "
              f"(best {summary['best'][variant]['mean']:.1f} at step {summary['best'][variant]['step']}; "
              f"reference {summary['reference']}; {len(summary['seeds'])} seeds x {summary['episodes']} episodes; "
              f"dataset mean {summary['dataset_mean_score']:.1f})")
    vc = summary.get("value_check")
    if vc:
        state = "within its bound" if vc["within_bound"] else f"PAST its bound from step {vc['first_exceeded_step']}"
        print(f"value check: max |Q| {vc['max_abs_q']:.3g}, bound {vc['bound']:.3g}: {state}")
    print(f"artifacts in {args.out}")
    return 0


def run_config_show(args) -> int:
    import yaml

    from mdpt import presets
    from mdpt.experiments.config import provenance, resolve_config
    from mdpt.settings import flatten

    d = user_settings(args)
    if not d.get("dataset"):
        d["dataset"] = "bullet-hopper-medium-v0"
        print("# no --dataset given: showing bullet-hopper-medium-v0")
    config = resolve_config(d)
    resolved = config.to_json()
    if args.json:
        print(json.dumps(resolved, indent=2))
        return 0
    if args.yaml:
        print(yaml.safe_dump(resolved, sort_keys=False), end="")
        return 0
    source = provenance(d)
    print(f"# preset layers: {', '.join(config.preset) or 'none'}")
    from mdpt.data.load import preset_dataset

    note = presets.task_note(config.algo, config.guidance_kind, preset_dataset(config.dataset))
    if note:
        print(f"# note: {note}")
    width = max(len(k) for k in flatten(resolved))
    for key, value in flatten(resolved).items():
        if key == "preset":
            continue
        print(f"{key:<{width}}  {json.dumps(value):<24} {source.get(key, 'default')}")
    return 0


def run_config_export(args) -> int:
    from mdpt.experiments.config_files import write_config_files

    paths = write_config_files(args.out)
    print(f"wrote {len(paths)} files under {args.out}")
    return 0
