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
import functools
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mdpt.data.batches import device_arrays
from mdpt.data.normalizer import Normalizer
from mdpt.diffusion.ddpm import REMAT
from mdpt.guidance.module import GuidanceConfig, GuidanceModule
from mdpt.policies.module import DiffusionPolicy, PolicyConfig
from mdpt.training.profiling import compiled_flops, compiled_memory_bytes
from mdpt.training.trainer import Trainer
from mdpt.training.xla_options import training_compiler_options

HERE = Path(__file__).resolve().parent
DATA = Path("/work/shared/datasets/bullet-hopper-medium-replay-v0.hdf5")
TOTAL_STEPS = 1_000_000  # only sets the cosine schedule length
SECTIONS = ("train", "seeds", "infer", "torch", "eval")
XLA_DEFAULTS = "xla-defaults"  # a row variant: compiled with XLA's default options (no `training_compiler_options`)
REMAT_MEANS = {  # every chain_remat but "none", as the report describes it
    "matmuls": "the backward pass keeps each reverse step's matmul outputs and recomputes its activations",
    "all": "the backward pass keeps each reverse step's input and recomputes the step",
}

MEMORY_TARGET_ALGOS = ("dql", "edp")  # issue 12's memory target: the algorithms whose Q term runs in the policy step
# name -> (policy algo or None, guidance kind, policy role, guidance role, mode label)
UPDATES = {
    "iql": (None, "iql", None, "train", "guidance alone"),
    "dql-joint": ("dql", "dql-critic", "train", "train", "joint"),
    "dql-gf": ("dql", "iql", "train", "frozen", "guidance-first"),
    "idql-joint": ("idql", "iql", "train", "train", "joint"),
    "idql-gf": ("idql", "iql", "train", "frozen", "guidance-first"),
    "edp-joint": ("edp", "dql-critic", "train", "train", "joint"),
    "edp-gf": ("edp", "iql", "train", "frozen", "guidance-first"),
    "cfg-gf": ("cfg", "iql", "train", "frozen", "guidance-first"),
}


def log(*a):
    print(*a, flush=True)


# ----------------------------------------------------------------------------- set-up
def load_data():
    """(Dataset or None, device arrays, numpy arrays, description)."""
    if DATA.exists():
        try:
            from mdpt.data.load import load_dataset

            data = load_dataset(DATA)
            norm = Normalizer.fit(data)
            arrays = device_arrays(data, norm)
            return data, norm, arrays, f"{DATA.name} ({len(data)} transitions)"
        except Exception as e:  # fall back to synthetic data of the same shape
            log(f"could not load {DATA}: {e}; using synthetic data")
    from mdpt.data.dataset import Dataset

    rng = np.random.default_rng(0)
    n = 100_000
    obs = rng.normal(size=(n, 15)).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[999::1000] = True
    data = Dataset(obs, rng.uniform(-1, 1, (n, 3)).astype(np.float32), rng.normal(size=n).astype(np.float32),
                   np.zeros(n, bool), timeouts, rng.normal(size=(n, 15)).astype(np.float32), env=_hopper_env())
    norm = Normalizer.fit(data)
    return data, norm, device_arrays(data, norm), f"synthetic ({n} transitions, obs 15, act 3)"


def _hopper_env():
    from mdpt.data.registry import env_spec_for

    return env_spec_for("hopper")


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    devs = jax.devices()
    accel = [f"{d.platform}: {getattr(d, 'device_kind', '')}" for d in devs if d.platform != "cpu"]
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"cpu": cpu, "cores": os.cpu_count(), "accelerator": ", ".join(accel) or "none",
            "backend": jax.default_backend(), "jax": jax.__version__, "load": load}


# ----------------------------------------------------------------------------- measurements
def matmul_peak(n: int, repeats: int) -> float:
    """Best-of float32 matmul FLOP/s (n x n @ n x n) on the default device."""
    f = jax.jit(lambda a, b: a @ b)
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def make_trainer(name: str, arrays, obs_dim: int, act_dim: int, batch: int, variant: str = "none") -> Trainer:
    """`variant`: "none", a chain_remat setting of the DQL policy, or XLA_DEFAULTS (compiled without
    MDPT's training compiler options)."""
    algo, kind, p_role, g_role, _ = UPDATES[name]
    remat = variant if variant in REMAT else "none"
    policy = DiffusionPolicy(PolicyConfig(algo, chain_remat=remat), obs_dim, act_dim, TOTAL_STEPS) if algo else None
    guidance = GuidanceModule(GuidanceConfig(kind), obs_dim, act_dim, TOTAL_STEPS)
    frozen = {}
    if g_role == "frozen":  # one trained-elsewhere guidance shared by every seed (seed axis of size 1)
        frozen["guidance"] = jax.tree.map(lambda x: x[None], guidance.init(jax.random.PRNGKey(123))["params"])
    options = {} if variant == XLA_DEFAULTS else None
    return Trainer(arrays, policy, guidance, p_role, g_role, batch, frozen, compiler_options=options)


def prepare_update(name: str, arrays, dims, batch: int, seeds: int, chunk: int, variant: str = "none") -> dict:
    """One update compiled, analysed (FLOPs, memory) and run once (the warm-up); timed later by `time_updates`."""
    trainer = make_trainer(name, arrays, *dims, batch, variant)
    state = trainer.init(list(range(seeds)))
    t0 = time.perf_counter()
    compiled = trainer.compiled(state, chunk)
    compile_s = time.perf_counter() - t0
    # XLA's cost analysis counts a while-loop (lax.scan) body once: the chunk's FLOPs are one step's
    # FLOPs for all S seeds. A rematerialized chain is a loop inside that loop, counted once too.
    flops = compiled_flops(compiled) if variant not in REMAT_MEANS else None
    mem = compiled_memory_bytes(compiled)
    if mem:  # the resident dataset is an argument every mode shares; report the step's own memory
        mem["dataset"] = trainer.dataset_bytes
        mem["peak"] -= mem["dataset"]
    state, m = trainer.run(state, chunk)
    jax.block_until_ready(state)
    return {"name": name, "label": row_label(name, variant), "variant": variant, "seeds": seeds, "chunk": chunk,
            "compile_s": compile_s, "flops_per_step": flops, "flops_per_seed_step": flops / seeds if flops else None,
            "memory": mem, "_run": (trainer, state), "_times": []}


def time_updates(rows: list[dict], target_s: float, min_calls: int) -> None:
    """Time every prepared update in alternating rounds (one call each per round), so that a slow
    moment of a shared machine falls on all of them alike; steps/s is the median over the calls."""
    rounds = 0
    while rounds < min_calls or (min(sum(r["_times"]) for r in rows) < target_s and rounds < 50):
        for r in rows:
            trainer, state = r["_run"]
            t0 = time.perf_counter()
            state, m = trainer.run(state, r["chunk"])
            jax.block_until_ready(state)
            r["_times"].append(time.perf_counter() - t0)
            r["_run"] = (trainer, state)
            r["finite"] = bool(np.all(np.asarray(m["nonfinite_at"]) < 0))
        rounds += 1
    for r in rows:
        times = r.pop("_times")
        r.pop("_run")
        r["calls"] = len(times)
        r["steps_per_s"] = r["chunk"] / float(np.median(times))
        r["seed_steps_per_s"] = r["steps_per_s"] * r["seeds"]
        r["achieved_flops"] = r["flops_per_step"] * r["steps_per_s"] if r["flops_per_step"] else None


def row_label(name: str, variant: str) -> str:
    if variant == XLA_DEFAULTS:
        return f"{name} (XLA defaults)"
    return name if variant == "none" else f"{name} (chain_remat={variant})"


def bench_inference(data, norm, arrays, dims, envs: int, candidates: int, repeats: int) -> dict:
    from mdpt.agent import Agent, SelectorConfig
    from mdpt.artifacts import Artifact

    obs_dim, act_dim = dims
    meta = {"dataset": {"fingerprint": "x"}, "seeds": [0]}
    out = {}
    for algo in ("dql", "idql"):
        pol = DiffusionPolicy(PolicyConfig(algo), obs_dim, act_dim, TOTAL_STEPS)
        gui = GuidanceModule(GuidanceConfig("iql"), obs_dim, act_dim, TOTAL_STEPS)
        pparams = jax.tree.map(lambda x: x[None], pol.init(jax.random.PRNGKey(0))["ema"])
        gparams = jax.tree.map(lambda x: x[None], gui.init(jax.random.PRNGKey(1))["params"])
        agent = Agent(Artifact(pol, pparams, norm, meta, None), Artifact(gui, gparams, norm, meta, None),
                      SelectorConfig("argmax", candidates=candidates))
        idx = np.random.default_rng(0).integers(0, len(data), envs)
        obs = np.asarray(data.observations[idx], np.float32)[None]
        key = jax.random.PRNGKey(0)
        agent.act(obs, key)  # compile
        times = []
        for i in range(repeats):
            t0 = time.perf_counter()
            agent.act(obs, jax.random.fold_in(key, i))
            times.append(time.perf_counter() - t0)
        lat = float(np.median(times))
        out[algo] = {"latency_ms": lat * 1e3, "p90_ms": float(np.percentile(times, 90)) * 1e3,
                     "actions_per_s": envs / lat, "candidates_per_s": envs * candidates / lat,
                     "net": pol.config.net, "repeats": repeats}
    return out


# The eager PyTorch step's networks (benchmarks/torch_dql.py): "authors" is the same work as our step.
TORCH_NETWORKS = {"authors": "MDPT's preset: LayerNorm critic, AdamW actor",
                  "diffusion-ql": "Diffusion-QL's own: plain Mish critic, Adam actor"}


def torch_key(networks: str, threads: int) -> str:
    return f"{networks} networks, {threads} thread{'s' if threads > 1 else ''}"


def _torch_dql():
    """benchmarks/torch_dql.py, or None where torch is not installed."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    sys.path.insert(0, str(HERE))
    import torch_dql

    return torch_dql


def bench_torch(data, norm, steps: int, warmup: int, max_seconds: float) -> dict | None:
    torch_dql = _torch_dql()
    if torch_dql is None:
        log("torch is not installed: the eager PyTorch reference is skipped (pip install torch==2.13.0)")
        return None
    arrays = _torch_arrays(data, norm)
    cores = os.cpu_count() or 1
    res = {}
    for networks in TORCH_NETWORKS:
        for threads in ([cores, 1] if cores > 1 else [1]):
            key = torch_key(networks, threads)
            res[key] = torch_dql.benchmark(arrays, steps, warmup, threads=threads, max_seconds=max_seconds,
                                           networks=networks)
            log(f"  torch eager DQL, {key}: {res[key]['steps_per_s']:.2f} steps/s")
    return res


def bench_paired(data, norm, arrays, dims, batch: int, rounds: int, chunk: int) -> dict | None:
    """Our joint DQL (1 seed) and the eager PyTorch step on the same networks (torch at all cores),
    timed in alternating rounds: a slow moment of a shared machine falls on both, so the ratio of each
    round is steadier than a ratio of two separately timed rates. Each side's first call of a round is
    an untimed warm-up: a chunk of ours right after PyTorch ran measured up to 25% slower than the
    next ones (caches and worker threads the other side left cold)."""
    torch_dql = _torch_dql()
    if torch_dql is None:
        return None
    trainer = make_trainer("dql-joint", arrays, *dims, batch)
    state = trainer.init([0])
    stepper = torch_dql.Stepper(_torch_arrays(data, norm), threads=os.cpu_count() or 1, batch_size=batch,
                                networks="authors")
    ours_calls, torch_warmup, torch_steps = 2, 2, chunk

    def ours_round():
        nonlocal state
        times = []
        for _ in range(1 + ours_calls):
            t0 = time.perf_counter()
            state, _ = trainer.run(state, chunk)
            jax.block_until_ready(state)
            times.append(time.perf_counter() - t0)
        return ours_calls * chunk / sum(times[1:])

    def torch_round():
        stepper.run(torch_warmup)
        t0 = time.perf_counter()
        stepper.run(torch_steps)
        return torch_steps / (time.perf_counter() - t0)

    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(ours_round())
        theirs.append(torch_round())
    ratio = np.array(ours) / np.array(theirs)
    return {"rounds": rounds, "ours_steps_per_s": float(np.median(ours)), "torch_steps_per_s": float(np.median(theirs)),
            "ratio": float(np.median(ratio)), "ratio_q1": float(np.percentile(ratio, 25)),
            "ratio_q3": float(np.percentile(ratio, 75)), "ours_steps": ours_calls * chunk, "torch_steps": torch_steps,
            **stepper.describe()}


def _torch_arrays(data, norm) -> dict:
    return {"obs": norm.normalize_obs(data.observations), "act": data.actions,
            "rew": norm.scale_reward(data.rewards), "mask": data.masks,
            "next_obs": norm.normalize_obs(data.next_observations)}


EVAL_ENV = "halfcheetah"
EVAL_DATA = Path("/work/shared/datasets/bullet-halfcheetah-medium-replay-v0.hdf5")
# (policy algo, candidates, timed steps per evaluation (quick: a third))
EVAL_CASES = (("dql", 50, 60), ("idql", 50, 30), ("idql", 256, 8))


def eval_agent(algo: str, candidates: int, norm):
    """A 1-seed agent with random parameters: `algo` policy + IQL guidance, softmax selector."""
    from mdpt.agent import Agent, SelectorConfig
    from mdpt.artifacts import Artifact

    obs_dim, act_dim = norm.obs_mean.shape[0], 6
    meta = {"dataset": {"fingerprint": "x"}, "seeds": [0]}
    pol = DiffusionPolicy(PolicyConfig(algo), obs_dim, act_dim, TOTAL_STEPS)
    gui = GuidanceModule(GuidanceConfig("iql"), obs_dim, act_dim, TOTAL_STEPS)
    pparams = jax.tree.map(lambda x: x[None], jax.jit(lambda k: pol.init(k)["ema"])(jax.random.PRNGKey(0)))
    gparams = jax.tree.map(lambda x: x[None], jax.jit(lambda k: gui.init(k)["params"])(jax.random.PRNGKey(1)))
    return Agent(Artifact(pol, pparams, norm, meta, None), Artifact(gui, gparams, norm, meta, None),
                 SelectorConfig("softmax", candidates=candidates))


def bench_eval(envs: int, groups: list[int], rounds: int, quick: bool, cases=EVAL_CASES) -> dict:
    """Evaluated env-steps/s: today's evaluation (benchmarks/eval_baseline.py: one SyncVectorEnv,
    one blocking agent call per step) vs `mdpt.evaluation.rollout.evaluate_agent` with each number
    of groups, alternating in `rounds` rounds, on HalfCheetah (no early termination, so all `envs`
    episodes run every step). Rates exclude the set-up (making and resetting the envs), which is
    the same code for both; compilation happens in a warm-up run before timing."""
    sys.path.insert(0, str(HERE))
    import eval_baseline

    from mdpt.data.normalizer import Normalizer
    from mdpt.evaluation.rollout import evaluate_agent

    if EVAL_DATA.exists():
        from mdpt.data.load import load_dataset

        norm, desc = Normalizer.fit(load_dataset(EVAL_DATA)), EVAL_DATA.name
    else:
        norm, desc = Normalizer.identity(26), "identity (no halfcheetah dataset)"
    out = {"env": EVAL_ENV, "normalizer": desc, "envs": envs, "rounds": rounds, "cases": []}
    for algo, candidates, steps in cases:
        steps = max(3, steps // 3) if quick else steps
        agent = eval_agent(algo, candidates, norm)

        def old(seed, agent=agent, steps=steps):
            key = jax.random.PRNGKey(seed)
            return eval_baseline.evaluate(lambda o, t: agent.act(o, jax.random.fold_in(key, t)), EVAL_ENV, 1,
                                          envs, seed=seed, max_steps=steps)

        runs = {"old": old}
        for g in groups:
            runs[f"groups={g}"] = functools.partial(evaluate_agent, agent, EVAL_ENV, envs, max_steps=steps, groups=g)
        t0 = time.perf_counter()
        old(0)  # compiles (envs,) shape; evaluate_agent compiles its group width below
        for g in groups:
            evaluate_agent(agent, EVAL_ENV, envs, max_steps=1, groups=g)
        warm_s = time.perf_counter() - t0
        rec = {name: [] for name in runs}
        for r in range(rounds):
            for name, fn in (runs.items() if r % 2 == 0 else reversed(runs.items())):
                res = fn(seed=r)
                loop = res.total_seconds - res.setup_seconds
                rec[name].append({"rate": res.env_steps / loop, "env_steps": res.env_steps, "loop_s": loop,
                                  "setup_s": res.setup_seconds, "steps": res.steps,
                                  "sim_ms": res.sim_seconds / res.steps * 1e3,
                                  "policy_ms": res.policy_seconds / res.steps * 1e3,
                                  "overlap_ms": res.overlap_seconds / res.steps * 1e3})
        case = {"algo": algo, "candidates": candidates, "steps": steps, "warmup_s": warm_s, "runs": {}}
        for name, rows in rec.items():
            med = {k: float(np.median([row[k] for row in rows])) for k in rows[0]}
            med["rates"] = [row["rate"] for row in rows]
            case["runs"][name] = med
        base = case["runs"]["old"]["rate"]
        for name, m in case["runs"].items():
            m["ratio"] = m["rate"] / base
            log(f"  eval {algo} x{candidates} {name:9s}: {m['rate']:7.1f} env-steps/s ({m['ratio']:.2f}x), "
                f"sim {m['sim_ms']:.1f} ms/step, policy wait {m['policy_ms']:.1f} ms/step, "
                f"overlap {m['overlap_ms']:.1f} ms/step")
        out["cases"].append(case)
    return out


# ----------------------------------------------------------------------------- report
def fmt(x, spec=".1f", none="n/a", unit=""):
    return none if x is None else format(x, spec) + unit


def mib(b):
    return None if b is None else b / 2**20


def verdict(ok):
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def report(info: dict, res: dict, cmd: str) -> str:
    m = info["machine"]
    on_gpu = m["backend"] == "gpu" or m["backend"] == "cuda"
    L = ["# MDPT benchmark results", ""]
    L += [f"- date: {info['date']}", f"- command: `{cmd}`",
          f"- machine: {m['cpu']}, {m['cores']} cores; accelerator: {m['accelerator']}; jax backend {m['backend']}",
          f"- jax {m['jax']}, python {platform.python_version()}" + (f", torch {next(iter(res['torch'].values()))['torch']}" if res.get("torch") else ""),
          f"- load average at start {fmt_load(info['load_start'])}, at end {fmt_load(info.get('load_end'))} "
          "(the CPU is shared: other processes running at the same time slow every number below)",
          f"- XLA options of the training programs: {info['xla_options'] or 'none (XLA defaults)'}",
          f"- data: {info['data']}; batch {info['batch']}, width 256, T = 5 (EDP: T = 50, one-step Q term)",
          f"- timing: one compiled `lax.scan` chunk per call (chunk sizes below), warm-up call excluded; the updates "
          f"of one seed count are timed in alternating rounds (one call each per round) until each has at least "
          f"{info['min_calls']} calls and {info['target_s']} s; steps/s from the median call; block_until_ready", ""]
    peak = res.get("peak")
    if peak:
        L += [f"Measured float32 matmul peak ({info['mm_n']}^3, best of {info['mm_repeats']}): "
              f"**{peak / 1e9:.1f} GFLOP/s**", ""]

    rows = res.get("train", [])
    if rows:
        L += ["## Training updates", "",
              "| update | mode | seeds | chunk | steps/s (per seed) | seed-steps/s | GFLOP / seed-step | GFLOP/s | % matmul peak | peak MiB (XLA) | compile s |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            frac = r["achieved_flops"] / peak * 100 if (peak and r["achieved_flops"]) else None
            L.append(f"| {r['label']} | {UPDATES[r['name']][4]} | {r['seeds']} | {r['chunk']} | {r['steps_per_s']:.2f} | "
                     f"{r['seed_steps_per_s']:.2f} | {fmt(r['flops_per_seed_step'] and r['flops_per_seed_step'] / 1e9, '.3f')} | "
                     f"{fmt(r['achieved_flops'] and r['achieved_flops'] / 1e9)} | {fmt(frac)} | "
                     f"{fmt(mib(r['memory']['peak']) if r['memory'] else None, '.2f')} | {r['compile_s']:.1f} |"
                     + ("" if r["finite"] else " (non-finite metrics!)"))
        L += ["", "FLOPs are XLA's cost analysis of the compiled chunk (which counts the scan body once, i.e. one "
              "step for all seeds; n/a for the chain_remat rows, whose chain is a loop inside that loop). Peak memory is XLA's memory analysis of the compiled chunk: arguments "
              "(train state) + outputs + temporaries - donated (aliased) bytes, less the resident dataset "
              "(an argument every mode shares).", ""]

    mem_rows = []
    s1 = {r["label"]: r for r in rows if r["seeds"] == 1}
    speed = {}
    for algo, remat in [("dql", "none"), ("idql", "none"), ("edp", "none")] + [("dql", r) for r in REMAT_MEANS]:
        j, g = s1.get(row_label(f"{algo}-joint", remat)), s1.get(row_label(f"{algo}-gf", remat))
        if j and g and j["memory"] and g["memory"]:
            label = algo if remat == "none" else f"{algo}, chain_remat={remat}"
            mem_rows.append((label, j["memory"], g["memory"]))
            speed[label] = g["steps_per_s"] / j["steps_per_s"]
    if mem_rows:
        L += ["## Guidance-first vs joint: peak memory and speed of the compiled step (1 seed)", "",
              "| algo | joint MiB (state / temp) | guidance-first MiB (state / temp) | memory reduction | "
              "guidance-first / joint steps/s |", "|---|---:|---:|---:|---:|"]
        for algo, j, g in mem_rows:
            L.append(f"| {algo} | {mib(j['peak']):.2f} ({mib(j['argument']):.2f} / {mib(j['temp']):.2f}) | "
                     f"{mib(g['peak']):.2f} ({mib(g['argument']):.2f} / {mib(g['temp']):.2f}) | "
                     f"{(1 - g['peak'] / j['peak']) * 100:.1f}% | {speed[algo]:.2f}x |")
        L += ["", "The paper reports up to 38.1% less memory and compute for guidance-first."
              + (" IDQL's guidance-first step is its joint step without the critic's update (its policy loss never "
                 "reads a critic)." if "idql" in speed else ""), ""]

    inf = res.get("infer")
    if inf:
        L += [f"## Inference ({info['envs']} environments x {info['candidates']} candidates, argmax of IQL min-Q, 1 seed)", "",
              "| policy | noise net | median latency ms | p90 ms | actions/s | candidate actions/s |", "|---|---|---:|---:|---:|---:|"]
        for algo, r in inf.items():
            L.append(f"| {algo} | {r['net']} | {r['latency_ms']:.2f} | {r['p90_ms']:.2f} | {r['actions_per_s']:.0f} | "
                     f"{r['candidates_per_s']:.0f} |")
        L.append("")

    ev = res.get("eval")
    if ev:
        L += eval_table(ev, info)

    tr = res.get("torch")
    if tr:
        L += ["## Reference: eager PyTorch joint DQL (benchmarks/torch_dql.py, 1 seed, Python loop)", "",
              "| networks | torch threads | steps/s | timed steps |", "|---|---:|---:|---:|"]
        for r in tr.values():
            L.append(f"| {TORCH_NETWORKS[r['networks']]} | {r['threads']} | {r['steps_per_s']:.2f} | {r['steps']} |")
        L += ["", "The two implementations are compared on the same networks (MDPT's preset); Diffusion-QL's own "
              "critic (no LayerNorm, Mish throughout) is less work and is listed for reference.", ""]
    elif "torch" in info["sections"]:
        L += ["## Reference: eager PyTorch", "", "skipped: torch is not installed.", ""]
    pr = res.get("paired")
    if pr:
        L += ["### Our joint DQL and the eager PyTorch step, timed in alternating rounds", "",
              f"{pr['rounds']} rounds, each {pr['ours_steps']} of our joint DQL steps (1 seed, compiled chunks) and "
              f"then {pr['torch_steps']} eager PyTorch steps ({pr['threads']} threads, MDPT's preset networks), each "
              "side after an untimed warm-up call: median "
              f"{pr['ours_steps_per_s']:.2f} vs {pr['torch_steps_per_s']:.2f} steps/s; the ratio of each round has median "
              f"**{pr['ratio']:.2f}x** (quartiles {pr['ratio_q1']:.2f}x-{pr['ratio_q3']:.2f}x). The headline uses this "
              "ratio: a slow moment of the machine falls on both sides of a round.", ""]

    L += headlines(info, res, s1, peak, mem_rows, on_gpu)
    return "\n".join(L) + "\n"


def eval_table(ev: dict, info: dict) -> list[str]:
    L = [f"## Evaluation throughput ({ev['env']}, {ev['envs']} environments = 1 seed x {ev['envs']} episodes, "
         f"softmax over IQL min-Q, {os.cpu_count()} cores)", "",
         "Evaluated env-steps/s of the evaluation loop (set-up excluded: making and resetting the envs is "
         "the same code in both), median of "
         f"{ev['rounds']} alternating rounds; `old` = today's code (benchmarks/eval_baseline.py: one "
         "SyncVectorEnv, one blocking agent call per step), `groups=G` = `mdpt.evaluation.rollout."
         "evaluate_agent` (G pipelined groups of episodes). Per step: sim = main thread stepping simulators, "
         "policy wait = main thread in or waiting for the agent call (policy time not hidden by the "
         "simulator), overlap = simulator time while an agent call was in flight. Random-parameter agents "
         f"(normalizer: {ev['normalizer']}); HalfCheetah never terminates early, so every episode runs every step.",
         "", "Overlap ceiling = (sim + policy) / max(sim, policy) of the `old` run: the speed-up of a "
         "perfect overlap in which neither slows the other down (on 2 cores they share the cores, so the "
         "simulator's steps slow down while the policy computes, see its sim ms/step).",
         "", "| policy | candidates | steps | evaluation | env-steps/s | vs old | sim ms/step | policy wait ms/step | "
         "overlap ms/step | overlap ceiling | rates of the rounds |", "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for c in ev["cases"]:
        o = c["runs"]["old"]
        ceiling = (o["sim_ms"] + o["policy_ms"]) / max(o["sim_ms"], o["policy_ms"], 1e-9)
        for name, m in c["runs"].items():
            L.append(f"| {c['algo']} | {c['candidates']} | {c['steps']} | {name} | {m['rate']:.1f} | {m['ratio']:.2f}x | "
                     f"{m['sim_ms']:.1f} | {m['policy_ms']:.1f} | {m['overlap_ms']:.1f} | "
                     f"{f'{ceiling:.2f}x' if name == 'old' else ''} | {', '.join(f'{r:.0f}' for r in m['rates'])} |")
    L.append("")
    return L


def eval_best(ev: dict, algo: str, candidates: int):
    for c in ev.get("cases", []):
        if c["algo"] == algo and c["candidates"] == candidates:
            new = [(m["ratio"], name) for name, m in c["runs"].items() if name != "old"]
            return max(new) if new else None
    return None


def fmt_load(load):
    return "n/a" if not load else " / ".join(f"{x:.1f}" for x in load)


def headlines(info, res, s1, peak, mem_rows, on_gpu) -> list[str]:
    rows = res.get("train", [])
    tr = res.get("torch")
    same = [r["steps_per_s"] for r in (tr or {}).values() if r["networks"] == "authors"]
    torch_cores = same[0] if same else None
    torch_best = max(same) if same else None
    lighter = [r["steps_per_s"] for r in (tr or {}).values() if r["networks"] == "diffusion-ql"]
    dj, dg = s1.get("dql-joint"), s1.get("dql-gf")
    d8 = next((r for r in rows if r["label"] == "dql-joint" and r["seeds"] == 8), None)
    L = ["## Headline ratios and targets", "", "| quantity | value | target | verdict |", "|---|---:|---|---|"]
    first_train_row = len(L)
    gf = dg["steps_per_s"] / dj["steps_per_s"] if dj and dg else None
    L.append(f"| guidance-first DQL step vs joint DQL step (1 seed) | {fmt(gf, '.2f', unit='x')} | CPU >= 1.5x | "
             f"{verdict(None if gf is None or on_gpu else gf >= 1.5)} |")
    pr = res.get("paired")
    vs = pr["ratio"] if pr else (dj["steps_per_s"] / torch_cores if dj and torch_cores else None)
    vs_best = dj["steps_per_s"] / torch_best if dj and torch_best else None
    L.append(f"| our joint DQL (1 seed) vs eager PyTorch, same networks, torch at {os.cpu_count()} threads"
             f"{', alternating rounds (median)' if pr else ''} | {fmt(vs, '.2f', unit='x')} | CPU >= 2.5x | "
             f"{verdict(None if vs is None or on_gpu else vs >= 2.5)} |")
    L.append(f"| our joint DQL (1 seed) vs eager PyTorch, same networks, torch at its best thread count | "
             f"{fmt(vs_best, '.2f', unit='x')} | (CPU >= 2.5x) | {verdict(None if vs_best is None or on_gpu else vs_best >= 2.5)} |")
    if dj and lighter:
        L.append(f"| our joint DQL (1 seed) vs eager PyTorch with Diffusion-QL's lighter critic, torch at its best "
                 f"thread count | {dj['steps_per_s'] / max(lighter):.2f}x | (reference: not the same work) | n/a |")
    agg = d8["seed_steps_per_s"] / torch_cores if d8 and torch_cores else None
    L.append(f"| joint DQL seed-steps/s with 8 seeds vs eager PyTorch | {fmt(agg, '.2f', unit='x')} | GPU >= 20x | "
             f"{verdict(agg >= 20 if (agg is not None and on_gpu) else None)}"
             f"{'' if on_gpu else ' (CPU run: GPU target not applicable)'} |")
    fr = dj["achieved_flops"] / peak if dj and peak and dj["achieved_flops"] else None
    fr8 = d8["achieved_flops"] / peak if d8 and peak and d8["achieved_flops"] else None
    L.append(f"| joint DQL step, fraction of measured matmul peak (1 seed / 8 seeds) | {fmt(fr and fr * 100, unit='%')} / "
             f"{fmt(fr8 and fr8 * 100, unit='%')} | CPU >= 50% | {verdict(None if fr is None or on_gpu else fr >= 0.5)} |")
    for algo, j, g in mem_rows:
        red = 1 - g["peak"] / j["peak"]
        if algo.startswith(MEMORY_TARGET_ALGOS):
            L.append(f"| guidance-first {algo} peak memory below joint | {red * 100:.1f}% | CPU >= 30% | "
                     f"{verdict(None if on_gpu else red >= 0.30)} |")
        else:
            L.append(f"| guidance-first {algo} peak memory below joint | {red * 100:.1f}% | (none; the paper: up to "
                     "38.1%) | n/a |")
    if not rows and not tr and not pr:  # no training or torch section in this run: no rows about them
        del L[first_train_row:]
    ev = res.get("eval")
    if ev:
        for algo, cands in (("dql", 50), ("idql", 50), ("idql", 256)):
            best = eval_best(ev, algo, cands)
            if best:
                L.append(f"| evaluated env-steps/s, {algo} {ev['envs']} envs x {cands} candidates, pipelined "
                         f"({best[1]}) vs today's | {best[0]:.2f}x | CPU >= 2x | {verdict(None if on_gpu else best[0] >= 2)} |")
    L.append("")
    L += ["## Notes on the targets", ""] + notes(info, res, s1, peak, gf, vs, vs_best, fr, mem_rows, on_gpu)
    return L


def notes(info, res, s1, peak, gf, vs, vs_best, fr, mem_rows, on_gpu) -> list[str]:
    out = []
    dj, dg = s1.get("dql-joint"), s1.get("dql-gf")
    if dj and dg and dj["flops_per_step"] and dg["flops_per_step"]:
        out.append(f"- FLOPs: a joint DQL step costs {dj['flops_per_step'] / 1e9:.2f} GFLOP, a guidance-first DQL step "
                   f"{dg['flops_per_step'] / 1e9:.2f} GFLOP ({dj['flops_per_step'] / dg['flops_per_step']:.2f}x fewer "
                   f"would give the same speed-up at constant efficiency). Guidance-first drops the critic update and "
                   "its 5-step EMA-actor chain for next actions, but keeps the expensive part: the actor's BC loss plus "
                   "the 5-step chain with gradient through the noise net, and a (smaller, 2x256 ReLU+LayerNorm) IQL "
                   "critic in the Q term.")
    if gf is not None and not on_gpu and gf < 1.5:
        out.append(f"- guidance-first vs joint ({gf:.2f}x) misses 1.5x: the removed work is only "
                   f"{(1 - dg['flops_per_step'] / dj['flops_per_step']) * 100:.0f}% of the joint step's FLOPs, so "
                   "the ceiling at equal efficiency is about the FLOP ratio above.")
    if fr is not None and not on_gpu and fr < 0.5:
        out.append(f"- matmul peak ({fr * 100:.0f}%): the step is dozens of small (256 x 256 x ~256) matmuls plus "
                   "Mish (exp, log1p, tanh) elementwise passes over 256 x 256 activations, run one after another "
                   "through the 5-step chain; such shapes cannot keep a CPU's GEMM kernels at large-matmul speed, "
                   "and the transcendental activations count few FLOPs but take real time. More seeds (vmap) "
                   "batch the matmuls and raise efficiency somewhat (see the 8-seed row).")
    if vs is not None and not on_gpu and vs < 2.5:
        out.append(f"- vs eager PyTorch ({vs:.2f}x at {os.cpu_count()} threads, {fmt(vs_best, '.2f', unit='x')} against its "
                   "best thread count): at batch 256 the PyTorch step is itself dominated by the same small matmuls "
                   "and Mish kernels (oneDNN/MKL), so Python dispatch overhead is a modest share; XLA's fusion saves "
                   "the elementwise round trips but not the matmul time.")
    if vs is not None and vs_best is not None and vs > 1.5 * vs_best:
        out.append("- torch with all cores was much slower than with 1 thread: with the CPU shared by other "
                   "processes, OpenMP threads wait on each other at every small op; a user on a loaded 2-core "
                   "machine would see this too, but the 1-thread ratio is the fairer comparison.")
    for algo, j, g in mem_rows:
        red = 1 - g["peak"] / j["peak"]
        if not on_gpu and red < 0.30 and algo.startswith(MEMORY_TARGET_ALGOS):
            out.append(f"- {algo} memory ({red * 100:.0f}% lower): the train state (params, EMA, Adam moments) and "
                       "activations kept for the backward pass through the actor's chain dominate; guidance-first "
                       "removes the critic's state and its target-action chain only (the chain_remat rows keep "
                       "less of the actor's chain).")
    for remat in REMAT_MEANS:
        pairs = [(s1.get(n), s1.get(row_label(n, remat))) for n in ("dql-joint", "dql-gf")]
        if all(a and b and a["memory"] and b["memory"] for a, b in pairs):
            (j, jr), (g, gr) = pairs
            out.append(f"- chain_remat={remat} ({REMAT_MEANS[remat]}): peak memory {mib(jr['memory']['peak']):.2f} vs {mib(j['memory']['peak']):.2f} MiB joint, "
                       f"{mib(gr['memory']['peak']):.2f} vs {mib(g['memory']['peak']):.2f} MiB guidance-first; steps/s "
                       f"{jr['steps_per_s'] / j['steps_per_s']:.2f}x (joint) and {gr['steps_per_s'] / g['steps_per_s']:.2f}x "
                       "(guidance-first) the default's, timed in the same alternating rounds.")
    for name in UPDATES:
        r, d = s1.get(name), s1.get(row_label(name, XLA_DEFAULTS))
        if r and d:
            out.append(f"- {name} with MDPT's CPU training options vs XLA's defaults: {r['steps_per_s'] / d['steps_per_s']:.2f}x "
                       f"steps/s, peak memory {mib(r['memory']['peak']):.2f} vs {mib(d['memory']['peak']):.2f} MiB "
                       "(same alternating rounds; `mdpt/training/xla_options.py`).")
    ev = res.get("eval")
    for c in (ev or {}).get("cases", []):
        o = c["runs"]["old"]
        ceiling = (o["sim_ms"] + o["policy_ms"]) / max(o["sim_ms"], o["policy_ms"], 1e-9)
        best = eval_best(ev, c["algo"], c["candidates"])
        if not on_gpu and best and best[0] < 2 and ceiling < 2:
            out.append(f"- evaluation, {c['algo']} x{c['candidates']} ({best[0]:.2f}x): overlapping the simulator "
                       f"({o['sim_ms']:.0f} ms/step) with the policy ({o['policy_ms']:.0f} ms/step) can at best hide "
                       f"the shorter of the two, a {ceiling:.2f}x ceiling, and only with a core free for the "
                       "simulator while the policy runs; on 2 cores the policy already keeps both busy, so the "
                       "overlapped simulator and policy slow each other down. 2x needs a cheaper policy step "
                       "(fewer candidates, e.g. `eval.curve_candidates` for learning curves) or more cores.")
    if not on_gpu and ("train" in info["sections"] or "seeds" in info["sections"]):
        out.append("- GPU target (>= 20x eager PyTorch in aggregate with 8 seeds) was not measured: no GPU in this run.")
    load = info.get("load_start")
    cores = info["machine"]["cores"] or 1
    if load and max(load[0], (info.get("load_end") or [0])[0]) > cores:
        out.append(f"- WARNING: the load average ({fmt_load(load)} at start, {fmt_load(info.get('load_end'))} at end) "
                   f"exceeded the {cores} cores: other jobs shared the CPU, so the matmul peak, the '% of peak' figures "
                   "and especially multi-threaded PyTorch (OpenMP threads spinning on each other) are unreliable; "
                   "rerun on an idle machine before quoting these numbers.")
    out.append("- All CPU numbers come from a 2-core machine shared with other jobs (see the load average); "
               "expect run-to-run variation of tens of percent.")
    return out


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- main
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
