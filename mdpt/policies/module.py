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
from mdpt.settings import setting

POLICY_ALGOS = ("dql", "idql", "edp", "cfg")
NETS = ("mlp", "lnresnet")
SAMPLERS = ("ddpm", "ddim")
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class PolicyConfig:
    """A diffusion policy's network, diffusion and training settings (None: from mdpt.presets)."""

    algo: str = setting("dql", "dql | idql | edp | cfg (set by the run's algo)", choices=POLICY_ALGOS)
    net: str | None = setting(None, "noise network: mlp (Diffusion-QL) | lnresnet (IDQL)", choices=NETS, preset=True)
    hidden: int = setting(256, "width of the noise network's hidden layers")
    depth: int = setting(3, "hidden layers (mlp) or residual blocks (lnresnet)")
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
    sampler: str | None = setting(None, "inference sampler: ddpm | ddim", choices=SAMPLERS, preset=True)
    sample_steps: int | None = setting(None, "sampler steps at inference", preset=True)
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
            (self.T >= 1, f"diffusion steps T must be >= 1, got {self.T}"),
            (self.sample_steps >= 1, f"sample_steps must be >= 1, got {self.sample_steps}"),
            (self.hidden >= 1 and self.depth >= 1, "policy hidden width and depth must be positive"),
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
        """A saved config; keys added after it was written take the values that reproduce it."""
        d = {"lr_decay_steps": None, "weight_decay": 0.0, **d}
        d["cond_bins"] = tuple(d.get("cond_bins", ()))
        return cls(**d)


class DiffusionPolicy:
    def __init__(self, config: PolicyConfig, obs_dim: int, act_dim: int, total_steps: int | None = None):
        self.config = c = config.resolved()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        if c.net == "mlp":
            self.net = DQLNoiseNet(act_dim, c.hidden, c.depth, num_classes=c.num_classes)
        else:
            self.net = LNResNetNoiseNet(act_dim, c.hidden, c.depth, c.dropout, num_classes=c.num_classes)
        self.tab = ddpm.vp_schedule(c.T, c.beta_min, c.beta_max).table()
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

    def eps_fn(self, params, obs, cond=None, dropout_key=None):
        deterministic = dropout_key is None
        rngs = None if deterministic else {"dropout": dropout_key}

        def fn(x, t):
            return self.net.apply(params, x, t, obs, cond, deterministic=deterministic, rngs=rngs)

        return fn

    def guided_eps_fn(self, params, obs, cfg_weight: float = 1.0):
        """Sampling-time noise prediction; for `cfg`, conditioned on the best class with weight w."""
        if not self.config.num_classes:
            return self.eps_fn(params, obs)
        batch = obs.shape[:-1]
        best = jnp.full(batch, self.best_class, jnp.int32)
        cond_fn = self.eps_fn(params, obs, best)
        if cfg_weight == 1.0:
            return cond_fn
        uncond_fn = self.eps_fn(params, obs, jnp.full(batch, self.null_class, jnp.int32))
        return lambda x, t: ddpm.cfg_eps(cond_fn(x, t), uncond_fn(x, t), cfg_weight)

    def sample(self, params, obs, key, temperature: float = 1.0, cfg_weight: float = 1.0) -> jax.Array:
        """Actions for a batch of (normalized) states with the inference sampler."""
        c = self.config
        eps_fn = self.guided_eps_fn(params, obs, cfg_weight)
        shape = obs.shape[:-1] + (self.act_dim,)
        if c.sampler == "ddim":
            return ddpm.ddim_sample(eps_fn, self.tab, key, shape, c.T, c.sample_steps, eta=0.0)
        return ddpm.ddpm_sample(eps_fn, self.tab, key, shape, c.T, temperature)

    def update(self, state: dict, batch: dict, key: jax.Array, q_fn=None, label_fn=None) -> tuple[dict, dict]:
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
            eps_fn = self.eps_fn(params, obs, cond, dropout_key)
            bc = ddpm.bc_loss(eps_fn, self.tab, act, k_bc, c.T)
            aux = {"policy/bc_loss": bc}
            if not self.uses_q:
                return bc, aux
            if c.algo == "dql":
                new_act = ddpm.ddpm_sample(eps_fn, self.tab, k_q, act.shape, c.T)
            else:
                new_act = ddpm.one_step_x0(eps_fn, self.tab, act, k_q, c.T)
            qs = q_fn(obs, new_act)
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
        """Diffusion-QL's schedule: update every `ema_every` steps; before `ema_start` keep the copy."""
        c = self.config
        due = (step % c.ema_every == 0) & (step >= c.ema_start)
        averaged = polyak(ema, params, 1.0 - c.ema_decay)
        return jax.tree.map(lambda a, e: jnp.where(due, a, e), averaged, ema)
