"""The inference section: latency and throughput of one act call."""

from __future__ import annotations

import jax
import numpy as np
from bench_common import TOTAL_STEPS, timed

from mdpt.guidance.module import GuidanceConfig, GuidanceModule
from mdpt.policies.module import DiffusionPolicy, PolicyConfig


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
            times.append(timed(agent.act, obs, jax.random.fold_in(key, i))[1])
        lat = float(np.median(times))
        out[algo] = {"latency_ms": lat * 1e3, "p90_ms": float(np.percentile(times, 90)) * 1e3,
                     "actions_per_s": envs / lat, "candidates_per_s": envs * candidates / lat,
                     "net": pol.config.net, "repeats": repeats}
    return out
