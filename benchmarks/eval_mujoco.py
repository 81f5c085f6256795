"""Evaluated env-steps/s of a DQL and an IDQL policy on Gymnasium MuJoCo vs PyBullet envs, same run.

For each env pair (HalfCheetah: no early termination, so every episode runs every step; Hopper: episodes
end when the robot falls, as in a real evaluation), each policy (random parameters: the work per step is
the trained policy's, 50 candidates scored by an IQL guidance with softmax) is evaluated with
`mdpt.evaluation.rollout.evaluate_agent` on `--envs` parallel episodes for `--steps` steps, the two
families alternating in `--rounds` rounds; the median rate is reported, with the simulator's and the
policy's share per step. Compilation happens in a warm-up before timing; env creation is excluded.

    python benchmarks/eval_mujoco.py --out benchmarks/RESULTS_mujoco.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import jax
import numpy as np

from mdpt.agent import Agent, SelectorConfig
from mdpt.artifacts import Artifact
from mdpt.data.normalizer import Normalizer
from mdpt.data.registry import env_spec_for
from mdpt.evaluation.rollout import evaluate_agent
from mdpt.guidance.module import GuidanceConfig, GuidanceModule
from mdpt.policies.module import DiffusionPolicy, PolicyConfig

PAIRS = (("halfcheetah", "HalfCheetahBulletEnv-v0", "HalfCheetah-v5"), ("hopper", "HopperBulletEnv-v0", "Hopper-v5"))
ALGOS = ("dql", "idql")
CANDIDATES = 50


def agent_for(algo: str, obs_dim: int, act_dim: int) -> Agent:
    meta = {"dataset": {"fingerprint": "x"}, "seeds": [0]}
    pol = DiffusionPolicy(PolicyConfig(algo), obs_dim, act_dim, 1_000_000)
    gui = GuidanceModule(GuidanceConfig("iql"), obs_dim, act_dim, 1_000_000)
    pparams = jax.tree.map(lambda x: x[None], jax.jit(lambda k: pol.init(k)["ema"])(jax.random.PRNGKey(0)))
    gparams = jax.tree.map(lambda x: x[None], jax.jit(lambda k: gui.init(k)["params"])(jax.random.PRNGKey(1)))
    norm = Normalizer.identity(obs_dim)
    return Agent(Artifact(pol, pparams, norm, meta, None), Artifact(gui, gparams, norm, meta, None),
                 SelectorConfig("softmax", candidates=CANDIDATES))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", type=int, default=10, help="parallel episodes (default 10)")
    ap.add_argument("--steps", type=int, default=100, help="env steps per evaluation (default 100)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--out", help="Markdown file to write")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    rows = []
    for name, bullet, mujoco in PAIRS:
        for algo in ALGOS:
            cases = {}
            for env_id in (bullet, mujoco):
                spec = env_spec_for(env_id)
                agent = agent_for(algo, spec.obs_dim, spec.act_dim)
                evaluate_agent(agent, spec, args.envs, max_steps=2)  # compile
                cases[env_id] = (agent, spec, [])
            for r in range(args.rounds):
                order = list(cases.items()) if r % 2 == 0 else list(reversed(cases.items()))
                for _, (agent, spec, out) in order:
                    res = evaluate_agent(agent, spec, args.envs, seed=r, max_steps=args.steps)
                    loop = res.total_seconds - res.setup_seconds
                    out.append((res.env_steps / loop, res.sim_seconds / res.steps * 1e3,
                                res.policy_seconds / res.steps * 1e3, res.env_steps))
            for env_id, (_, _, out) in cases.items():
                rate, sim, pol, steps = (float(np.median([o[i] for o in out])) for i in range(4))
                rows.append((name, algo, env_id, rate, sim, pol, steps))
                print(f"{name:11s} {algo:4s} {env_id:24s} {rate:8.1f} env-steps/s  sim {sim:6.2f} ms/step  "
                      f"policy {pol:6.2f} ms/step  ({steps:.0f} env steps)", flush=True)
    load_after = os.getloadavg()
    if args.out:
        cmd = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
        lines = ["# Evaluation throughput: Gymnasium MuJoCo vs PyBullet", "",
                 f"Command: `{cmd}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); "
                 f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), JAX {jax.__version__}, "
                 f"load average {load_before[0]:.1f} before and {load_after[0]:.1f} after (other work shared "
                 f"the cores when it is above 0).", "",
                 f"{args.envs} parallel episodes x {args.steps} steps, median of {args.rounds} alternating rounds; "
                 f"{CANDIDATES} candidates scored by an IQL guidance (softmax), random parameters. A step is one "
                 f"policy call for all episodes plus one simulator step of each live episode.", "",
                 "| env | policy | Gymnasium id | env-steps/s | simulator ms/step | policy ms/step | env steps timed |",
                 "|---|---|---|---|---|---|---|"]
        lines += [f"| {n} | {a} | `{e}` | {r:.1f} | {s:.2f} | {p:.2f} | {st:.0f} |" for n, a, e, r, s, p, st in rows]
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
