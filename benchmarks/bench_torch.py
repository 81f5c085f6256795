"""The eager PyTorch Diffusion-QL reference (benchmarks/torch_dql.py) alone and paired with our step."""

from __future__ import annotations

import os
import sys

import numpy as np
from bench_common import HERE, log, timed
from bench_train import make_trainer

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
            (state, _), seconds = timed(trainer.run, state, chunk)
            times.append(seconds)
        return ours_calls * chunk / sum(times[1:])

    def torch_round():
        stepper.run(torch_warmup)
        return torch_steps / timed(stepper.run, torch_steps)[1]

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
