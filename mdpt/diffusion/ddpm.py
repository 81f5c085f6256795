"""Discrete-time diffusion over actions: noise schedules, training loss, reverse samplers, one-step x0.

Every function takes `model_fn(x_t, t) -> network output`, a closure over the network parameters and
the conditioning (state, CFG label), so this module knows nothing about networks or policies. What
the output means is `prediction`: "eps" (the noise) or "x0" (the clean action); samplers convert
between the two with the schedule (x_t = alpha_t x0 + sigma_t eps).
Timesteps are integers 0..T-1 (index 0 is the least noisy step); every sampler starts from
x ~ N(0, I) at t = T-1 and ends on clean actions (alpha = 1, sigma = 0) after its step at t = 0.

`clip`: a float clips each x0 prediction (and the result) to [-clip, clip] ("clip_denoised");
None clips nothing.

Temperature: `temperature_mode="per-step"` scales the noise a stochastic sampler injects at every
step and leaves the initial x_T alone (Diffusion-QL/IDQL style); "initial-noise" scales only x_T
(CleanDiffuser). Deterministic samplers (DDIM with eta 0, DPM-Solver++) inject no noise, so for
them the temperature scales x_T in both modes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]

PREDICTIONS = ("eps", "x0")
NOISE_SCHEDULES = ("vp", "linear", "cosine")
SAMPLERS = ("ddpm", "ddim", "dpm-solver++")
TEMPERATURE_MODES = ("per-step", "initial-noise")
# Rematerialization of a gradient through `ddpm_sample`: "none" keeps every activation for the
# backward pass, "matmuls" keeps each reverse step's matmul outputs and recomputes its elementwise
# ops, "all" keeps each step's input only and recomputes the step.
REMAT = ("none", "matmuls", "all")


@dataclass(frozen=True)
class Schedule:
    betas: np.ndarray

    def table(self) -> dict[str, jax.Array]:
        """Per-step constants as float32 device arrays (computed in float64 first).

        alpha_t = sqrt(alpha_bar_t) = `sqrt_ab`, sigma_t = sqrt(1 - alpha_bar_t) = `sqrt_1m_ab`,
        `log_snr` = lambda_t = log(alpha_t / sigma_t) (DPM-Solver's time variable)."""
        b = self.betas.astype(np.float64)
        ab = np.cumprod(1.0 - b)
        ab_prev = np.concatenate([[1.0], ab[:-1]])
        post_var = b * (1.0 - ab_prev) / (1.0 - ab)
        t = {
            "sqrt_ab": np.sqrt(ab),
            "sqrt_1m_ab": np.sqrt(1.0 - ab),
            "sqrt_recip_ab": np.sqrt(1.0 / ab),
            "sqrt_recipm1_ab": np.sqrt(1.0 / ab - 1.0),
            "log_snr": 0.5 * (np.log(ab) - np.log1p(-ab)),
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


def linear_schedule(T: int) -> Schedule:
    """DDPM's linear betas 1e-4 .. 2e-2 for T = 1000, scaled by 1000 / T (improved DDPM's rule, as in
    EDP's code), clipped at 0.999 (for T < 50 the scaled end value would pass 1)."""
    scale = 1000.0 / T
    return Schedule(np.clip(np.linspace(scale * 1e-4, scale * 2e-2, T, dtype=np.float64), 0.0, 0.999))


def cosine_schedule(T: int, s: float = 0.008) -> Schedule:
    """Nichol & Dhariwal: alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) * pi/2), betas
    1 - alpha_bar(t+1)/alpha_bar(t) clipped at 0.999."""
    f = np.cos((np.arange(T + 1, dtype=np.float64) / T + s) / (1 + s) * np.pi / 2) ** 2
    return Schedule(np.clip(1.0 - f[1:] / f[:-1], 0.0, 0.999))


def make_schedule(name: str, T: int, beta_min: float = 0.1, beta_max: float = 10.0) -> Schedule:
    """`beta_min`/`beta_max` belong to the VP schedule only."""
    if name == "vp":
        return vp_schedule(T, beta_min, beta_max)
    if name == "linear":
        return linear_schedule(T)
    if name == "cosine":
        return cosine_schedule(T)
    raise ValueError(f"unknown noise schedule {name!r}; use one of: {', '.join(NOISE_SCHEDULES)}")


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def q_sample(tab: dict, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    return _bcast(tab["sqrt_ab"][t], x0) * x0 + _bcast(tab["sqrt_1m_ab"][t], x0) * noise


def predict_x0(tab: dict, x_t: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    return _bcast(tab["sqrt_recip_ab"][t], x_t) * x_t - _bcast(tab["sqrt_recipm1_ab"][t], x_t) * eps


def predict_eps(tab: dict, x_t: jax.Array, t: jax.Array, x0: jax.Array) -> jax.Array:
    return (x_t - _bcast(tab["sqrt_ab"][t], x_t) * x0) / _bcast(tab["sqrt_1m_ab"][t], x_t)


def denoise(model_fn: ModelFn, tab: dict, x_t: jax.Array, t: jax.Array, prediction: str = "eps",
            clip: float | None = 1.0) -> tuple[jax.Array, jax.Array]:
    """(x0, eps) predicted at (x_t, t); with `clip`, x0 is clipped and eps made consistent with it."""
    out = model_fn(x_t, t)
    if prediction == "eps":
        x0, eps = predict_x0(tab, x_t, t, out), out
    elif prediction == "x0":
        x0, eps = out, None
    else:
        raise ValueError(f"unknown prediction {prediction!r}; use one of: {', '.join(PREDICTIONS)}")
    if clip is not None:
        x0, eps = jnp.clip(x0, -clip, clip), None
    return x0, (predict_eps(tab, x_t, t, x0) if eps is None else eps)


def _clip(x: jax.Array, clip: float | None) -> jax.Array:
    return x if clip is None else jnp.clip(x, -clip, clip)


def noise_scales(temperature: float, mode: str, stochastic: bool) -> tuple[float, float]:
    """(factor on x_T, factor on each step's injected noise); see the module docstring."""
    if mode not in TEMPERATURE_MODES:
        raise ValueError(f"unknown temperature mode {mode!r}; use one of: {', '.join(TEMPERATURE_MODES)}")
    return (1.0, temperature) if mode == "per-step" and stochastic else (temperature, 1.0)


def timesteps(T: int, steps: int) -> np.ndarray:
    """min(steps, T) timesteps evenly spaced in time (rounded) from T-1 down to 0 (one step: T-1)."""
    n = min(steps, T)
    if n == 1:
        return np.array([T - 1])
    return np.unique(np.linspace(0, T - 1, n).round().astype(int))[::-1]


def noise_and_t(key: jax.Array, x0: jax.Array, T: int) -> tuple[jax.Array, jax.Array]:
    k_t, k_n = jax.random.split(key)
    t = jax.random.randint(k_t, x0.shape[:-1], 0, T)
    return t, jax.random.normal(k_n, x0.shape)


def bc_loss(model_fn: ModelFn, tab: dict, x0: jax.Array, key: jax.Array, T: int,
            prediction: str = "eps") -> jax.Array:
    """Denoising (behaviour cloning) loss at a random step: MSE to the true noise ("eps") or to the
    clean action ("x0", as CleanDiffuser's predict_noise=False)."""
    t, noise = noise_and_t(key, x0, T)
    target = noise if prediction == "eps" else x0
    return jnp.mean((model_fn(q_sample(tab, x0, t, noise), t) - target) ** 2)


def one_step_x0(model_fn: ModelFn, tab: dict, x0: jax.Array, key: jax.Array, T: int,
                prediction: str = "eps", clip: float | None = 1.0) -> jax.Array:
    """EDP's action approximation: noise x0 to a random step, recover x0 with one network call."""
    t, noise = noise_and_t(key, x0, T)
    return denoise(model_fn, tab, q_sample(tab, x0, t, noise), t, prediction, clip)[0]


def ddpm_sample(model_fn: ModelFn, tab: dict, key: jax.Array, shape: tuple, T: int,
                temperature: float = 1.0, clip: float | None = 1.0, prediction: str = "eps",
                temperature_mode: str = "per-step", remat: str = "none") -> jax.Array:
    """Ancestral sampling through all T reverse steps (differentiable w.r.t. model_fn).

    The posterior mean from the (clipped) x0 prediction plus posterior-variance noise, none at t = 0.
    `remat` (see REMAT) decides what a gradient through the chain keeps for the backward pass;
    every mode gives the same actions and gradients.
    """
    if remat not in REMAT:
        raise ValueError(f"unknown remat {remat!r}; use one of: {', '.join(REMAT)}")
    init, per_step = noise_scales(temperature, temperature_mode, stochastic=True)
    k0, key = jax.random.split(key)
    x = init * jax.random.normal(k0, shape)
    step_keys = []
    for _ in range(T):
        key, k = jax.random.split(key)
        step_keys.append(k)

    def step(x, i, k):
        x0, _ = denoise(model_fn, tab, x, jnp.full(shape[:-1], i, jnp.int32), prediction, clip)
        mean = tab["post_coef_x0"][i] * x0 + tab["post_coef_xt"][i] * x
        noise = per_step * jnp.exp(0.5 * tab["post_log_var"][i]) * jax.random.normal(k, shape)
        return mean + jnp.where(i > 0, noise, 0.0)

    if remat == "none":
        for i, k in zip(reversed(range(T)), step_keys, strict=True):
            x = step(x, i, k)
        return _clip(x, clip)
    # A rolled loop, so that the backward pass recomputes one reverse step at a time: unrolled,
    # XLA schedules every step's recomputation early and keeps them all alive, saving nothing.
    policy = jax.checkpoint_policies.dots_with_no_batch_dims_saveable if remat == "matmuls" else None
    body = jax.checkpoint(lambda x, ik: (step(x, *ik), None), policy=policy)
    x, _ = jax.lax.scan(body, x, (jnp.arange(T - 1, -1, -1, dtype=jnp.int32), jnp.stack(step_keys)))
    return _clip(x, clip)


def ddim_sample(model_fn: ModelFn, tab: dict, key: jax.Array, shape: tuple, T: int, steps: int,
                eta: float = 0.0, clip: float | None = 1.0, prediction: str = "eps",
                temperature: float = 1.0, temperature_mode: str = "per-step") -> jax.Array:
    """DDIM over `timesteps(T, steps)` (eta=0: deterministic, the first-order DPM-Solver)."""
    init, per_step = noise_scales(temperature, temperature_mode, stochastic=eta > 0)
    k0, key = jax.random.split(key)
    x = init * jax.random.normal(k0, shape)
    seq = timesteps(T, steps)
    for j, i in enumerate(seq):
        key, k = jax.random.split(key)
        x0, eps = denoise(model_fn, tab, x, jnp.full(shape[:-1], int(i), jnp.int32), prediction, clip)
        ab_next = tab["ab"][seq[j + 1]] if j + 1 < len(seq) else jnp.float32(1.0)
        sigma = eta * jnp.sqrt((1 - ab_next) / (1 - tab["ab"][i]) * (1 - tab["ab"][i] / ab_next))
        x = jnp.sqrt(ab_next) * x0 + jnp.sqrt(jnp.maximum(1 - ab_next - sigma**2, 0.0)) * eps
        x = x + per_step * sigma * jax.random.normal(k, shape)
    return _clip(x, clip)


def log_snr_timesteps(log_snr, steps: int) -> np.ndarray:
    """min(steps, T) distinct timesteps from T-1 down to 0, the nearest to values evenly spaced in
    log-SNR lambda; where the discrete schedule is too coarse for that (near t = T-1 when the last
    beta is clipped), neighbours are moved apart to keep every step. One step: [T-1]."""
    lam = np.asarray(log_snr, np.float64)
    T = len(lam)
    n = min(steps, T)
    if n == 1:
        return np.array([T - 1])
    target = np.linspace(lam[-1], lam[0], n)
    idx = np.abs(lam[None, :] - target[:, None]).argmin(axis=1)
    k = np.arange(n)
    idx = np.clip(idx, n - 1 - k, T - 1 - k)  # leave room for the steps before and after
    for j in range(1, n):
        idx[j] = min(idx[j], idx[j - 1] - 1)
    return idx


def dpm_solver_pp_sample(model_fn: ModelFn, tab: dict, key: jax.Array, shape: tuple, T: int, steps: int,
                         clip: float | None = 1.0, prediction: str = "eps", temperature: float = 1.0) -> jax.Array:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): multistep second order, data-prediction form.

    Runs on the discrete schedule's log-SNR lambda_t = log(alpha_t / sigma_t) at
    `log_snr_timesteps(...)` (evenly spaced in lambda, not in time: with the time-uniform grid of
    DDIM and CleanDiffuser the last steps are so uneven that the second-order extrapolation loses
    its order; `steps` network calls). Between grid points
    x <- (sigma_next / sigma) x - alpha_next (e^{-h} - 1) D, h = lambda_next - lambda, with
    D = (1 + 1/(2r)) x0_k - 1/(2r) x0_{k-1}, r = h_prev / h (first order, D = x0_k, at the first
    step). The final step, from t = 0 to clean actions (lambda = inf), is first order: x <- x0.
    Deterministic: `temperature` scales x_T. `tab` must hold concrete arrays (the grid is built
    in numpy), as `Schedule.table()` returns them.
    """
    x = temperature * jax.random.normal(jax.random.split(key)[0], shape)  # the x_T of the other samplers
    seq = log_snr_timesteps(tab["log_snr"], steps)  # T = len(tab["log_snr"])
    alpha, sigma, lam = tab["sqrt_ab"], tab["sqrt_1m_ab"], tab["log_snr"]
    prev_x0 = prev_h = None
    for j, i in enumerate(seq):
        x0, _ = denoise(model_fn, tab, x, jnp.full(shape[:-1], int(i), jnp.int32), prediction, clip)
        if j + 1 == len(seq):
            x = x0
            break
        n = seq[j + 1]
        h = lam[n] - lam[i]
        d = x0 if prev_x0 is None else x0 + (x0 - prev_x0) * h / (2 * prev_h)  # 1/(2r) = h / (2 h_prev)
        x = sigma[n] / sigma[i] * x - alpha[n] * jnp.expm1(-h) * d
        prev_x0, prev_h = x0, h
    return _clip(x, clip)


def sample(sampler: str, model_fn: ModelFn, tab: dict, key: jax.Array, shape: tuple, T: int, steps: int,
           temperature: float = 1.0, temperature_mode: str = "per-step", prediction: str = "eps",
           clip: float | None = 1.0) -> jax.Array:
    """Dispatch to a sampler by name (`ddpm` always runs all T steps; `ddim` is deterministic)."""
    if sampler == "ddpm":
        return ddpm_sample(model_fn, tab, key, shape, T, temperature, clip, prediction, temperature_mode)
    if sampler == "ddim":
        return ddim_sample(model_fn, tab, key, shape, T, steps, 0.0, clip, prediction, temperature, temperature_mode)
    if sampler == "dpm-solver++":
        return dpm_solver_pp_sample(model_fn, tab, key, shape, T, steps, clip, prediction, temperature)
    raise ValueError(f"unknown sampler {sampler!r}; use one of: {', '.join(SAMPLERS)}")


def cfg_eps(eps_cond: jax.Array, eps_uncond: jax.Array, weight: float) -> jax.Array:
    """Classifier-free guidance: eps_uncond + w (eps_cond - eps_uncond); w = 1 is the conditional model.

    The same mix of x0 predictions gives the same result (eps and x0 are affine in each other at a
    fixed x_t, and the weights sum to 1)."""
    return eps_uncond + weight * (eps_cond - eps_uncond)
