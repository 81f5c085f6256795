"""`mdpt data` subcommands: info, make, convert. Heavy modules are imported inside the handlers."""

from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    from mdpt.cli.flags import SEED, count

    steps = count(1, 100_000_000)
    data = subparsers.add_parser("data", help="inspect, make and convert offline datasets",
                                 description="Offline datasets in the D4RL layout (bullet family).")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", parser_class=type(data))
    sub.required = True

    info = sub.add_parser("info", help="size, episodes, returns and fingerprint of a dataset",
                          description="Load a dataset (by id or path) and print its statistics.")
    info.add_argument("dataset", metavar="ID|PATH", help="dataset id (bullet-hopper-medium-v0), HDF5 file or "
                      "Minari dataset directory")
    info.add_argument("--env", metavar="ENV_ID", help="environment of a file that does not name one (e.g. HopperBulletEnv-v0)")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.add_argument("--reference", choices=("d4rl", "dataset", "raw"), default=None,
                      help="normalized-score reference: D4RL's infos.py constants (default), the data's own "
                           "ref_min_score/ref_max_score (default for Minari datasets) or raw returns; one the data "
                           "lacks falls back to its own reference, else raw, and says so")
    info.add_argument("--data-dir", metavar="DIR", help="folder holding <id>.hdf5 files (default: $MDPT_DATA_DIR or "
                      "~/.cache/mdpt/datasets)")
    info.add_argument("--offline", action="store_true", help="never download")
    info.set_defaults(func=cmd_info)

    make = sub.add_parser("make", help="make a dataset by the D4RL recipe (SAC on the bullet or MuJoCo env)",
                          description="Train SAC online, checkpoint and evaluate it, and write D4RL-layout "
                                      "datasets (medium, expert, medium-replay, random, medium-expert). Resumes when "
                                      "interrupted; the same arguments give the same file.")
    make.add_argument("dataset", metavar="ID", help="dataset id, e.g. bullet-hopper-medium-v0 (PyBullet) or "
                      "hopper-medium-v2 (Gymnasium's Hopper-v5)")
    make.add_argument("--sac-steps", type=steps, metavar="N", default=150_000, help="SAC environment steps (default 150000)")
    make.add_argument("--transitions", type=steps, metavar="N", default=100_000,
                      help="transitions per rollout dataset (default 100000)")
    make.add_argument("--seed", type=SEED, metavar="S", default=0, help="seed (default 0); the same seed gives the same file")
    make.add_argument("--out", metavar="DIR", help="output folder (default: $MDPT_DATA_DIR or ~/.cache/mdpt/datasets)")
    make.add_argument("--eval-every", type=steps, metavar="K", default=10_000, help="checkpoint and evaluate every K steps "
                      "(default 10000)")
    make.add_argument("--eval-episodes", type=count(1, 1000), metavar="E", default=5, help="deterministic episodes per evaluation "
                      "(default 5)")
    make.add_argument("--learning-starts", type=count(0, 100_000_000), metavar="N", default=5000, help="random-action steps before SAC "
                      "updates begin (default 5000)")
    make.add_argument("--train-freq", type=count(1, 1_000_000), metavar="K", default=1, help="env steps per update call, each doing that "
                      "many gradient steps (default 1)")
    make.add_argument("--layout", choices=("d4rl", "minari"), default="d4rl",
                      help="d4rl: <out>/<id>.hdf5 (default); minari: a Minari dataset <out>/mdpt/<env>-<family>/<quality>-v0 "
                      "(load it by that id with MINARI_DATASETS_PATH=<out>)")
    make.add_argument("--quiet", action="store_true", help="no progress bars")
    make.set_defaults(func=cmd_make)

    conv = sub.add_parser("convert", help="write a dataset as a D4RL HDF5 file or a Minari dataset",
                          description="Convert between the D4RL HDF5 layout and Minari datasets (Minari through "
                                      "the minari package: pip install 'mdpt[minari]').")
    conv.add_argument("dataset", metavar="ID|PATH", help="dataset id, HDF5 file or Minari directory")
    conv.add_argument("out", metavar="OUT", help="output: a .hdf5 file (d4rl) or a directory (minari)")
    conv.add_argument("--to", choices=("d4rl", "minari"), default=None,
                      help="output format (default: minari unless OUT ends in .hdf5/.h5)")
    conv.add_argument("--env", metavar="ENV_ID", help="environment of a file that does not name one")
    conv.add_argument("--minari-id", help="Minari dataset id to record (default mdpt/<env>-<bullet|mujoco>/<quality>-v0)")
    conv.add_argument("--overwrite", action="store_true", help="replace an existing output")
    conv.set_defaults(func=cmd_convert)


def _load(args):
    from mdpt.data.load import load_dataset

    return load_dataset(args.dataset, env=getattr(args, "env", None), data_dir=getattr(args, "data_dir", None),
                        download=not getattr(args, "offline", False))


def cmd_info(args) -> int:
    from mdpt.data.stats import dataset_summary

    data = _load(args)
    # Minari datasets carry their own reference (as their runs' preset says); others D4RL's
    s = dataset_summary(data, args.reference or ("dataset" if data.attrs.get("minari_dataset_id") else "d4rl"))
    if args.json:
        print(json.dumps(s, indent=1, default=str))
        return 0
    r, n = s["return"], s["normalized"]
    ref_name = {"d4rl": "D4RL infos.py", "raw": "none, raw returns"}.get(
        n["reference"], "the data's own ref_min_score/ref_max_score")
    lines = [
        f"dataset      {s['dataset_id'] or '-'}",
        f"source       {s['source']}",
        f"environment  {s['env_id']} (obs {s['obs_dim']}, act {s['act_dim']})",
        f"transitions  {s['transitions']}",
        f"episodes     {s['episodes']} (terminals {s['terminals']}, timeouts {s['timeouts']}; length "
        f"{s['episode_length']['mean']:.1f} mean, {s['episode_length']['min']}..{s['episode_length']['max']})",
        f"return       mean {r['mean']:.1f}  std {r['std']:.1f}  min {r['min']:.1f}  max {r['max']:.1f}",
        f"normalized   mean {n['mean']:.1f}  min {n['min']:.1f}  max {n['max']:.1f}  (reference {n['reference']}: "
        f"{ref_name}, min {n['min_score']:.2f}, max {n['max_score']:.2f})",
        f"fingerprint  {s['fingerprint']}",
    ]
    if "recipe" in s["attrs"]:
        lines.append(f"recipe       {s['attrs']['recipe']}")
    if s["notes"]:
        lines.append("notes")
        lines.extend(f"  - {note}" for note in s["notes"])
    else:
        lines.append("notes        none")
    print("\n".join(lines))
    return 0


def cmd_make(args) -> int:
    from mdpt.data.make import make_dataset

    result = make_dataset(args.dataset, out_dir=args.out, sac_steps=args.sac_steps, transitions=args.transitions,
                          seed=args.seed, eval_every=args.eval_every, eval_episodes=args.eval_episodes,
                          learning_starts=args.learning_starts, train_freq=args.train_freq,
                          progress=not args.quiet, layout=args.layout)
    if result.resumed_from:
        print(f"resumed from SAC step {result.resumed_from} ({result.work_dir})", file=sys.stderr)
    log = result.log
    print(f"medium checkpoint: step {log['medium']['step']} (eval return {log['medium']['ret']:.1f}); "
          f"expert checkpoint: step {log['expert']['step']} (eval return {log['expert']['ret']:.1f})")
    print(f"reference returns: random actions {log['ref_min_score']:.1f}, expert data {log['ref_max_score']:.1f}")
    for path in result.written:
        print(f"wrote {path}")
    return 0


def cmd_convert(args) -> int:
    from pathlib import Path

    from mdpt.errors import MDPTError

    data = _load(args)
    out = Path(args.out)
    fmt = args.to or ("d4rl" if out.suffix in (".hdf5", ".h5") else "minari")
    if fmt == "d4rl":
        from mdpt.data.hdf5_write import write_d4rl_hdf5

        if out.exists() and not args.overwrite:
            raise MDPTError(f"{out}: already exists; pass --overwrite to replace it")
        notes = list(data.notes)
        write_d4rl_hdf5(out, data, {"conversion_notes": notes} if notes else None)
    else:
        from mdpt.data.minari_io import write_minari

        write_minari(out, data, dataset_id=args.minari_id, overwrite=args.overwrite)
    print(f"wrote {out} ({fmt}, {len(data)} transitions, fingerprint {data.fingerprint})")
    return 0


