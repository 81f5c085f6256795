"""The evaluation section: env-steps/s of the pipelined evaluation against the frozen pre-pipelining
code (benchmarks/eval_baseline.py), same run, alternating."""

from __future__ import annotations

import functools
import sys

import jax
import numpy as np
from bench_common import HERE, TOTAL_STEPS, data_file, log, timed

from mdpt.data.normalizer import Normalizer
from mdpt.guidance.module import GuidanceConfig, GuidanceModule
from mdpt.policies.module import DiffusionPolicy, PolicyConfig

EVAL_ENV = "halfcheetah"
EVAL_DATA = data_file("bullet-halfcheetah-medium-replay-v0")
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
        def warm_up(agent=agent, old=old):
            old(0)  # compiles (envs,) shape; evaluate_agent compiles its group width below
            for g in groups:
                evaluate_agent(agent, EVAL_ENV, envs, max_steps=1, groups=g)

        warm_s = timed(warm_up)[1]
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
