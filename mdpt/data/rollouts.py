"""Environment episodes for `mdpt data make`: evaluation returns, random-action returns, and D4RL-array rollouts.

Every episode is reset with a seed derived from integers (`derive_seed`), so the same arguments
give the same returns and the same arrays.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mdpt.data import envs
from mdpt.data.registry import EnvSpec


def make_env(spec: EnvSpec):
    """A fresh Gymnasium env for `spec` (with its time limit), quiet."""
    return envs.make_env(spec.env_id)


def derive_seed(*parts: int) -> int:
    """A 31-bit seed derived from integers (stable across runs and platforms)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


def run_episodes(spec: EnvSpec, seeds: list[int], act: Callable[[np.ndarray], np.ndarray]) -> list[float]:
    """Play one episode per reset seed with actions from `act(obs)`; return each undiscounted return.

    (Returns of episodes stored in a dataset are `Dataset.episode_returns` / `episode_returns`.)
    """
    env = make_env(spec)
    out = []
    try:
        for seed in seeds:
            obs, _ = env.reset(seed=seed)
            total, done = 0.0, False
            while not done:
                obs, r, term, trunc, _ = env.step(act(obs))
                total += float(r)
                done = term or trunc
            out.append(total)
    finally:
        env.close()
    return out


def random_action_returns(spec: EnvSpec, episodes: int, seed: int) -> list[float]:
    """Returns of uniform random actions, each episode in a freshly reset env."""
    rng = np.random.default_rng(derive_seed(seed, 7))
    return run_episodes(spec, [derive_seed(seed, 7, ep) for ep in range(episodes)],
                        lambda obs: rng.uniform(-1, 1, spec.act_dim).astype(np.float32))


def evaluate(sac, actor_params, spec: EnvSpec, episodes: int, seed: int) -> list[float]:
    """Returns of the deterministic policy (tanh of the mean action)."""
    return run_episodes(
        spec, [derive_seed(seed, ep) for ep in range(episodes)],
        lambda obs: np.asarray(sac.deterministic_action(actor_params, obs[None].astype(np.float32))[0]))


def rollout(sac, actor_params, spec: EnvSpec, transitions: int, seed: int, desc: str = "rollout",
            progress: bool = True) -> dict[str, np.ndarray]:
    """`transitions` steps of the stochastic policy in D4RL arrays; a cut final episode is a timeout."""
    import jax
    from tqdm.auto import tqdm

    buf = {
        "observations": np.zeros((transitions, spec.obs_dim), np.float32),
        "actions": np.zeros((transitions, spec.act_dim), np.float32),
        "rewards": np.zeros(transitions, np.float32),
        "terminals": np.zeros(transitions, bool),
        "timeouts": np.zeros(transitions, bool),
        "next_observations": np.zeros((transitions, spec.obs_dim), np.float32),
    }
    key = jax.random.PRNGKey(derive_seed(seed, 1))
    env = make_env(spec)
    episode = 0
    try:
        obs, _ = env.reset(seed=derive_seed(seed, 2, episode))
        for i in tqdm(range(transitions), desc=desc, disable=None if progress else True, leave=False):
            act = np.asarray(sac.sample_action(actor_params, obs[None].astype(np.float32), key, i)[0])
            nxt, r, term, trunc, _ = env.step(act)
            buf["observations"][i] = obs
            buf["actions"][i] = act
            buf["rewards"][i] = r
            buf["terminals"][i] = term
            buf["timeouts"][i] = trunc and not term
            buf["next_observations"][i] = nxt
            if term or trunc:
                episode += 1
                obs, _ = env.reset(seed=derive_seed(seed, 2, episode))
            else:
                obs = nxt
    finally:
        env.close()
    if not buf["terminals"][-1]:
        buf["timeouts"][-1] = True
    return buf
