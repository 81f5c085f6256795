"""`mdpt reproduce --train-only` with and without `--group`, on this machine, same protocol.

    python benchmarks/group_ab.py [--steps 600] [--data DIR] [--out DIR]

Trains the gfdt-vs-joint runs of DQL (iql-a, dql-joint, dql-gfdt) on the three bullet hopper datasets,
3 seeds, once with each environment's datasets as one program and once one program per run, and prints
the wall time of each and the time per program step of every run (a grouped run's is its program's).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

DATASETS = ("bullet-hopper-medium-v0", "bullet-hopper-medium-replay-v0", "bullet-hopper-expert-v0")
RUNS = ("iql-a", "dql-joint", "dql-gfdt")


def main() -> None:
    from mdpt.data.load import default_data_dir

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--data", default=str(default_data_dir()),
                    help="dataset directory (default: the data dir: $MDPT_DATA_DIR, else ~/.cache/mdpt/datasets)")
    ap.add_argument("--out", default=tempfile.mkdtemp(prefix="mdpt-group-ab-"))
    args = ap.parse_args()
    os.environ["MDPT_DATA_DIR"] = args.data
    from mdpt.reproduction.execute import Reproduction
    from mdpt.reproduction.protocol import Protocol

    protocol = Protocol(datasets=DATASETS, algos=("dql",), seeds=3, steps=args.steps, eval_every=args.steps // 2,
                        studies=("gfdt-vs-joint",), base={"chunk": 100})
    results = {}
    for group in (True, False):
        out = Path(args.out) / ("grouped" if group else "separate")
        t0 = time.perf_counter()
        Reproduction(protocol, out, log=lambda line: None).execute(train_only=True, group=group)
        seconds_per_step = {run: [json.loads((out / "runs" / ds / run / "summary.json").read_text())["seconds_per_step"]
                                  for ds in DATASETS] for run in RUNS}
        results["grouped" if group else "separate"] = {"wall_s": time.perf_counter() - t0,
                                                      "seconds_per_step": seconds_per_step}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
