"""Diffusion policies and their losses.

algos
- `dql`: BC diffusion loss + eta * Q term through the full reverse chain, normalized by
  stopgrad(mean |Q|) with the two heads swapped at random (Diffusion-QL).
- `idql`: pure BC diffusion; guidance acts at inference only (IDQL).
- `edp`: like `dql`, but the Q term uses the one-step action approximation (EDP).
- `cfg`: classifier-free reward guidance: the noise net is conditioned on an optimality label
  from a guidance module, dropped with probability `cond_dropout`; sampling mixes the
  conditional and unconditional predictions with weight w.

A policy never sees a guidance module: its update receives `q_fn(obs, act) -> (2, B)` and
`label_fn(obs, act) -> int labels` closures.

Diffusion settings (per-algo defaults in `mdpt.presets.ALGORITHMS`, filled by `resolved()`):
- `prediction`: the network predicts the noise ("eps") or the clean action ("x0"; BC loss is then
  MSE on x0, as CleanDiffuser's predict_noise=False),
- `noise_schedule`: "vp" (Diffusion-QL/IDQL, with beta_min/beta_max), "linear" (DDPM), "cosine"
  (Nichol & Dhariwal),
- `sampler`: "ddpm" (all T steps), "ddim" (eta 0) or "dpm-solver++" (2M), the last two with
  `sample_steps` network calls,
- `temperature_mode`: the selector's temperature scales every step's injected noise ("per-step")
  or only the initial noise x_T ("initial-noise"); deterministic samplers scale x_T in both modes,
- `clip_denoised`: clip every x0 prediction to the action box [-1, 1] while sampling,
- `clip_one_step`: clip EDP's one-step x0 estimate (the Q term's action) to the box,
- `matmul_precision`: the noise network's matmul inputs (`mdpt.nets.precision`),
- `chain_remat`: what DQL's gradient through the reverse chain keeps for the backward pass (memory
  against recomputation; the same gradients, see `ddpm.REMAT`).
Sampled actions are always clipped to the box at the end.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax

from mdpt import presets
from mdpt.diffusion import ddpm
from mdpt.errors import MDPTError
from mdpt.nets.averaging import polyak
from mdpt.nets.modules import DQLNoiseNet, LNResNetNoiseNet
from mdpt.nets.optim import make_optimizer
from mdpt.nets.precision import MATMUL_PRECISIONS
from mdpt.policies.gaussian import GAUSSIAN_ALGOS, GaussianPolicy
from mdpt.settings import setting

DIFFUSION_ALGOS = ("dql", "idql", "edp", "cfg")
POLICY_ALGOS = (*DIFFUSION_ALGOS, *GAUSSIAN_ALGOS)  # bc, awr: the Gaussian baselines (policies/gaussian.py)
NETS = ("mlp", "lnresnet")
SAMPLERS = ddpm.SAMPLERS
LR_SCHEDULES = ("constant", "cosine")


# What a config saved before these keys existed meant (its other keys were saved resolved).
_BEFORE_SETTINGS = {"prediction": "eps", "noise_schedule": "vp", "temperature_mode": "per-step",
                    "clip_denoised": True, "clip_one_step": True, "lr_decay_steps": None, "weight_decay": 0.0,
                    "time_dim": 16, "depth": 3, "awr_temperature": None, "awr_weight_max": None}


@dataclass(frozen=True)
class PolicyConfig:
    """A diffusion policy's network, diffusion and training settings (None: from mdpt.presets)."""

    algo: str = setting("dql", "dql | idql | edp | cfg, or a baseline: bc | awr (set by the run's algo)",
                        choices=POLICY_ALGOS)
    net: str | None = setting(None, "noise network: mlp (Diffusion-QL) | lnresnet (IDQL)", choices=NETS, preset=True)
    hidden: int = setting(256, "width of the noise network's hidden layers")
    depth: int | None = setting(None, "hidden layers (mlp) or residual blocks (lnresnet)", preset=True)
    # Diffusion-QL's model.py MLP: t_dim=16; the paper authors' pipelines build CleanDiffuser's
    # DQLMlp(obs_dim, act_dim, emb_dim=64) (modular-diffusion-policy pipelines/Neu_dql_d4rl_mujoco.py:39)
    time_dim: int = setting(16, "mlp: width of the sinusoidal time embedding (Diffusion-QL 16; the paper "
                            "authors' CleanDiffuser pipelines 64)")
    dropout: float = setting(0.1, "dropout in lnresnet blocks")
    T: int | None = setting(None, "diffusion steps", preset=True)
    beta_min: float = setting(0.1, "VP schedule beta_min")
    beta_max: float = setting(10.0, "VP schedule beta_max")
    eta: float | None = setting(None, "weight of the Q term in the policy loss (0: pure BC)", preset=True)
    lr: float | None = setting(None, "learning rate", preset=True)
    lr_schedule: str | None = setting(None, "constant | cosine", choices=LR_SCHEDULES, preset=True)
    lr_decay_steps: int | None = setting(None, "cosine decay horizon in steps (None: the run's length)", preset=True)
    grad_clip: float | None = setting(None, "global gradient-norm clip (None: no clipping)", preset=True)
    weight_decay: float | None = setting(None, "AdamW weight decay (0: Adam)", preset=True)
    ema_decay: float | None = setting(None, "EMA decay of the sampling copy", preset=True)
    ema_every: int | None = setting(None, "EMA update every k steps", preset=True)
    ema_start: int | None = setting(None, "EMA copy frozen at the initial parameters until this step", preset=True)
    ema_warmup: bool | None = setting(None, "EMA decay warmed up as min(decay, (1 + n) / (10 + n)) after n updates, "
                                      "so a short run's sampling copy is not mostly its initial weights", preset=True)
    sampler: str | None = setting(None, "inference sampler: ddpm | ddim | dpm-solver++", choices=SAMPLERS, preset=True)
    sample_steps: int | None = setting(None, "network calls of the ddim / dpm-solver++ sampler", preset=True)
    prediction: str | None = setting(None, "the network predicts the noise (eps) or the clean action (x0)",
                                     choices=ddpm.PREDICTIONS, preset=True)
    noise_schedule: str | None = setting(None, "vp (beta_min/beta_max) | linear (DDPM) | cosine (Nichol & Dhariwal)",
                                         choices=ddpm.NOISE_SCHEDULES, preset=True)
    temperature_mode: str | None = setting(None, "the sampling temperature scales every step's noise (per-step) "
                                           "or the initial noise only (initial-noise)",
                                           choices=ddpm.TEMPERATURE_MODES, preset=True)
    clip_denoised: bool | None = setting(None, "clip every x0 prediction to the action box while sampling",
                                         preset=True)
    clip_one_step: bool | None = setting(None, "edp: clip the one-step x0 estimate the Q term scores", preset=True)
    chain_remat: str = setting("none", "dql: what the Q term's reverse chain keeps for the backward pass: none (every "
                               "activation, as the published code), matmuls (the matmul outputs; the activations "
                               "are recomputed one reverse step at a time) or all (each step's input; the step is "
                               "recomputed). Less memory, the same gradients", choices=ddpm.REMAT)
    matmul_precision: str = setting("default", "the noise network's matmul inputs: default (the backend's fp32 "
                                    "matmul; TF32 on NVIDIA GPUs), highest (fp32 everywhere), tf32 or bf16 (rounded "
                                    "so, with fp32 sums, on every backend: a CPU computes what the GPU would)",
                                    choices=MATMUL_PRECISIONS)
    awr_temperature: float | None = setting(None, "awr: beta of the weights exp(beta * (Q - V)) (bc: 0; unused by "
                                            "diffusion policies)", preset=True)
    awr_weight_max: float | None = setting(None, "awr: the weights' upper clip (unused by diffusion policies)",
                                           preset=True)
    cond_dropout: float = setting(0.1, "cfg: probability of dropping the condition in training")
    cond_bins: tuple[float, ...] = setting((), "cfg: advantage bin edges (empty: the label 1[A >= 0])")

    def resolved(self) -> PolicyConfig:
        """Every None filled from the algorithm's preset (mdpt.presets)."""
        if self.algo not in POLICY_ALGOS:
            raise MDPTError(f"unknown policy algo {self.algo!r}; use one of: {', '.join(POLICY_ALGOS)}")
        defaults = presets.ALGORITHMS[self.algo]["policy"]
        filled = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        out = dataclasses.replace(self, **filled, cond_bins=tuple(float(b) for b in self.cond_bins))
        out.validate()
        return out

    def validate(self) -> None:
        checks = [
            (self.net in NETS, f"unknown noise network {self.net!r}; use one of: {', '.join(NETS)}"),
            (self.sampler in SAMPLERS, f"unknown sampler {self.sampler!r}; use one of: {', '.join(SAMPLERS)}"),
            (self.prediction in ddpm.PREDICTIONS,
             f"unknown prediction {self.prediction!r}; use one of: {', '.join(ddpm.PREDICTIONS)}"),
            (self.noise_schedule in ddpm.NOISE_SCHEDULES,
             f"unknown noise schedule {self.noise_schedule!r}; use one of: {', '.join(ddpm.NOISE_SCHEDULES)}"),
            (self.chain_remat in ddpm.REMAT,
             f"unknown chain_remat {self.chain_remat!r}; use one of: {', '.join(ddpm.REMAT)}"),
            (self.matmul_precision in MATMUL_PRECISIONS,
             f"unknown matmul_precision {self.matmul_precision!r}; use one of: {', '.join(MATMUL_PRECISIONS)}"),
            (self.temperature_mode in ddpm.TEMPERATURE_MODES,
             f"unknown temperature mode {self.temperature_mode!r}; use one of: {', '.join(ddpm.TEMPERATURE_MODES)}"),
            (all(isinstance(x, bool) for x in (self.clip_denoised, self.clip_one_step, self.ema_warmup)),
             "clip_denoised, clip_one_step and ema_warmup must be true or false"),
            (self.T >= 1, f"diffusion steps T must be >= 1, got {self.T}"),
            (self.sample_steps >= 1, f"sample_steps must be >= 1, got {self.sample_steps}"),
            (self.hidden >= 1 and self.depth >= 1, "policy hidden width and depth must be positive"),
            (self.time_dim >= 2 and self.time_dim % 2 == 0, f"time_dim must be an even number >= 2, got {self.time_dim}"),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
            (self.eta >= 0.0, f"eta must be >= 0, got {self.eta}"),
            (self.lr > 0, f"learning rate must be positive, got {self.lr}"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be constant or cosine, got {self.lr_schedule!r}"),
            (self.lr_decay_steps is None or self.lr_decay_steps >= 1, "lr_decay_steps must be >= 1"),
            (self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (self.ema_every >= 1 and self.ema_start >= 0, "ema_every must be >= 1 and ema_start >= 0"),
            (0.0 <= self.cond_dropout < 1.0, f"cond_dropout must be in [0, 1), got {self.cond_dropout}"),
            (list(self.cond_bins) == sorted(self.cond_bins), "cond_bins must be ascending"),
            (0.0 < self.beta_min < self.beta_max, "need 0 < beta_min < beta_max"),
            (self.algo not in GAUSSIAN_ALGOS or self.awr_temperature >= 0.0,
             f"awr_temperature must be >= 0, got {self.awr_temperature}"),
            (self.algo not in GAUSSIAN_ALGOS or self.awr_weight_max > 0.0,
             f"awr_weight_max must be > 0, got {self.awr_weight_max}"),
        ]
        for ok, message in checks:
            if not ok:
                raise MDPTError(message)

    @property
    def num_classes(self) -> int:
        return (len(self.cond_bins) + 1 if self.cond_bins else 2) if self.algo == "cfg" else 0

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["cond_bins"] = list(self.cond_bins)
        return d

    @classmethod
    def from_json(cls, d: dict) -> PolicyConfig:
        """A saved config; keys it lacks because it predates them get the values that reproduce
        what it meant then (eps, vp, per-step temperature, clipping, no decay horizon, Adam), not
        today's defaults."""
        d = {**_BEFORE_SETTINGS, **d}
        d["cond_bins"] = tuple(d.get("cond_bins", ()))
        return cls(**d)


def make_policy(config: PolicyConfig, obs_dim: int, act_dim: int, total_steps: int | None = None):
    """The policy module of `config.algo`: a diffusion policy, or a Gaussian baseline (bc, awr)."""
    if config.algo in GAUSSIAN_ALGOS:
        return GaussianPolicy(config.resolved(), obs_dim, act_dim, total_steps)
    return DiffusionPolicy(config, obs_dim, act_dim, total_steps)


class DiffusionPolicy:
    def __init__(self, config: PolicyConfig, obs_dim: int, act_dim: int, total_steps: int | None = None):
        self.config = c = config.resolved()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        if c.net == "mlp":
            self.net = DQLNoiseNet(act_dim, c.hidden, c.depth, c.time_dim, num_classes=c.num_classes,
                                   matmul_precision=c.matmul_precision)
        else:
            self.net = LNResNetNoiseNet(act_dim, c.hidden, c.depth, c.dropout, num_classes=c.num_classes,
                                        matmul_precision=c.matmul_precision)
        self.tab = ddpm.make_schedule(c.noise_schedule, c.T, c.beta_min, c.beta_max).table()
        self.optimizer = make_optimizer(c.lr, c.lr_schedule, c.lr_decay_steps or total_steps, c.grad_clip, c.weight_decay)

    @property
    def algo(self) -> str:
        return self.config.algo

    @property
    def uses_q(self) -> bool:
        return self.algo in ("dql", "edp") and self.config.eta > 0

    @property
    def uses_label(self) -> bool:
        return self.algo == "cfg"

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    @property
    def best_class(self) -> int:
        return self.config.num_classes - 1

    def init(self, key: jax.Array) -> dict:
        x = jnp.zeros((1, self.act_dim))
        cond = jnp.zeros((1,), jnp.int32) if self.config.num_classes else None
        params = self.net.init(key, x, jnp.zeros((1,), jnp.int32), jnp.zeros((1, self.obs_dim)), cond)
        return {"params": params, "ema": params, "opt": self.optimizer.init(params), "step": jnp.int32(0)}

    def model_fn(self, params, obs, cond=None, dropout_key=None):
        """(x_t, t) -> the network's prediction (noise or clean action, per `config.prediction`)."""
        deterministic = dropout_key is None
        rngs = None if deterministic else {"dropout": dropout_key}

        def fn(x, t):
            return self.net.apply(params, x, t, obs, cond, deterministic=deterministic, rngs=rngs)

        return fn

    def guided_model_fn(self, params, obs, cfg_weight: float = 1.0):
        """Sampling-time prediction; for `cfg`, conditioned on the best class with weight w."""
        if not self.config.num_classes:
            return self.model_fn(params, obs)
        batch = obs.shape[:-1]
        best = jnp.full(batch, self.best_class, jnp.int32)
        cond_fn = self.model_fn(params, obs, best)
        if cfg_weight == 1.0:
            return cond_fn
        uncond_fn = self.model_fn(params, obs, jnp.full(batch, self.null_class, jnp.int32))
        return lambda x, t: ddpm.cfg_eps(cond_fn(x, t), uncond_fn(x, t), cfg_weight)

    @property
    def _clip(self) -> float | None:
        return 1.0 if self.config.clip_denoised else None

    def sample(self, params, obs, key, temperature: float = 1.0, cfg_weight: float = 1.0) -> jax.Array:
        """Actions for a batch of (normalized) states with the inference sampler."""
        c = self.config
        shape = obs.shape[:-1] + (self.act_dim,)
        actions = ddpm.sample(c.sampler, self.guided_model_fn(params, obs, cfg_weight), self.tab, key, shape, c.T,
                              c.sample_steps, temperature, c.temperature_mode, c.prediction, self._clip)
        return jnp.clip(actions, -1.0, 1.0)

    def q_action(self, model_fn, act: jax.Array, key: jax.Array) -> jax.Array:
        """The action the Q term scores (differentiable): DQL's full reverse chain at temperature 1,
        EDP's one-step estimate from the dataset action `act`."""
        c = self.config
        if c.algo == "dql":
            chain = ddpm.ddpm_sample(model_fn, self.tab, key, act.shape, c.T, clip=self._clip, prediction=c.prediction,
                                     remat=c.chain_remat)
            return jnp.clip(chain, -1.0, 1.0)
        return ddpm.one_step_x0(model_fn, self.tab, act, key, c.T, c.prediction, 1.0 if c.clip_one_step else None)

    uses_advantage = False

    def update(self, state: dict, batch: dict, key: jax.Array, q_fn=None, label_fn=None,
               adv_fn=None) -> tuple[dict, dict]:
        """One gradient step. `q_fn` is needed when `uses_q`, `label_fn` when `uses_label`."""
        c = self.config
        k_bc, k_q, k_swap, k_drop, k_dropout = jax.random.split(key, 5)
        obs, act = batch["obs"], batch["act"]
        cond = None
        if self.uses_label:
            labels = jax.lax.stop_gradient(label_fn(obs, act))
            dropped = jax.random.bernoulli(k_drop, c.cond_dropout, labels.shape)
            cond = jnp.where(dropped, self.null_class, labels)
        dropout_key = k_dropout if c.net == "lnresnet" and c.dropout > 0 else None

        def loss_fn(params):
            model_fn = self.model_fn(params, obs, cond, dropout_key)
            bc = ddpm.bc_loss(model_fn, self.tab, act, k_bc, c.T, c.prediction)
            aux = {"policy/bc_loss": bc}
            if not self.uses_q:
                return bc, aux
            qs = q_fn(obs, self.q_action(model_fn, act, k_q))
            swap = jax.random.bernoulli(k_swap)
            q_a, q_b = jnp.where(swap, qs[1], qs[0]), jnp.where(swap, qs[0], qs[1])
            q_loss = -q_a.mean() / jax.lax.stop_gradient(jnp.abs(q_b).mean() + 1e-8)
            aux["policy/q_loss"] = q_loss
            return bc + c.eta * q_loss, aux

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt = self.optimizer.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        step = state["step"] + 1
        ema = self._ema(state["ema"], params, step)
        aux["policy/loss"] = loss
        return {"params": params, "ema": ema, "opt": opt, "step": step}, aux

    def _ema(self, ema, params, step):
        """Diffusion-QL's schedule: update every `ema_every` steps; before `ema_start` keep the copy.
        With `ema_warmup` the n-th update uses min(decay, (1 + n) / (10 + n))."""
        c = self.config
        due = (step % c.ema_every == 0) & (step >= c.ema_start)
        decay = c.ema_decay
        if c.ema_warmup:
            first_due = max(-(-c.ema_start // c.ema_every), 1)  # in units of ema_every; steps count from 1
            n = (step // c.ema_every - first_due + 1).astype(jnp.float32)
            decay = jnp.minimum(decay, (1.0 + n) / (10.0 + n))
        averaged = polyak(ema, params, 1.0 - decay)
        return jax.tree.map(lambda a, e: jnp.where(due, a, e), averaged, ema)
