"""Soft Actor-Critic in JAX/Flax/Optax, for making datasets by the D4RL recipe (`mdpt data make`).

Standard SAC (Haarnoja et al. 2018, with automatic entropy tuning): a tanh-squashed Gaussian
actor, twin Q critics with Polyak-averaged targets (target <- (1 - tau) target + tau online),
target entropy -act_dim. Networks are 256x256 ReLU MLPs, Adam at 3e-4, batch 256, gamma 0.99,
tau 0.005 (the defaults of Stable-Baselines3 / sbx). `update` runs several gradient steps in one
jitted `lax.scan`. The replay buffer lives on the host (numpy) and grows with the run.

The state is a plain pytree, saved as safetensors (`save_state` / `load_state`), never pickled.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


@dataclass(frozen=True)
class SACConfig:
    hidden: tuple[int, ...] = (256, 256)
    lr: float = 3e-4
    batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005
    learning_starts: int = 5000
    init_alpha: float = 1.0
    target_entropy: float | None = None  # None: -act_dim
    train_freq: int = 1  # env steps between update calls; each call does train_freq gradient steps

    def to_json(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


class MLP(nn.Module):
    hidden: tuple[int, ...]
    out: int

    @nn.compact
    def __call__(self, x):
        for h in self.hidden:
            x = nn.relu(nn.Dense(h)(x))
        return nn.Dense(self.out)(x)


class Actor(nn.Module):
    hidden: tuple[int, ...]
    act_dim: int

    @nn.compact
    def __call__(self, obs):
        out = MLP(self.hidden, 2 * self.act_dim)(obs)
        mean, log_std = jnp.split(out, 2, axis=-1)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


class Critic(nn.Module):
    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, obs, act):
        x = jnp.concatenate([obs, act], axis=-1)
        q1 = MLP(self.hidden, 1, name="q1")(x)[..., 0]
        q2 = MLP(self.hidden, 1, name="q2")(x)[..., 0]
        return q1, q2


class SACState(NamedTuple):
    actor: Any
    critic: Any
    target_critic: Any
    log_alpha: jax.Array
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any
    updates: jax.Array  # gradient steps taken


def _squashed_sample(mean, log_std, key):
    """Action in (-1, 1) and its log-probability under the tanh-squashed Gaussian."""
    std = jnp.exp(log_std)
    u = mean + std * jax.random.normal(key, mean.shape)
    logp_u = -0.5 * (((u - mean) / std) ** 2 + 2 * log_std + jnp.log(2 * jnp.pi))
    # log(1 - tanh(u)^2), computed stably
    correction = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    return jnp.tanh(u), jnp.sum(logp_u - correction, axis=-1)


class SAC:
    """Pure functions of one SAC configuration; jitted once per (config, sizes) in a process."""

    def __init__(self, obs_dim: int, act_dim: int, config: SACConfig = SACConfig()):
        self.obs_dim, self.act_dim, self.config = obs_dim, act_dim, config
        self.actor = Actor(config.hidden, act_dim)
        self.critic = Critic(config.hidden)
        self.opt = optax.adam(config.lr)
        self.target_entropy = (-float(act_dim) if config.target_entropy is None
                               else float(config.target_entropy))
        self.sample_action = jax.jit(self._sample_action)
        self.deterministic_action = jax.jit(self._deterministic_action)
        self.update = jax.jit(self._update)
        self.init = jax.jit(self._init)

    # ---- state

    def _init(self, key: jax.Array) -> SACState:
        k1, k2 = jax.random.split(key)
        obs = jnp.zeros((1, self.obs_dim))
        act = jnp.zeros((1, self.act_dim))
        actor = self.actor.init(k1, obs)
        critic = self.critic.init(k2, obs, act)
        log_alpha = jnp.full((), np.log(self.config.init_alpha), jnp.float32)
        return SACState(actor, critic, critic, log_alpha, self.opt.init(actor), self.opt.init(critic),
                        self.opt.init(log_alpha), jnp.zeros((), jnp.int32))

    # ---- acting

    def _sample_action(self, actor_params, obs, key, step=0):
        """Stochastic action; the noise comes from `fold_in(key, step)` (one dispatch per env step)."""
        mean, log_std = self.actor.apply(actor_params, obs)
        action, _ = _squashed_sample(mean, log_std, jax.random.fold_in(key, step))
        return action

    def _deterministic_action(self, actor_params, obs):
        mean, _ = self.actor.apply(actor_params, obs)
        return jnp.tanh(mean)

    # ---- learning

    def _one_update(self, state: SACState, batch: dict, key: jax.Array):
        cfg = self.config
        k_next, k_pi = jax.random.split(key)
        alpha = jnp.exp(state.log_alpha)

        mean, log_std = self.actor.apply(state.actor, batch["next_obs"])
        next_act, next_logp = _squashed_sample(mean, log_std, k_next)
        tq1, tq2 = self.critic.apply(state.target_critic, batch["next_obs"], next_act)
        target_q = jnp.minimum(tq1, tq2) - alpha * next_logp
        target = jax.lax.stop_gradient(batch["rew"] + cfg.gamma * batch["mask"] * target_q)

        def critic_loss(params):
            q1, q2 = self.critic.apply(params, batch["obs"], batch["act"])
            return 0.5 * (jnp.mean((q1 - target) ** 2) + jnp.mean((q2 - target) ** 2)), jnp.mean(q1)

        (c_loss, q_mean), c_grads = jax.value_and_grad(critic_loss, has_aux=True)(state.critic)
        c_updates, critic_opt = self.opt.update(c_grads, state.critic_opt, state.critic)
        critic = optax.apply_updates(state.critic, c_updates)

        def actor_loss(params):
            mean, log_std = self.actor.apply(params, batch["obs"])
            act, logp = _squashed_sample(mean, log_std, k_pi)
            q1, q2 = self.critic.apply(critic, batch["obs"], act)
            return jnp.mean(alpha * logp - jnp.minimum(q1, q2)), logp

        (a_loss, logp), a_grads = jax.value_and_grad(actor_loss, has_aux=True)(state.actor)
        a_updates, actor_opt = self.opt.update(a_grads, state.actor_opt, state.actor)
        actor = optax.apply_updates(state.actor, a_updates)

        entropy_gap = jax.lax.stop_gradient(logp + self.target_entropy)

        def alpha_loss(log_alpha):
            return -jnp.mean(log_alpha * entropy_gap)

        al_loss, al_grad = jax.value_and_grad(alpha_loss)(state.log_alpha)
        al_updates, alpha_opt = self.opt.update(al_grad, state.alpha_opt, state.log_alpha)
        log_alpha = optax.apply_updates(state.log_alpha, al_updates)

        # Polyak averaging: target <- (1 - tau) * target + tau * online.
        target_critic = jax.tree.map(lambda t, o: (1.0 - cfg.tau) * t + cfg.tau * o, state.target_critic, critic)
        new = SACState(actor, critic, target_critic, log_alpha, actor_opt, critic_opt, alpha_opt,
                       state.updates + 1)
        metrics = {"critic_loss": c_loss, "actor_loss": a_loss, "alpha": jnp.exp(log_alpha),
                   "q": q_mean, "entropy": -jnp.mean(logp)}
        return new, metrics

    def _update(self, state: SACState, batches: dict, key: jax.Array, step=0):
        """K gradient steps (`batches` has a leading axis K) in one `lax.scan`, with noise from
        `fold_in(key, step)`; returns the new state and mean metrics."""
        k = batches["rew"].shape[0]
        keys = jax.random.split(jax.random.fold_in(key, step), k)

        def body(s, xs):
            batch, kk = xs
            return self._one_update(s, batch, kk)

        state, metrics = jax.lax.scan(body, state, (batches, keys))
        return state, jax.tree.map(jnp.mean, metrics)


@functools.lru_cache(maxsize=8)
def get_sac(obs_dim: int, act_dim: int, config: SACConfig = SACConfig()) -> SAC:
    """One SAC (and its compiled functions) per configuration and sizes, shared within a process."""
    return SAC(obs_dim, act_dim, config)


# --------------------------------------------------------------------------------------------
# replay buffer (host)


class ReplayBuffer:
    """Growing numpy arrays in D4RL naming; `sample(rng, k, batch)` gives k stacked batches."""

    KEYS = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")

    def __init__(self, obs_dim: int, act_dim: int, capacity: int):
        self.size = 0
        self.data = {
            "observations": np.zeros((capacity, obs_dim), np.float32),
            "actions": np.zeros((capacity, act_dim), np.float32),
            "rewards": np.zeros((capacity,), np.float32),
            "terminals": np.zeros((capacity,), bool),
            "timeouts": np.zeros((capacity,), bool),
            "next_observations": np.zeros((capacity, obs_dim), np.float32),
        }

    @property
    def capacity(self) -> int:
        return len(self.data["rewards"])

    def add(self, obs, act, rew, terminal, timeout, next_obs) -> None:
        if self.size >= self.capacity:
            raise RuntimeError("replay buffer full")  # the make run sizes it to the number of steps
        i = self.size
        d = self.data
        d["observations"][i] = obs
        d["actions"][i] = act
        d["rewards"][i] = rew
        d["terminals"][i] = terminal
        d["timeouts"][i] = timeout
        d["next_observations"][i] = next_obs
        self.size += 1

    def mark_timeout(self) -> None:
        """The last stored transition ends an episode by a cut (unless it is a true terminal)."""
        if self.size and not self.data["terminals"][self.size - 1]:
            self.data["timeouts"][self.size - 1] = True

    def sample(self, rng: np.random.Generator, k: int, batch_size: int) -> dict:
        idx = rng.integers(0, self.size, size=(k, batch_size))
        d = self.data
        return {
            "obs": d["observations"][idx],
            "act": d["actions"][idx],
            "rew": d["rewards"][idx],
            "mask": 1.0 - d["terminals"][idx].astype(np.float32),
            "next_obs": d["next_observations"][idx],
        }

    def arrays(self, stop: int | None = None) -> dict[str, np.ndarray]:
        stop = self.size if stop is None else stop
        return {k: v[:stop].copy() for k, v in self.data.items()}

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        n = len(arrays["rewards"])
        for k in self.KEYS:
            self.data[k][:n] = arrays[k]
        self.size = n


# --------------------------------------------------------------------------------------------
# saving (safetensors, never pickle)


def state_to_flat(state: SACState) -> dict[str, np.ndarray]:
    """Every leaf of the state under its tree path, as numpy arrays."""
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        flat[jax.tree_util.keystr(path)] = np.asarray(leaf)
    return flat


def state_from_flat(template: SACState, flat: dict[str, np.ndarray]) -> SACState:
    """Restore a state saved by `state_to_flat`, using a freshly initialised state's structure."""
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, leaf in leaves_with_path:
        key = jax.tree_util.keystr(path)
        if key not in flat:
            raise KeyError(key)
        value = np.asarray(flat[key])
        if value.shape != np.shape(leaf) and value.size == np.size(leaf):
            value = value.reshape(np.shape(leaf))  # safetensors stores scalars as (1,)
        if value.shape != np.shape(leaf):
            raise ValueError(f"{key}: shape {value.shape} != {np.shape(leaf)}")
        leaves.append(jnp.asarray(value, dtype=jnp.asarray(leaf).dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)
