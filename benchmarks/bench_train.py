"""The training sections: every update prepared (compiled, its cost and memory analysed) and timed in
alternating rounds."""

from __future__ import annotations

import jax
import numpy as np
from bench_common import REMAT_MEANS, TOTAL_STEPS, UPDATES, XLA_DEFAULTS, timed

from mdpt.diffusion.ddpm import REMAT
from mdpt.guidance.module import GuidanceConfig, GuidanceModule
from mdpt.policies.module import DiffusionPolicy, PolicyConfig
from mdpt.training.profiling import compiled_flops, compiled_memory_bytes
from mdpt.training.trainer import Trainer


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
    compiled, compile_s = timed(trainer.compiled, state, chunk)
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
            (state, m), seconds = timed(trainer.run, state, r["chunk"])
            r["_times"].append(seconds)
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
