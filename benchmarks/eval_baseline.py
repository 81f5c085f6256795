"""Frozen copy of `mdpt.evaluation.rollout.evaluate` as of commit cd39076 (before pipelining).

The `--section eval` benchmark (benchmarks/run.py) measures the current evaluation against this
code in the same run, and tests/test_eval_pipeline.py checks that the new evaluation gives the
same returns. Do not edit (except imports): it is the reference.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from mdpt.data.envs import make_env, quiet_stdout
from mdpt.data.registry import EnvSpec, env_spec_for
from mdpt.errors import MDPTError
from mdpt.evaluation.rollout import EvalResult

ActFn = Callable[[np.ndarray, int], object]
VECTOR_KINDS = ("sync", "async")


def _vector_env(env_id: str, n: int, vector: str, quiet: bool, mp_context: str):
    fns = [functools.partial(make_env, env_id, quiet) for _ in range(n)]
    if vector == "sync":
        return gym.vector.SyncVectorEnv(fns)
    try:
        return gym.vector.AsyncVectorEnv(fns, context=mp_context)
    except (OSError, EOFError, RuntimeError) as e:
        raise MDPTError(f"could not start {n} async env workers ({e.__class__.__name__}: {e}); a script that "
                        "uses vector='async' with the 'spawn' context needs an `if __name__ == '__main__':` "
                        "guard; or use vector='sync'") from None


def evaluate(
    act_fn: ActFn,
    env: EnvSpec | str,
    num_policies: int,
    episodes: int,
    seed: int = 0,
    max_steps: int | None = None,
    vector: str = "sync",
    *,
    quiet: bool = True,
    mp_context: str = "spawn",
) -> EvalResult:
    """Run ``num_policies * episodes`` episodes in parallel, one ``act_fn`` call per env step.

    ``act_fn(obs, step_index)`` gets raw float32 observations of shape
    ``(num_policies, episodes, obs_dim)`` and returns actions ``(num_policies, episodes,
    act_dim)`` (numpy or JAX); they are clipped to the action box. Env ``(p, e)`` is reset with
    seed ``seed + e``. Stops when every episode has ended or after ``max_steps`` steps (default:
    the env's time limit). ``vector`` is ``"sync"`` (one process) or ``"async"`` (one worker
    process per episode; worth it only when the simulator dominates and cores are free).
    Async workers start with ``mp_context`` (``"spawn"`` by default: forking a process that
    runs JAX's threads is unsafe; spawn re-imports the caller's main module, so scripts need an
    ``if __name__ == "__main__":`` guard). ``quiet`` silences PyBullet's stdout chatter.
    """
    spec = env_spec_for(env) if isinstance(env, str) else env
    if num_policies < 1 or episodes < 1:
        raise MDPTError(f"evaluation needs num_policies >= 1 and episodes >= 1; got {num_policies} and {episodes}")
    if vector not in VECTOR_KINDS:
        raise MDPTError(f"unknown vector env kind {vector!r}; use one of: {', '.join(VECTOR_KINDS)}")
    limit = spec.max_episode_steps if max_steps is None else int(max_steps)
    if limit < 1:
        raise MDPTError(f"max_steps must be >= 1; got {max_steps}")
    P, E, n = num_policies, episodes, num_policies * episodes

    t_start = time.perf_counter()
    with quiet_stdout(quiet):
        venv = _vector_env(spec.env_id, n, vector, quiet, mp_context)
    try:
        space = venv.single_action_space
        low = np.broadcast_to(np.asarray(space.low, np.float32), (spec.act_dim,))
        high = np.broadcast_to(np.asarray(space.high, np.float32), (spec.act_dim,))
        obs_dim = int(np.prod(venv.single_observation_space.shape))
        if obs_dim != spec.obs_dim or int(np.prod(space.shape)) != spec.act_dim:
            raise MDPTError(f"{spec.env_id}: the installed env has obs/act sizes {obs_dim}/{space.shape}, "
                            f"expected {spec.obs_dim}/{spec.act_dim}; check the pybullet-envs-gymnasium version")
        seeds = [seed + e for _ in range(P) for e in range(E)]
        with quiet_stdout(quiet):
            obs, _ = venv.reset(seed=seeds)
        obs = np.array(obs, dtype=np.float32).reshape(n, obs_dim)
        setup_seconds = time.perf_counter() - t_start

        returns = np.zeros(n, np.float64)
        lengths = np.zeros(n, np.int64)
        done = np.zeros(n, bool)
        terminated_at = np.zeros(n, bool)
        sim_seconds = policy_seconds = 0.0
        nonfinite = 0
        steps = 0
        while steps < limit and not done.all():
            t0 = time.perf_counter()
            raw = act_fn(obs.reshape(P, E, obs_dim).copy(), steps)  # a copy: act_fn may keep it
            act = np.asarray(raw, dtype=np.float32)  # blocks on a JAX array
            policy_seconds += time.perf_counter() - t0
            if act.shape != (P, E, spec.act_dim):
                raise MDPTError(f"act_fn returned actions of shape {act.shape}; expected "
                                f"{(P, E, spec.act_dim)} (num_policies, episodes, act_dim) for {spec.env_id}")
            act = act.reshape(n, spec.act_dim)
            bad = ~np.isfinite(act)
            if bad.any():
                nonfinite += int(bad[~done].sum())
                act = np.where(bad, 0.0, act).astype(np.float32)
            act = np.clip(act, low, high)

            t0 = time.perf_counter()
            nxt, rew, term, trunc, _ = venv.step(act)
            sim_seconds += time.perf_counter() - t0
            steps += 1

            live = ~done
            returns[live] += np.asarray(rew, np.float64)[live]
            lengths[live] += 1
            term = np.asarray(term, bool)
            ended = live & (term | np.asarray(trunc, bool))
            terminated_at |= live & term
            running = live & ~ended
            obs[running] = np.asarray(nxt, np.float32).reshape(n, obs_dim)[running]
            done |= ended
    finally:
        with quiet_stdout(quiet):
            venv.close()
    total = time.perf_counter() - t_start
    return EvalResult(
        env=spec,
        seed=seed,
        returns=returns.reshape(P, E),
        lengths=lengths.reshape(P, E),
        terminated=terminated_at.reshape(P, E),
        finished=done.reshape(P, E),
        steps=steps,
        setup_seconds=setup_seconds,
        sim_seconds=sim_seconds,
        policy_seconds=policy_seconds,
        total_seconds=total,
        nonfinite_actions=nonfinite,
        vector=vector,
    )
