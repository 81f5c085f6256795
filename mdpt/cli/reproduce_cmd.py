"""`mdpt reproduce`: the paper's protocol over the datasets found, resumable, with one report."""

from __future__ import annotations

import argparse
from pathlib import Path

from mdpt.errors import MDPTError

HELP = """Runs the paper's three studies the way the paper ran them, over the given datasets, and
writes OUT/report/report.md: per-dataset tables in the paper's form (joint vs GFDT per algorithm:
last iterate and AUC with CIs, steps to 90% of joint's final score, time and memory), the
guidance-necessity gaps along training (no guidance, random guidance, in training and at
inference), guidance swaps at matched checkpoints (across seeds, an independent guidance, across
algorithms in both directions, guidance ensembles) with the change of the seed spread (IQR), and a
findings section that answers each finding with numbers and CIs. A second call continues where
the first stopped (finished runs and evaluated swaps are kept). A protocol too long for one sitting
or machine runs in shards of its seeds (--seed 0 --seeds 3 --out A, --seed 3 --seeds 3 --out B, ...),
which --merge A,B,... --out OUT joins into the reproduction of all the seeds. Exit codes: 0 done, 2 bad input or
a plan over --budget-hours, 3 a run stopped (NaN or a diverging critic)."""


def register(subparsers) -> None:
    from mdpt.agent import MAX_CANDIDATES
    from mdpt.cli.flags import SEED, count, number
    from mdpt.evaluation.api import MAX_ENV_STEPS, MAX_EPISODES
    from mdpt.experiments.config import MAX_SEEDS, MAX_STEPS
    from mdpt.reproduction.protocol import Protocol

    steps = count(1, MAX_STEPS)
    d = Protocol(datasets=())  # every default below is a field's
    r = subparsers.add_parser("reproduce", help="the paper's three findings, end to end, with one report",
                              description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--datasets", default="all",
                   help="comma-separated dataset ids, or 'all': every bullet-*.hdf5 in the data directory "
                        "($MDPT_DATA_DIR) (default: all)")
    r.add_argument("--algos", default=",".join(d.algos),
                   help=f"comma-separated: dql, idql, edp (default: {','.join(d.algos)})")
    r.add_argument("--seeds", type=count(1, MAX_SEEDS), default=d.seeds,
                   help=f"seeds per run, vmapped in one program (default: {d.seeds})")
    r.add_argument("--seed", type=SEED, default=d.seed, help=f"first seed (default: {d.seed})")
    r.add_argument("--steps", type=steps, default=d.steps, help=f"gradient steps per run (default: {d.steps})")
    r.add_argument("--eval-every", type=steps, default=d.eval_every,
                   help=f"learning-curve interval (default: {d.eval_every})")
    r.add_argument("--episodes", type=count(1, MAX_EPISODES), default=d.final_episodes,
                   help=f"episodes per seed at the last step (default: {d.final_episodes})")
    r.add_argument("--curve-episodes", type=count(1, MAX_EPISODES), default=d.curve_episodes,
                   help=f"episodes per seed along the curve (default: {d.curve_episodes})")
    r.add_argument("--curve-candidates", type=count(1, MAX_CANDIDATES),
                   help="candidates along the curve (default: each algorithm's)")
    r.add_argument("--eval-max-steps", type=count(1, MAX_ENV_STEPS), help="cap evaluation episodes at this many env steps")
    r.add_argument("--studies", default=",".join(d.studies),
                   help="comma-separated, the studies to plan runs and swaps for: necessity (the eta-0 and random "
                        "controls), gfdt-vs-joint, transfer (guidance swaps at matched checkpoints), arms "
                        "(guidance-first against the joint run's own critic and against the authors' stage 1, and "
                        "every guidance-first policy and the eta-0 control selected the joint run's way) "
                        f"(default: {','.join(d.studies)})")
    r.add_argument("--stage1", choices=["iql", "authors"], default=d.stage1,
                   help="guidance-first's stage 1: iql (policy-independent) or authors (a dql-critic with an "
                        f"untrained actor's next actions and a frozen target, the paper's script) (default: {d.stage1})")
    r.add_argument("--unfreeze-at", type=steps, help="step at which guidance-first's guidance trains on (default: never)")
    r.add_argument("--ensemble-k", type=count(1, MAX_SEEDS), default=d.ensemble_k,
                   help=f"members of the guidance ensembles (default: {d.ensemble_k})")
    r.add_argument("--transfer-points", type=steps, default=d.transfer_points,
                   help=f"matched checkpoints (the last N evaluations) for guidance swaps (default: {d.transfer_points})")
    r.add_argument("--swap-candidates", type=count(1, MAX_CANDIDATES),
                   help="candidates for every guidance swap, the policy's own guidance re-evaluated at the same "
                        "count and seeds beside it (default: each run's own evaluation settings; on a CPU, IDQL's "
                        "256 candidates make its final-step swaps cost ~30 min each)")
    r.add_argument("--train-every-run", action="store_true",
                   help="also train IDQL's guidance-first policy in full (by default it is the joint run's policy, "
                        "checked bit for bit on its first chunk: IDQL's policy loss never reads its guidance)")
    r.add_argument("--budget-hours", type=number(0, 1e6), help="refuse a plan whose estimate exceeds this")
    r.add_argument("--train-only", action="store_true",
                   help="train every run without evaluating (a machine without the simulator, e.g. a GPU box): "
                        "each run keeps its evaluation steps' snapshots and ends 'trained'; the same command "
                        "without --train-only, on a machine with the simulator, evaluates them and writes the report")
    r.add_argument("--group", choices=["auto", "on", "off"], default="auto",
                   help="train the runs of one kind on the datasets of one environment as one program (their "
                        "seeds and datasets vmapped together): auto = on a GPU/TPU, where one program per run "
                        "leaves the device mostly idle (default: auto)")
    r.add_argument("--report-only", action="store_true", help="rewrite the report from what is on disk")
    r.add_argument("--merge", metavar="DIR,DIR,...",
                   help="join finished reproductions that differ only in --seed and --seeds (shards of one protocol, "
                        "contiguous seeds; checkpoints not needed) into --out, and write its report; the other "
                        "flags are not used")
    r.add_argument("--partial", action="store_true",
                   help="with --report-only: a report of the readable runs when some finished run's files are missing "
                        "(e.g. a copy without metrics.jsonl); it names them (default: refuse, exit 2)")
    r.add_argument("--config", help="YAML file of settings under every run (e.g. network sizes)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting under every run")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--out", required=True, help="reproduction directory")
    r.set_defaults(func=run_reproduce)


def _datasets(spec: str) -> tuple[str, ...]:
    from mdpt.data.load import default_data_dir

    if spec.strip() == "all":
        found = sorted(p.stem for p in default_data_dir().glob("bullet-*-v0.hdf5"))
        if not found:
            raise MDPTError(f"--datasets all: no bullet-*-v0.hdf5 in the data directory {default_data_dir()}; "
                            "set MDPT_DATA_DIR or name the datasets")
        return tuple(found)
    return tuple(d.strip() for d in spec.split(",") if d.strip())


def protocol_from_args(args):
    from mdpt import presets
    from mdpt.experiments.config import RunConfig, apply_overrides, load_yaml
    from mdpt.reproduction.protocol import Protocol
    from mdpt.settings import unalias

    base = unalias(RunConfig, load_yaml(args.config), args.config) if args.config else {}
    base = presets.merge(base, unalias(RunConfig, apply_overrides({}, args.set), "--set"))
    return Protocol(datasets=_datasets(args.datasets), algos=tuple(a.strip() for a in args.algos.split(",") if a.strip()),
                    seeds=args.seeds, seed=args.seed, steps=args.steps, eval_every=args.eval_every,
                    curve_episodes=args.curve_episodes, final_episodes=args.episodes,
                    curve_candidates=args.curve_candidates, eval_max_steps=args.eval_max_steps, stage1=args.stage1,
                    unfreeze_at=args.unfreeze_at, ensemble_k=args.ensemble_k, transfer_points=args.transfer_points,
                    swap_candidates=args.swap_candidates, derive=not args.train_every_run, base=base,
                    studies=tuple(x.strip() for x in args.studies.split(",") if x.strip()))


def _record_data(out: Path) -> None:
    """The data's statistics of a reproduction made before they were recorded, where the data is found."""
    from mdpt.reproduction.execute import record_data
    from mdpt.reproduction.protocol import read_protocol

    protocol = read_protocol(out)["protocol"]
    for dataset in protocol["datasets"]:
        try:
            record_data(out, dataset, env=protocol.get("base", {}).get("env"))
        except MDPTError as e:
            print(f"note: no data line for {dataset} in the report: {e}")


def run_reproduce(args) -> int:
    from mdpt.reproduction.execute import Reproduction
    from mdpt.reproduction.render import write_report

    out = Path(args.out)
    if args.merge:
        from mdpt.reproduction.merge import merge_reproductions

        merged = merge_reproductions([s.strip() for s in args.merge.split(",") if s.strip()], out)
        print(f"merged {len(merged.shards)} shards, seeds {merged.seed}..{merged.seed + merged.seeds - 1}: {out}")
        _record_data(out)
        print(f"report: {write_report(out, partial=args.partial)}")
        return 0
    if args.report_only:
        if not (out / "protocol.json").exists():
            raise MDPTError(f"{out}: no reproduction here (protocol.json missing); run mdpt reproduce first")
        _record_data(out)
        print(f"report: {write_report(out, partial=args.partial)}")
        return 0
    repro = Reproduction(protocol_from_args(args), out, progress=not args.no_progress)
    group = {"auto": None, "on": True, "off": False}[args.group]
    path = repro.execute(budget_hours=args.budget_hours, train_only=args.train_only, group=group)
    print(f"report: {path}")
    return 0
