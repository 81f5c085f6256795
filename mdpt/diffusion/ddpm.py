"""DDPM over actions with a VP schedule: training loss, reverse sampling (DDPM, DDIM), one-step x0.

Every function takes `eps_fn(x_t, t) -> predicted noise`, a closure over the network parameters and
the conditioning (state, CFG label), so this module knows nothing about networks or policies.
Timesteps are integers 0..T-1 (index 0 is the least noisy step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclass(frozen=True)
class Schedule:
    betas: np.ndarray

    def table(self) -> dict[str, jax.Array]:
        """Per-step constants as float32 device arrays (computed in float64 first)."""
        b = self.betas.astype(np.float64)
        ab = np.cumprod(1.0 - b)
        ab_prev = np.concatenate([[1.0], ab[:-1]])
        post_var = b * (1.0 - ab_prev) / (1.0 - ab)
        t = {
            "sqrt_ab": np.sqrt(ab),
            "sqrt_1m_ab": np.sqrt(1.0 - ab),
            "sqrt_recip_ab": np.sqrt(1.0 / ab),
            "sqrt_recipm1_ab": np.sqrt(1.0 / ab - 1.0),
            "post_coef_x0": b * np.sqrt(ab_prev) / (1.0 - ab),
            "post_coef_xt": (1.0 - ab_prev) * np.sqrt(1.0 - b) / (1.0 - ab),
            "post_log_var": np.log(np.maximum(post_var, 1e-20)),
            "ab": ab,
            "ab_prev": ab_prev,
        }
        return {k: jnp.asarray(v, jnp.float32) for k, v in t.items()}


def vp_schedule(T: int = 5, beta_min: float = 0.1, beta_max: float = 10.0) -> Schedule:
    """Variance-preserving (continuous-time VP SDE) discretization used by Diffusion-QL and IDQL."""
    t = np.arange(1, T + 1, dtype=np.float64)
    alpha = np.exp(-beta_min / T - 0.5 * (beta_max - beta_min) * (2 * t - 1) / T**2)
    return Schedule(1.0 - alpha)


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def q_sample(tab: dict, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    return _bcast(tab["sqrt_ab"][t], x0) * x0 + _bcast(tab["sqrt_1m_ab"][t], x0) * noise


def predict_x0(tab: dict, x_t: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    return _bcast(tab["sqrt_recip_ab"][t], x_t) * x_t - _bcast(tab["sqrt_recipm1_ab"][t], x_t) * eps


def noise_and_t(key: jax.Array, x0: jax.Array, T: int) -> tuple[jax.Array, jax.Array]:
    k_t, k_n = jax.random.split(key)
    t = jax.random.randint(k_t, x0.shape[:-1], 0, T)
    return t, jax.random.normal(k_n, x0.shape)


def bc_loss(eps_fn: EpsFn, tab: dict, x0: jax.Array, key: jax.Array, T: int) -> jax.Array:
    """Denoising (behaviour cloning) loss: MSE between true and predicted noise at a random step."""
    t, noise = noise_and_t(key, x0, T)
    return jnp.mean((eps_fn(q_sample(tab, x0, t, noise), t) - noise) ** 2)


def one_step_x0(eps_fn: EpsFn, tab: dict, x0: jax.Array, key: jax.Array, T: int, clip: float = 1.0):
    """EDP's action approximation: noise x0 to a random step, recover x0 with one network call."""
    t, noise = noise_and_t(key, x0, T)
    x_t = q_sample(tab, x0, t, noise)
    return jnp.clip(predict_x0(tab, x_t, t, eps_fn(x_t, t)), -clip, clip)


def ddpm_sample(eps_fn: EpsFn, tab: dict, key: jax.Array, shape: tuple, T: int,
                temperature: float = 1.0, clip: float = 1.0) -> jax.Array:
    """Ancestral sampling through all T reverse steps (unrolled; differentiable w.r.t. eps_fn).

    `temperature` scales the injected noise (DQL/IDQL sample at 0.5 at inference, 1.0 in training).
    x0 predictions are clipped to the action box, as in DQL's `clip_denoised`.
    """
    k0, key = jax.random.split(key)
    x = jax.random.normal(k0, shape)
    for i in reversed(range(T)):
        key, k = jax.random.split(key)
        t = jnp.full(shape[:-1], i, jnp.int32)
        x0 = jnp.clip(predict_x0(tab, x, t, eps_fn(x, t)), -clip, clip)
        mean = tab["post_coef_x0"][i] * x0 + tab["post_coef_xt"][i] * x
        if i > 0:
            x = mean + temperature * jnp.exp(0.5 * tab["post_log_var"][i]) * jax.random.normal(k, shape)
        else:
            x = mean
    return jnp.clip(x, -clip, clip)


def ddim_sample(eps_fn: EpsFn, tab: dict, key: jax.Array, shape: tuple, T: int, steps: int,
                eta: float = 0.0, clip: float = 1.0) -> jax.Array:
    """DDIM over `steps` evenly spaced timesteps of the T-step schedule (eta=0: deterministic)."""
    k0, key = jax.random.split(key)
    x = jax.random.normal(k0, shape)
    seq = np.unique(np.linspace(0, T - 1, min(steps, T)).round().astype(int))[::-1]
    for j, i in enumerate(seq):
        key, k = jax.random.split(key)
        t = jnp.full(shape[:-1], int(i), jnp.int32)
        eps = eps_fn(x, t)
        x0 = jnp.clip(predict_x0(tab, x, t, eps), -clip, clip)
        eps = (x - tab["sqrt_ab"][i] * x0) / tab["sqrt_1m_ab"][i]  # consistent with the clipped x0
        ab_next = tab["ab"][seq[j + 1]] if j + 1 < len(seq) else jnp.float32(1.0)
        sigma = eta * jnp.sqrt((1 - ab_next) / (1 - tab["ab"][i]) * (1 - tab["ab"][i] / ab_next))
        x = jnp.sqrt(ab_next) * x0 + jnp.sqrt(jnp.maximum(1 - ab_next - sigma**2, 0.0)) * eps
        x = x + sigma * jax.random.normal(k, shape)
    return jnp.clip(x, -clip, clip)


def cfg_eps(eps_cond: jax.Array, eps_uncond: jax.Array, weight: float) -> jax.Array:
    """Classifier-free guidance: eps_uncond + w (eps_cond - eps_uncond); w = 1 is the conditional model."""
    return eps_uncond + weight * (eps_cond - eps_uncond)
