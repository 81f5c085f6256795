"""One GPU window, one call: the GPU throughput table, then paper-scale training until a deadline.

    python benchmarks/gpu.py --out DIR [--budget-s 540] [--smoke]

1. environment: device, driver, versions;
2. throughput: seed-steps/s and XLA peak memory of joint and guidance-first dql, idql, edp at
   S = 1, 8, 32, 128, 512 replicas per program (compiled in parallel threads), the matmul
   precision (`matmul_precision` of both networks: the 'default' TF32 vs 'highest' fp32 vs 'bf16')
   for DQL, DQL with its Q-term chain rematerialized (`dql-joint-remat`, `dql-gf-remat`:
   policy.chain_remat = matmuls) at S = 32 and 512, and the eager PyTorch
   DQL step on the same GPU (in a subprocess, so that the two frameworks never share memory);
3. training: the paper's bullet protocol at 100k steps x 5 seeds, each environment's datasets
   stacked in one program (experiments/group.py): IQL guidance, guidance-first DQL, joint DQL,
   and joint DQL at 'highest' and at 'bf16' precision (the precision check), until the deadline; every
   finished run is packed into DIR as float16 parameters (see gpu_unpack.py) with its config,
   metrics and summary, for evaluation on a CPU machine with the simulator.

Everything lands in DIR progressively (a killed call still returns what finished). `--smoke`
runs every code path at toy size on any machine (used before spending GPU time).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
START = time.monotonic()

import jax  # noqa: E402
import numpy as np  # noqa: E402

UPDATES = {  # name -> (algo, guidance kind, policy role, guidance role)
    "dql-joint": ("dql", "dql-critic", "train", "train"),
    "dql-gf": ("dql", "iql", "train", "frozen"),
    "idql-joint": ("idql", "iql", "train", "train"),
    "idql-gf": ("idql", "iql", "train", "frozen"),
    "edp-joint": ("edp", "dql-critic", "train", "train"),
    "edp-gf": ("edp", "iql", "train", "frozen"),
}
# the same programs with DQL's Q-term chain rematerialized (policy.chain_remat), for peak memory per replica
REMAT_UPDATES = {"dql-joint-remat": "dql-joint", "dql-gf-remat": "dql-gf"}
PRECISION_CHECKS = ("highest", "bf16")  # joint DQL trained at these matmul precisions beside the default (TF32)
ENVS = {"hopper": ("medium", "medium-replay", "expert"), "halfcheetah": ("medium", "medium-replay", "expert")}


def log(*a):
    print(f"[{time.monotonic() - START:6.1f}s]", *a, flush=True)


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- 1. environment
def environment() -> dict:
    import flax
    import optax

    info = {"python": sys.version.split()[0], "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "backend": jax.default_backend(),
            "devices": [f"{d.platform}:{getattr(d, 'device_kind', '')}" for d in jax.devices()]}
    try:
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as e:  # no driver tool (CPU smoke run)
        info["nvidia_smi"] = f"n/a ({e.__class__.__name__})"
    return info


# ----------------------------------------------------------------------------- 2. throughput
def hopper_arrays(data_dir: Path):
    from mdpt.data.batches import device_arrays
    from mdpt.data.load import load_dataset
    from mdpt.data.normalizer import Normalizer

    data = load_dataset("bullet-hopper-medium-replay-v0", data_dir=data_dir, download=False)
    return data, device_arrays(data, Normalizer.fit(data))


SMALL_NETS: dict = {}  # --smoke: tiny networks everywhere


def make_trainer(name: str, arrays, dims, batch: int, precision: str | None = None):
    from mdpt.guidance.module import GuidanceConfig, GuidanceModule
    from mdpt.policies.module import DiffusionPolicy, PolicyConfig
    from mdpt.training.trainer import Trainer

    remat = "matmuls" if name in REMAT_UPDATES else "none"
    algo, kind, p_role, g_role = UPDATES[REMAT_UPDATES.get(name, name)]
    numerics = {"matmul_precision": precision or "default"}
    policy = DiffusionPolicy(PolicyConfig(algo, chain_remat=remat, **numerics, **SMALL_NETS), *dims, 1_000_000)
    guidance = GuidanceModule(GuidanceConfig(kind, **numerics, **SMALL_NETS), *dims, 1_000_000)
    frozen = {}
    if g_role == "frozen":  # one trained-elsewhere guidance shared by every replica
        frozen["guidance"] = jax.tree.map(lambda x: x[None], guidance.init(jax.random.PRNGKey(1))["params"])
    return Trainer(arrays, policy, guidance, p_role, g_role, batch, frozen)


def compile_one(name: str, seeds: int, arrays, dims, chunk: int, precision: str | None):
    """Build and compile one program against abstract state (no device memory yet)."""
    from mdpt.training.profiling import compiled_peak_bytes

    trainer = make_trainer(name, arrays, dims, 256, precision)
    abstract = jax.eval_shape(lambda: trainer.init(list(range(seeds))))
    t0 = time.perf_counter()
    compiled = trainer.compiled(abstract, chunk)
    compile_s = time.perf_counter() - t0
    try:
        peak = compiled_peak_bytes(compiled) - trainer.dataset_bytes
    except Exception:
        peak = None
    return trainer, compiled, compile_s, peak


def time_one(trainer, seeds: int, compiled, chunk: int, min_s: float) -> tuple[float, bool]:
    state = trainer.init(list(range(seeds)))
    args = (trainer._frozen_args, trainer.arrays, jax.numpy.int32(0))
    state, m = compiled(state, *args)
    jax.block_until_ready(state)
    calls, elapsed = 0, 0.0
    while calls < 2 or elapsed < min_s:
        t0 = time.perf_counter()
        state, m = compiled(state, *args)
        jax.block_until_ready(state)
        elapsed += time.perf_counter() - t0
        calls += 1
    return calls * chunk / elapsed, bool(np.all(np.asarray(m["nonfinite_at"]) < 0))


def throughput(data_dir: Path, out: Path, sizes, chunk: int, min_s: float, deadline: float, threads: int,
               bench_so_far: dict, jobs: list | None = None) -> dict:
    """Compile every program first (threads: XLA compiles in C++), then time them one at a time, so
    that compilation never competes with a measurement for the host."""
    data, arrays = hopper_arrays(data_dir)
    dims = (data.obs_dim, data.act_dim)
    rows = []
    if not jobs:
        jobs = [(n, s, None) for s in sizes for n in UPDATES]
        jobs += [("dql-joint", max(sizes), "highest")]  # the fp32 'highest' precision step beside the default
        jobs += [(n, s, "bf16") for n in ("dql-joint", "dql-gf") for s in sizes[-3::2]]
        jobs += [(n, s, None) for n in REMAT_UPDATES for s in sizes[-3::2]]
    result = {"data": f"bullet-hopper-medium-replay-v0 ({len(data)} transitions)", "batch": 256, "chunk": chunk,
              "rows": rows}
    compiled = {}
    pool = cf.ThreadPoolExecutor(threads)
    futures = {pool.submit(compile_one, n, s, arrays, dims, chunk, p): (n, s, p) for n, s, p in jobs}
    # compiling has its own share of the time: what is not compiled by then is skipped
    finished, _ = cf.wait(futures, timeout=max(5.0, 0.6 * (deadline - time.monotonic())))
    for fut in finished:
        try:
            compiled[futures[fut]] = fut.result()
        except Exception as e:
            compiled[futures[fut]] = e
    pool.shutdown(wait=False, cancel_futures=True)
    log(f"throughput: {len(compiled)} of {len(jobs)} programs compiled")
    for n, s, p in jobs:
        if time.monotonic() > deadline:
            log(f"throughput: deadline reached, skipping {n} S={s}")
            continue
        entry = compiled.pop((n, s, p), TimeoutError("not compiled within the time for the table"))
        try:
            if isinstance(entry, Exception):
                raise entry
            trainer, program, compile_s, peak = entry
            steps_per_s, finite = time_one(trainer, s, program, chunk, min_s)
        except Exception as e:  # e.g. out of memory at S = 512: recorded, not fatal
            rows.append({"update": n, "replicas": s, "precision": p or "default",
                         "error": f"{e.__class__.__name__}: {str(e)[:200]}"})
            log(f"throughput {n} S={s}: FAILED {e.__class__.__name__}: {str(e)[:200]}")
            continue
        finally:
            entry = None
        rows.append({"update": n, "replicas": s, "precision": p or "default", "steps_per_s": steps_per_s,
                     "seed_steps_per_s": steps_per_s * s, "peak_bytes": peak, "compile_s": compile_s,
                     "finite": finite})
        log(f"throughput {n:10s} S={s:4d} {p or 'default':8s}: {steps_per_s:9.1f} steps/s "
            f"{steps_per_s * s:11.0f} seed-steps/s, peak {(peak or 0) / 2**20:8.1f} MiB, compile {compile_s:.1f}s")
        write_json(out / "gpu_bench.json", {**bench_so_far, "throughput": result})
    return result


def torch_reference(data_dir: Path, seconds: float) -> dict | None:
    """The eager PyTorch DQL step on the GPU, in its own process, with MDPT's preset networks (the same work)."""
    code = f"""
import json, sys, numpy as np
sys.path.insert(0, {str(HERE)!r}); sys.path.insert(0, {str(HERE.parent)!r})
import torch, torch_dql
from mdpt.data.load import load_dataset
from mdpt.data.normalizer import Normalizer
data = load_dataset("bullet-hopper-medium-replay-v0", data_dir={str(data_dir)!r}, download=False)
n = Normalizer.fit(data)
arrays = {{"obs": n.normalize_obs(data.observations), "act": data.actions, "rew": n.scale_reward(data.rewards),
          "mask": data.masks, "next_obs": n.normalize_obs(data.next_observations)}}
dev = "cuda" if torch.cuda.is_available() else "cpu"
print(json.dumps(torch_dql.benchmark(arrays, 100000, warmup=20, max_seconds={seconds}, device=dev, networks="authors")))
"""
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=seconds + 120)
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except Exception as e:
        log(f"torch reference failed: {e.__class__.__name__}: {str(e)[:200]}")
        return None


# ----------------------------------------------------------------------------- 3. training
def plan(steps: int, seeds: int, chunk: int, smoke: bool) -> list[tuple[str, str, dict]]:
    """[(group name, algo-mode label, base settings)] in priority order."""
    from mdpt.presets import merge

    common = {"steps": steps, "seeds": seeds, "chunk": chunk, "eval_variants": [], "divergence": {"action": "warn"}}
    if smoke:
        common.update({"batch_size": 16, "policy": {"hidden": 16, "depth": 1}, "guidance": {"hidden": 16, "depth": 1}})
    items = []
    for env in ENVS:
        items.append((env, "iql-guidance", {**common, "guidance_kind": "iql"}))
    for env in ENVS:
        items.append((env, "dql-guidance-first", {**common, "algo": "dql", "mode": "guidance-first"}))
    for env in ENVS:
        items.append((env, "dql-joint", {**common, "algo": "dql", "mode": "joint"}))
    for precision in PRECISION_CHECKS:
        numerics = {"matmul_precision": precision}
        items.append(("hopper", f"dql-joint-{precision}",
                      merge(common, {"algo": "dql", "mode": "joint", "policy": numerics, "guidance": numerics})))
    return items


def train(data_dir: Path, work: Path, out: Path, deadline: float, steps: int, seeds: int, chunk: int,
          smoke: bool) -> list[str]:
    from mdpt.data.load import load_dataset
    from mdpt.experiments.config import RunConfig
    from mdpt.experiments.group import GroupRun

    datasets = {f"bullet-{env}-{q}-v0": load_dataset(f"bullet-{env}-{q}-v0", data_dir=data_dir, download=False)
                for env, qs in ENVS.items() for q in qs}
    done = []
    for env, label, base in plan(steps, seeds, chunk, smoke):
        if time.monotonic() > deadline:
            log(f"training: deadline reached before {env} {label}")
            break
        qualities = ("medium-replay",) if label.removeprefix("dql-joint-") in PRECISION_CHECKS else ENVS[env]
        items = []
        for q in qualities:
            ds = f"bullet-{env}-{q}-v0"
            settings = {**base, "dataset": ds}
            if label == "dql-guidance-first":
                settings["guidance_path"] = str(work / ds / "iql-guidance" / "guidance")
            items.append((work / ds / label, RunConfig.from_dict(settings)))
        if label == "dql-guidance-first" and not all(Path(s.stage1.guidance_path).exists() for _, s in items):
            log(f"training: {env} {label} skipped (its guidance did not finish)")
            continue
        t0 = time.monotonic()
        try:
            finished = GroupRun(items, log=log, deadline=deadline, datasets=datasets).execute()
        except Exception as e:
            log(f"training {env} {label} FAILED: {e.__class__.__name__}: {e}")
            traceback.print_exc()
            continue
        if finished:
            done += [str(d.relative_to(work)) for d, _ in items]
            log(f"training {env} {label}: {len(items)} runs x {seeds} seeds x {steps} steps in "
                f"{time.monotonic() - t0:.0f} s")
            pack(work, out, done)
    return done


def pack_name(run: str, kind: str, meta: dict) -> str:
    """Which of the six packs (env x policy / iql / critic: each under 16 MiB) holds an artifact."""
    env = run.split("/")[0].split("-")[1]
    part = "policy" if kind == "policy" else ("critic" if meta.get("kind") == "dql-critic" else "iql")
    return f"{env}-{part}"


def pack(work: Path, out: Path, done: list[str]) -> None:
    """Finished runs -> float16 parameter packs + runs.json (metadata, metrics, summaries)."""
    from safetensors.numpy import save_file

    from mdpt.io import flatten_tree, load_params, read_json, sha256_file

    records, packs = {}, {}
    for name in done:
        run = work / name
        rec = {"config": read_json(run / "config.json"), "summary": read_json(run / "summary.json"),
               "metrics": (run / "metrics.jsonl").read_text(), "artifacts": {}}
        for kind in ("policy", "guidance"):
            if not (run / kind / "meta.json").exists():
                continue
            meta = read_json(run / kind / "meta.json")
            params = flatten_tree(load_params(run / kind / "params.safetensors", meta["files"]["params.safetensors"]))
            if meta.get("kind") == "dql-critic":  # bytes are short: the target critic stands for both
                params = {k: v for k, v in params.items() if not k.startswith("q/")}
                meta["transport"] = "target critic only; online critic set equal to it on unpacking"
            rec["artifacts"][kind] = meta
            for k, v in params.items():
                packs.setdefault(pack_name(name, kind, meta), {})[f"{name}/{kind}/{k}"] = np.asarray(v, np.float16)
        records[name] = rec
    digests = {}
    for part, tensors in packs.items():
        tmp = out / f"pack-{part}.tmp"
        save_file(tensors, str(tmp))
        os.replace(tmp, out / f"pack-{part}.safetensors")
        digests[f"pack-{part}.safetensors"] = sha256_file(out / f"pack-{part}.safetensors")
    for name, rec in records.items():  # which packs each run needs
        rec["packs"] = sorted({f"pack-{pack_name(name, kind, meta)}.safetensors" for kind, meta in rec["artifacts"].items()})
    # the index is written last: a pack it names with another checksum (or none) was cut short
    write_json(out / "runs.json", {"work": str(work), "packs": digests, "runs": records})


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", help="folder of the datasets (default: the data dir, $MDPT_DATA_DIR)")
    ap.add_argument("--work", default="/tmp/mdpt-gpu-runs")
    ap.add_argument("--budget-s", type=float, default=540.0, help="stop everything after this many seconds")
    ap.add_argument("--bench-s", type=float, default=170.0, help="time for the throughput table")
    ap.add_argument("--smoke", action="store_true", help="toy sizes, any machine")
    ap.add_argument("--jobs", default="", help="throughput programs only, NAME:REPLICAS[:PRECISION], e.g. "
                    "dql-joint:32,dql-joint:512:highest,dql-gf:512:bf16,dql-gf-remat:512")
    ap.add_argument("--threads", type=int, default=8, help="parallel compilations")
    ap.add_argument("--no-train", action="store_true", help="the throughput table only")
    ap.add_argument("--compile-cache", default=str(HERE.parent / ".gpu" / "xla-cache"),
                    help="persistent XLA cache ('off': none); a warm machine keeps it between calls, so a later "
                         "call loads the programs an earlier one compiled (its 'compile s' is then load time)")
    args = ap.parse_args(argv)
    os.environ["MDPT_COMPILE_CACHE"] = args.compile_cache
    from mdpt.compile_cache import enable_compile_cache

    log(f"compilation cache: {enable_compile_cache() or 'off'}")
    from mdpt.data.load import default_data_dir

    out, data_dir, work = Path(args.out), Path(args.data) if args.data else default_data_dir(), Path(args.work)
    if args.smoke:
        SMALL_NETS.update(hidden=16, depth=1)
    out.mkdir(parents=True, exist_ok=True)
    deadline = START + args.budget_s
    info = environment()
    log(f"environment: {info}")
    write_json(out / "gpu_bench.json", {"environment": info})
    sizes = (1, 2) if args.smoke else (1, 8, 32, 128, 512)
    chunk = 5 if args.smoke else 200
    torch_s = 3.0 if args.smoke else 20.0
    bench = {"environment": info}
    bench["torch_eager_dql"] = torch_reference(data_dir, torch_s) if not args.jobs else "measured in an earlier call"
    log(f"torch eager DQL: {bench['torch_eager_dql']}")
    write_json(out / "gpu_bench.json", bench)
    try:
        jobs = [(j.split(":")[0], int(j.split(":")[1]), (j.split(":") + [None])[2]) for j in args.jobs.split(",") if j]
        bench["throughput"] = throughput(data_dir, out, sizes, chunk, 0.2 if args.smoke else 1.0,
                                         min(deadline, START + args.bench_s), 2 if args.smoke else args.threads, bench,
                                         jobs)
    except Exception as e:
        log(f"throughput FAILED: {e.__class__.__name__}: {e}")
        traceback.print_exc()
    write_json(out / "gpu_bench.json", bench)
    if args.no_train:
        return 0
    steps, seeds = (20, 2) if args.smoke else (100_000, 5)
    done = train(data_dir, work, out, deadline - 25, steps, seeds, 10 if args.smoke else 1000, args.smoke)
    log(f"finished runs: {len(done)}; total {time.monotonic() - START:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
