"""MDPT training / inference benchmark (not part of the test suite).

    python benchmarks/run.py [--quick] [--out benchmarks/RESULTS.md] [--section train,seeds,infer,torch,eval]

Hopper-sized data (obs 15, act 3; bullet-hopper-medium-replay-v0 if present, else 100k synthetic
transitions), batch 256, width 256, T = 5. Measures, in one run: gradient steps/s per update (1, 4, 8
vmapped seeds), FLOPs per step from XLA cost analysis and the fraction of a measured float32
matmul peak, XLA memory analysis of the compiled chunk (joint vs guidance-first), inference
latency / throughput, the eager PyTorch Diffusion-QL reference (benchmarks/torch_dql.py), and
evaluation throughput (PyBullet env-steps/s of the pipelined evaluation against the frozen
pre-pipelining code in benchmarks/eval_baseline.py, same run, alternating). Works unchanged on
CPU or GPU.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench_* modules beside this script
from bench_common import (  # noqa: E402
    HERE,
    REMAT_MEANS,
    SECTIONS,
    UPDATES,
    XLA_DEFAULTS,
    load_data,
    log,
    machine,
    matmul_peak,
)
from bench_eval import bench_eval  # noqa: E402
from bench_infer import bench_inference  # noqa: E402
from bench_report import fmt, mib, report, write_atomic  # noqa: E402
from bench_torch import bench_paired, bench_torch  # noqa: E402
from bench_train import prepare_update, time_updates  # noqa: E402

from mdpt.diffusion.ddpm import REMAT  # noqa: E402
from mdpt.training.xla_options import training_compiler_options  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run: short chunks, one timed call")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--section", default=",".join(SECTIONS),
                    help=f"comma list of {', '.join(SECTIONS)} (seeds = the 4- and 8-seed rows)")
    ap.add_argument("--updates", default=",".join(UPDATES), help="comma list of updates to time")
    ap.add_argument("--seeds", default="4,8", help="seed counts for the 'seeds' section")
    ap.add_argument("--seed-updates", default="iql,dql-joint,dql-gf",
                    help="updates timed with several seeds (comma list, or 'all'; each costs a compile)")
    ap.add_argument("--eval-groups", default="2", help="pipelined group counts timed in the 'eval' section")
    ap.add_argument("--eval-rounds", type=int, default=3, help="alternating old/new rounds in the 'eval' section")
    ap.add_argument("--chain-remat", default=",".join(REMAT_MEANS),
                    help="chain_remat settings of the DQL policy timed beside 'none' (joint and guidance-first, at every "
                         "seed count they are timed at; '' for none)")
    ap.add_argument("--xla-defaults", default="dql-joint,dql-gf,idql-joint,iql",
                    help="updates also timed compiled with XLA's default options (beside MDPT's training options, "
                         "same rounds; CPU only; '' for none)")
    ap.add_argument("--paired-rounds", type=int, default=8,
                    help="alternating rounds of our joint DQL and the eager PyTorch step in the 'torch' section")
    ap.add_argument("--chunk", type=int, default=None, help="steps per call (default: 200 on GPU, 20/S on CPU)")
    args = ap.parse_args(argv)
    sections = [s for s in args.section.split(",") if s]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section {bad[0]!r}; use {', '.join(SECTIONS)}")
    updates = [u for u in args.updates.split(",") if u]
    for u in updates:
        if u not in UPDATES:
            ap.error(f"unknown update {u!r}; use {', '.join(UPDATES)}")
    if args.seed_updates != "all":
        for u in args.seed_updates.split(","):
            if u not in UPDATES:
                ap.error(f"unknown update {u!r} in --seed-updates")
    remats = [r for r in args.chain_remat.split(",") if r]
    for r in remats:
        if r not in REMAT:
            ap.error(f"unknown chain_remat {r!r} in --chain-remat; use {', '.join(REMAT)}")
    xla_defaults = [u for u in args.xla_defaults.split(",") if u]
    for u in xla_defaults:
        if u not in UPDATES:
            ap.error(f"unknown update {u!r} in --xla-defaults")
    cmd = " ".join(shlex.quote(a) for a in ["python", "benchmarks/run.py", *sys.argv[1:]])

    on_cpu = jax.default_backend() == "cpu"
    quick = args.quick
    batch = 256
    info = {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "batch": batch, "sections": sections,
            "target_s": 0.3 if quick else (2.0 if on_cpu else 1.0), "min_calls": 1 if quick else 3,
            "mm_n": 1024 if quick else (2048 if on_cpu else 8192), "mm_repeats": 3 if quick else 7,
            "envs": 50, "candidates": 50, "xla_options": training_compiler_options()}
    info["load_start"] = info["machine"]["load"]
    log(f"machine: {info['machine']}")
    data, norm, arrays, desc = load_data()
    info["data"] = desc
    dims = (data.obs_dim, data.act_dim)
    res = {}
    t_start = time.perf_counter()

    def chunk_for(seeds):
        if args.chunk:
            return args.chunk
        if quick:
            return 2
        return 200 if not on_cpu else max(2, 20 // seeds)

    if "train" in sections or "seeds" in sections:
        res["peak"] = matmul_peak(info["mm_n"], info["mm_repeats"])
        log(f"matmul peak: {res['peak'] / 1e9:.1f} GFLOP/s")
        seed_counts = ([1] if "train" in sections else []) + \
            ([int(s) for s in args.seeds.split(",") if s] if "seeds" in sections else [])
        res["train"] = []
        for s in seed_counts:
            names = updates if s == 1 or args.seed_updates == "all" else \
                [u for u in updates if u in args.seed_updates.split(",")]
            jobs = [(name, "none") for name in names]
            jobs += [(name, r) for r in remats for name in ("dql-joint", "dql-gf") if name in names]
            if training_compiler_options():
                jobs += [(name, XLA_DEFAULTS) for name in xla_defaults if name in names]
            prepared = [prepare_update(name, arrays, dims, batch, s, chunk_for(s), v) for name, v in jobs]
            time_updates(prepared, info["target_s"], info["min_calls"])
            res["train"] += prepared
            for r in prepared:
                log(f"  {r['label']:11s} S={s}: {r['steps_per_s']:8.2f} steps/s, {r['seed_steps_per_s']:8.2f} seed-steps/s, "
                    f"{fmt(r['flops_per_seed_step'] and r['flops_per_seed_step'] / 1e9, '.3f')} GFLOP/seed-step, "
                    f"peak {fmt(mib(r['memory']['peak']) if r['memory'] else None, '.2f')} MiB, compile {r['compile_s']:.1f}s")
        # Re-measure the peak after the training runs and keep the best: on a shared machine one
        # measurement can land in a busy moment and flatter every "% of peak" figure.
        again = matmul_peak(info["mm_n"], info["mm_repeats"])
        log(f"matmul peak (re-measured): {again / 1e9:.1f} GFLOP/s")
        res["peak"] = max(res["peak"], again)
    if "infer" in sections:
        res["infer"] = bench_inference(data, norm, arrays, dims, info["envs"], info["candidates"], 5 if quick else 30)
        for k, v in res["infer"].items():
            log(f"  inference {k}: {v['latency_ms']:.2f} ms, {v['actions_per_s']:.0f} actions/s")
    if "eval" in sections:
        res["eval"] = bench_eval(info["envs"], [int(g) for g in args.eval_groups.split(",") if g],
                                 1 if quick else args.eval_rounds, quick)
    if "torch" in sections:
        res["torch"] = bench_torch(data, norm, 3 if quick else 50, 1 if quick else 2, 5.0 if quick else 20.0)
        res["paired"] = bench_paired(data, norm, arrays, dims, batch, 2 if quick else args.paired_rounds,
                                     chunk_for(1))
        if res["paired"]:
            p = res["paired"]
            log(f"  paired rounds: ours {p['ours_steps_per_s']:.2f}, torch {p['torch_steps_per_s']:.2f} steps/s, "
                f"ratio {p['ratio']:.2f}x (quartiles {p['ratio_q1']:.2f}-{p['ratio_q3']:.2f})")
    info["machine_end"] = machine()
    info["load_end"] = info["machine_end"]["load"]
    text = report(info, res, cmd)
    text += f"\nTotal benchmark wall time: {time.perf_counter() - t_start:.0f} s.\n"
    write_atomic(Path(args.out), text)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
