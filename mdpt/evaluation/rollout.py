"""Vectorized evaluation rollouts in the PyBullet Gymnasium environments.

``evaluate`` runs ``num_policies x episodes`` episodes at once and asks the caller for actions
with batched ``act_fn`` calls, so a JAX policy evaluates every seed and every episode of a
group in one batched (vmapped) call. ``evaluate_agent`` does this for an ``mdpt.agent.Agent``.

Pipelining (``groups > 1``): the episodes are split into ``groups`` groups of equal width
(episode ``e`` is in group ``e // width``). While the policy computes the actions of one group
(JAX dispatch is asynchronous: ``act_fn`` may return a JAX array that is still being computed),
the main thread steps the simulators of another group, so the simulator and the policy overlap
instead of strictly alternating. Each group is always passed with the same shape (a narrower
last group is padded with copies of its last episode's observation), so a jitted policy
compiles once. Episodes are never moved between groups and every env is stepped with the
action computed from its own observation, so the trajectories given a policy's actions are
exactly those of ``groups=1``.

Determinism and fairness:

- every evaluation builds fresh environments (a PyBullet env that has already run an episode
  does not replay the same trajectory after ``reset(seed=...)``, so envs are never reused);
- env ``(p, e)`` is reset with seed ``seed + e``: every policy index sees the same ``episodes``
  start states, so policies (e.g. training seeds, or guided vs unguided sampling) are compared on
  identical starts;
- each env runs exactly one episode. After an env reports ``terminated`` or ``truncated`` its
  later rewards are ignored, it is no longer stepped (``vector="sync"``; Gymnasium's async
  vector env steps and autoresets it, and those steps are ignored), and the observation passed
  to ``act_fn`` for it stays frozen at its last pre-termination value;
- the same ``act_fn`` and seed give the same returns run to run, for any ``groups``. A
  stochastic policy that draws its noise per call (as ``evaluate_agent`` does, with one key per
  step and group) gets other random draws with other ``groups``: the returns are then equal in
  distribution, not bitwise (``groups=1`` keeps the key sequence of the unpipelined evaluation).

Timing: ``setup_seconds`` (making and resetting the envs), ``sim_seconds`` (the main thread
stepping simulators, or waiting for async workers), ``policy_seconds`` (the main thread inside
``act_fn`` or waiting for its result: with pipelining, only the policy time that the simulator
did not hide), ``overlap_seconds`` (simulator time during which a policy call was in flight: the
time the two could run concurrently) and ``total_seconds``. ``sim_seconds + policy_seconds +
setup_seconds <= total_seconds`` in every mode.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from mdpt.data.envs import make_env, quiet_stdout
from mdpt.data.registry import EnvSpec, env_spec_for, normalized_score
from mdpt.errors import MDPTError

ActFn = Callable[..., object]
VECTOR_KINDS = ("sync", "async")


@dataclass
class EvalResult:
    """Outcome of ``evaluate``; arrays have shape (num_policies, episodes)."""

    env: EnvSpec
    seed: int
    returns: np.ndarray  # float64, undiscounted episode returns
    lengths: np.ndarray  # int64, env steps taken in the episode
    terminated: np.ndarray  # bool, the episode ended by termination (the robot fell)
    finished: np.ndarray  # bool, the episode ended (terminated or time limit) within max_steps
    steps: int  # vector steps run (= act_fn calls per group)
    setup_seconds: float
    sim_seconds: float
    policy_seconds: float
    total_seconds: float
    nonfinite_actions: int = 0  # action entries that were NaN/inf and were replaced by 0
    vector: str = "sync"
    extra: dict = field(default_factory=dict)
    overlap_seconds: float = 0.0  # simulator time while a policy call was in flight
    groups: int = 1  # pipelined episode groups (1: no pipelining)

    @property
    def num_policies(self) -> int:
        return int(self.returns.shape[0])

    @property
    def episodes(self) -> int:
        return int(self.returns.shape[1])

    @property
    def sim_fraction(self) -> float:
        """Share of the evaluation's wall time spent inside the simulator's step."""
        return self.sim_seconds / self.total_seconds if self.total_seconds > 0 else 0.0

    @property
    def env_steps(self) -> int:
        """Env steps evaluated (the sum of the episode lengths)."""
        return int(self.lengths.sum())

    def scores(self, reference: str = "d4rl", attrs: dict | None = None) -> np.ndarray:
        """Normalized scores 100 * (R - min) / (max - min), shape (num_policies, episodes)."""
        return np.asarray(normalized_score(self.returns, self.env, reference, attrs), dtype=np.float64)

    def to_dict(self, reference: str | None = None, attrs: dict | None = None) -> dict:
        """JSON-ready record (lists), optionally with normalized scores for ``reference``."""
        out = {
            "env": self.env.env_id,
            "seed": self.seed,
            "returns": self.returns.tolist(),
            "lengths": self.lengths.tolist(),
            "steps": self.steps,
            "setup_s": self.setup_seconds,
            "sim_s": self.sim_seconds,
            "policy_s": self.policy_seconds,
            "overlap_s": self.overlap_seconds,
            "eval_s": self.total_seconds,
            "groups": self.groups,
            "nonfinite_actions": self.nonfinite_actions,
        }
        if reference is not None:
            out["reference"] = reference
            out["scores"] = self.scores(reference, attrs).tolist()
        return out


# ----------------------------------------------------------------------------- environments
class _SerialEnvs:
    """The envs of one group in this process; only the given (live) envs are stepped."""

    def __init__(self, env_id: str, n: int, quiet: bool):
        self.envs = [make_env(env_id, quiet) for _ in range(n)]
        self.single_action_space = self.envs[0].action_space
        self.single_observation_space = self.envs[0].observation_space

    def reset(self, seeds: list[int]) -> np.ndarray:
        return np.stack([np.asarray(e.reset(seed=s)[0], np.float32) for e, s in zip(self.envs, seeds, strict=True)])

    def step(self, act: np.ndarray, live: np.ndarray):
        n = len(self.envs)
        obs = [None] * n
        rew = np.zeros(n, np.float64)
        term = np.zeros(n, bool)
        trunc = np.zeros(n, bool)
        for i in np.flatnonzero(live):
            obs[i], rew[i], term[i], trunc[i], _ = self.envs[i].step(act[i])
        return obs, rew, term, trunc

    def close(self) -> None:
        for e in self.envs:
            e.close()


class _WorkerEnvs:
    """The envs of one group in Gymnasium's AsyncVectorEnv (one worker process per env)."""

    def __init__(self, env_id: str, n: int, quiet: bool, mp_context: str):
        fns = [functools.partial(make_env, env_id, quiet) for _ in range(n)]
        try:
            self.venv = gym.vector.AsyncVectorEnv(fns, context=mp_context)
        except (OSError, EOFError, RuntimeError) as e:
            raise MDPTError(f"could not start {n} async env workers ({e.__class__.__name__}: {e}); a script that "
                            "uses vector='async' with the 'spawn' context needs an `if __name__ == '__main__':` "
                            "guard; or use vector='sync'") from None
        self.single_action_space = self.venv.single_action_space
        self.single_observation_space = self.venv.single_observation_space

    def reset(self, seeds: list[int]) -> np.ndarray:
        obs, _ = self.venv.reset(seed=seeds)
        return np.asarray(obs, np.float32).reshape(len(seeds), -1)

    def step(self, act: np.ndarray, live: np.ndarray):
        obs, rew, term, trunc, _ = self.venv.step(act)  # finished envs are stepped too (ignored)
        return list(obs), np.asarray(rew, np.float64), np.asarray(term, bool), np.asarray(trunc, bool)

    def close(self) -> None:
        self.venv.close()


def _takes_group(act_fn: ActFn) -> bool:
    try:
        params = inspect.signature(act_fn).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params)


# ----------------------------------------------------------------------------- evaluation
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
    groups: int = 1,
) -> EvalResult:
    """Run ``num_policies * episodes`` episodes in parallel, one ``act_fn`` call per env step and group.

    ``act_fn(obs, step_index)`` gets raw float32 observations of shape
    ``(num_policies, episodes, obs_dim)`` and returns actions ``(num_policies, episodes,
    act_dim)`` (numpy or JAX); they are clipped to the action box. Env ``(p, e)`` is reset with
    seed ``seed + e``. Stops when every episode has ended or after ``max_steps`` steps (default:
    the env's time limit).

    ``groups > 1`` pipelines the policy with the simulator (see the module docstring): the
    episodes are split into ``groups`` groups of width ``ceil(episodes / groups)`` and
    ``act_fn(obs, step_index, group)`` is called with ``obs`` of shape ``(num_policies, width,
    obs_dim)`` (padded columns repeat the group's last episode; their actions are ignored). To
    overlap, ``act_fn`` must return without waiting for its result (e.g. a JAX array from a
    jitted function, not ``np.asarray`` of it); the result is read after the next group's
    simulators have been stepped. A stochastic ``act_fn`` must draw different noise for
    different groups of the same step.

    ``vector`` is ``"sync"`` (the envs in this process, stepped by the main thread) or
    ``"async"`` (one worker process per episode; worth it only when the simulator dominates and
    cores are free). Async workers start with ``mp_context`` (``"spawn"`` by default: forking a
    process that runs JAX's threads is unsafe; spawn re-imports the caller's main module, so
    scripts need an ``if __name__ == "__main__":`` guard). ``quiet`` silences PyBullet's output.
    """
    spec = env_spec_for(env) if isinstance(env, str) else env
    if num_policies < 1 or episodes < 1:
        raise MDPTError(f"evaluation needs num_policies >= 1 and episodes >= 1; got {num_policies} and {episodes}")
    if vector not in VECTOR_KINDS:
        raise MDPTError(f"unknown vector env kind {vector!r}; use one of: {', '.join(VECTOR_KINDS)}")
    if int(groups) != groups or groups < 1:
        raise MDPTError(f"groups must be an integer >= 1; got {groups}")
    limit = spec.max_episode_steps if max_steps is None else int(max_steps)
    if limit < 1:
        raise MDPTError(f"max_steps must be >= 1; got {max_steps}")
    P, E = num_policies, episodes
    G = min(int(groups), E)
    W = -(-E // G)  # group width
    G = -(-E // W)  # no empty group
    if groups > 1 and not _takes_group(act_fn):
        raise MDPTError("with groups > 1, act_fn is called as act_fn(obs, step_index, group); "
                        "it takes fewer arguments")
    with_group = groups > 1  # act_fn(obs, t, group), whatever the number of groups left
    # group g holds episodes lo[g]:hi[g]; its state is flat over (policy, episode-in-group)
    lo = [g * W for g in range(G)]
    hi = [min((g + 1) * W, E) for g in range(G)]
    width = [b - a for a, b in zip(lo, hi, strict=True)]

    t_start = time.perf_counter()
    sets: list = []
    try:
        with quiet_stdout(quiet):
            for w in width:
                sets.append(_SerialEnvs(spec.env_id, P * w, quiet) if vector == "sync"
                            else _WorkerEnvs(spec.env_id, P * w, quiet, mp_context))
        space = sets[0].single_action_space
        low = np.broadcast_to(np.asarray(space.low, np.float32), (spec.act_dim,))
        high = np.broadcast_to(np.asarray(space.high, np.float32), (spec.act_dim,))
        obs_dim = int(np.prod(sets[0].single_observation_space.shape))
        if obs_dim != spec.obs_dim or int(np.prod(space.shape)) != spec.act_dim:
            raise MDPTError(f"{spec.env_id}: the installed env has obs/act sizes {obs_dim}/{space.shape}, "
                            f"expected {spec.obs_dim}/{spec.act_dim}; check the pybullet-envs-gymnasium version")
        obs = []
        with quiet_stdout(quiet):
            for g, envs in enumerate(sets):
                obs.append(envs.reset([seed + e for _ in range(P) for e in range(lo[g], hi[g])]))
        setup_seconds = time.perf_counter() - t_start

        returns = [np.zeros(P * w, np.float64) for w in width]
        lengths = [np.zeros(P * w, np.int64) for w in width]
        done = [np.zeros(P * w, bool) for w in width]
        terminated_at = [np.zeros(P * w, bool) for w in width]
        sim_seconds = policy_seconds = overlap_seconds = 0.0
        nonfinite = 0
        t_next = [0] * G  # the next step index of each group
        pending: list = [None] * G  # each group's act_fn result not yet read
        calls = 0

        def active(g: int) -> bool:
            return t_next[g] < limit and not done[g].all()

        def dispatch(g: int) -> None:
            nonlocal policy_seconds, calls
            t0 = time.perf_counter()
            o = obs[g].reshape(P, width[g], obs_dim)  # a fresh array: act_fn may keep it, JAX may read it later
            o = np.concatenate([o, np.repeat(o[:, -1:], W - width[g], axis=1)], axis=1) if width[g] < W else o.copy()
            pending[g] = act_fn(o, t_next[g], g) if with_group else act_fn(o, t_next[g])
            policy_seconds += time.perf_counter() - t0
            calls += 1

        order = [g for g in range(G) if active(g)]
        while order:
            for i, g in enumerate(order):
                if pending[g] is None:
                    dispatch(g)
                t0 = time.perf_counter()
                act = np.asarray(pending[g], dtype=np.float32)  # blocks on a JAX array
                policy_seconds += time.perf_counter() - t0
                pending[g] = None
                if act.shape != (P, W, spec.act_dim):
                    raise MDPTError(f"act_fn returned actions of shape {act.shape}; expected "
                                    f"{(P, W, spec.act_dim)} (num_policies, "
                                    f"{'group width' if with_group else 'episodes'}, act_dim) for {spec.env_id}")
                act = act[:, :width[g]].reshape(P * width[g], spec.act_dim)
                live = ~done[g]
                bad = ~np.isfinite(act)
                if bad.any():
                    nonfinite += int(bad[live].sum())
                    act = np.where(bad, 0.0, act).astype(np.float32)
                act = np.clip(act, low, high)

                # the next group's policy call runs while this group's simulators step
                nxt = next((h for h in order[i + 1:] + order[:i] if active(h)), None)
                if nxt is not None and pending[nxt] is None:
                    dispatch(nxt)
                in_flight = any(p is not None and not isinstance(p, np.ndarray) for p in pending)
                t0 = time.perf_counter()
                nxt_obs, rew, term, trunc = sets[g].step(act, live)
                dt = time.perf_counter() - t0
                sim_seconds += dt
                overlap_seconds += dt if in_flight else 0.0
                t_next[g] += 1

                ended = live & (term | trunc)
                returns[g][live] += rew[live]
                lengths[g][live] += 1
                terminated_at[g] |= live & term
                done[g] |= ended
                for j in np.flatnonzero(live & ~ended):
                    obs[g][j] = nxt_obs[j]
            order = [g for g in order if active(g)]
    finally:
        with quiet_stdout(quiet):
            for envs in sets:
                envs.close()
    total = time.perf_counter() - t_start

    def whole(parts):  # (P, E) from the groups' flat (P * width) arrays
        return np.concatenate([a.reshape(P, w) for a, w in zip(parts, width, strict=True)], axis=1)

    return EvalResult(
        env=spec,
        seed=seed,
        returns=whole(returns),
        lengths=whole(lengths),
        terminated=whole(terminated_at),
        finished=whole(done),
        steps=max(t_next),
        setup_seconds=setup_seconds,
        sim_seconds=sim_seconds,
        policy_seconds=policy_seconds,
        total_seconds=total,
        nonfinite_actions=nonfinite,
        vector=vector,
        extra={"policy_calls": calls, "group_width": W},
        overlap_seconds=overlap_seconds,
        groups=G,
    )


def evaluate_agent(agent, env: EnvSpec | str, episodes: int, seed: int = 0, max_steps: int | None = None,
                   *, groups: int = 2, vector: str = "sync", quiet: bool = True) -> EvalResult:
    """Evaluate every policy seed of an ``mdpt.agent.Agent`` at once, pipelined over ``groups``.

    ``agent`` needs ``num_seeds`` and ``act_async(obs, key)`` (which returns a JAX array without
    waiting for it). The key of step ``t`` is ``fold_in(PRNGKey(seed), t)`` with ``groups=1``
    (the unpipelined evaluation's sequence) and ``fold_in(fold_in(PRNGKey(seed), t), g)`` for
    group ``g`` otherwise: reproducible run to run, equal in distribution across ``groups``.
    The agent compiles once per group shape ``(num_seeds, ceil(episodes / groups), obs_dim)``.
    """
    import jax

    key = jax.random.PRNGKey(seed)
    if groups == 1:
        def act_fn(obs, t):
            return agent.act_async(obs, jax.random.fold_in(key, t))
    else:
        def act_fn(obs, t, g):
            return agent.act_async(obs, jax.random.fold_in(jax.random.fold_in(key, t), g))

    return evaluate(act_fn, env, agent.num_seeds, episodes, seed=seed, max_steps=max_steps, vector=vector,
                    quiet=quiet, groups=groups)
