"""Guidance modules: value estimators trained from the offline data.

kinds
- `iql`: twin Q + V, expectile V loss, Q backed up through V (in-sample; needs no policy).
- `sarsa`: twin Q of the behaviour policy (targets use the dataset's next actions) and
  V(s) = E_beta[Q(s, a)] by mean-squared regression, so advantages and CFG labels exist.
- `dql-critic`: twin Q with targets from a policy's next actions (what joint DQL trains); the
  caller passes those actions, so this module never imports a policy.

A module is a static description (config + sizes) with pure functions over parameter pytrees:
`q`, `q_min`, `v`, `advantage`, `label`, `action_grad`, `init`, `update`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax

from mdpt import presets
from mdpt.errors import MDPTError
from mdpt.nets.averaging import polyak
from mdpt.nets.modules import ACTIVATIONS, TwinQ, ValueNet
from mdpt.nets.optim import make_optimizer
from mdpt.nets.precision import MATMUL_PRECISIONS
from mdpt.settings import setting

GUIDANCE_KINDS = ("iql", "sarsa", "dql-critic")
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class GuidanceConfig:
    """A value estimator's architecture and training settings (None: from mdpt.presets)."""

    kind: str | None = setting(None, "value estimator: iql | sarsa | dql-critic (default: the algorithm's)",
                               alias="guidance_kind", choices=GUIDANCE_KINDS, preset=True)
    hidden: int | None = setting(None, "width of every hidden layer", preset=True)
    depth: int | None = setting(None, "number of hidden layers", preset=True)
    activation: str | None = setting(None, "hidden activation", choices=tuple(ACTIVATIONS), preset=True)
    first_activation: str | None = setting(None, "activation of the first hidden layer ('same': as the others)",
                                           choices=("same", *ACTIVATIONS), preset=True)
    layer_norm: bool | None = setting(None, "LayerNorm after every hidden Linear (bounds the critic's features)",
                                      preset=True)
    expectile: float | None = setting(None, "IQL expectile tau of the V loss", preset=True)
    discount: float | None = setting(None, "discount gamma of the TD targets", preset=True)
    tau: float | None = setting(None, "Polyak rate of the target critic (online weight; 0 freezes the target at its "
                                "initialization, as the paper's critic-pretraining script does)", preset=True)
    lr: float | None = setting(None, "learning rate", preset=True)
    lr_schedule: str | None = setting(None, "constant | cosine", choices=LR_SCHEDULES, preset=True)
    lr_decay_steps: int | None = setting(None, "cosine decay horizon in steps (None: the run's length)", preset=True)
    grad_clip: float | None = setting(None, "global gradient-norm clip (None: no clipping)", preset=True)
    weight_decay: float | None = setting(None, "AdamW weight decay (0: Adam)", preset=True)
    update_every: int | None = setting(None, "train the critic every k-th step of a joint run", preset=True)
    max_q_backup: bool | None = setting(None, "dql-critic: back up the max over sampled next actions", preset=True)
    backup_samples: int | None = setting(None, "next actions sampled per state for max_q_backup", preset=True)
    matmul_precision: str = setting("default", "the Q and V networks' matmul inputs: default (the backend's fp32 "
                                    "matmul; TF32 on NVIDIA GPUs), highest (fp32 everywhere), tf32 or bf16 (rounded "
                                    "so, with fp32 sums, on every backend)", choices=MATMUL_PRECISIONS)

    def resolved(self) -> GuidanceConfig:
        """Every None filled from the kind's preset (mdpt.presets)."""
        if self.kind is not None and self.kind not in GUIDANCE_KINDS:
            raise MDPTError(f"unknown guidance kind {self.kind!r}; use one of: {', '.join(GUIDANCE_KINDS)}")
        kind = self.kind or presets.STANDALONE_KIND
        defaults = {**presets.GUIDANCE_COMMON, **presets.GUIDANCE[kind]}
        preset_keys = {f.name for f in dataclasses.fields(self) if f.metadata.get("preset")}
        filled = {k: defaults[k] for k in preset_keys - {"kind"} if getattr(self, k) is None and k in defaults}
        out = dataclasses.replace(self, kind=kind, **filled)
        out.validate()
        return out

    def validate(self) -> None:
        checks = [
            (0.0 < self.expectile < 1.0, f"expectile must be in (0, 1), got {self.expectile}"),
            (0.0 <= self.discount < 1.0, f"discount must be in [0, 1), got {self.discount}"),
            (0.0 <= self.tau <= 1.0, f"target update rate tau must be in [0, 1] (0 freezes the target), got {self.tau}"),
            (self.hidden >= 1 and self.depth >= 1, "guidance hidden width and depth must be positive"),
            (self.lr > 0, f"learning rate must be positive, got {self.lr}"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}"),
            (self.lr_decay_steps is None or self.lr_decay_steps >= 1, "lr_decay_steps must be >= 1"),
            (self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.update_every >= 1, f"update_every must be >= 1, got {self.update_every}"),
            (self.backup_samples >= 1, f"backup_samples must be >= 1, got {self.backup_samples}"),
            (self.activation in ACTIVATIONS, f"unknown activation {self.activation!r}; use one of: {', '.join(ACTIVATIONS)}"),
            (self.matmul_precision in MATMUL_PRECISIONS,
             f"unknown matmul_precision {self.matmul_precision!r}; use one of: {', '.join(MATMUL_PRECISIONS)}"),
            (self.first_activation == "same" or self.first_activation in ACTIVATIONS,
             f"unknown activation {self.first_activation!r}; use one of: {', '.join(ACTIVATIONS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise MDPTError(message)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> GuidanceConfig:
        """A saved config; keys added after it was written take the values that reproduce it
        (LayerNorm and activations were always recorded; the rest defaulted to these)."""
        old = {"first_activation": "same", "lr_decay_steps": None, "weight_decay": 0.0, "update_every": 1,
               "max_q_backup": False, "backup_samples": 10}
        return cls(**{**old, **d})


def expectile_loss(diff: jax.Array, expectile: float) -> jax.Array:
    """|tau - 1[diff < 0]| diff^2, diff = target - prediction."""
    weight = jnp.where(diff < 0, 1.0 - expectile, expectile)
    return weight * diff**2


class GuidanceModule:
    def __init__(self, config: GuidanceConfig, obs_dim: int, act_dim: int, total_steps: int | None = None):
        self.config = config.resolved()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        c = self.config
        first = None if c.first_activation == "same" else c.first_activation
        self.q_net = TwinQ(c.hidden, c.depth, c.activation, c.layer_norm, first, c.matmul_precision)
        self.v_net = ValueNet(c.hidden, c.depth, c.activation, c.layer_norm, first, c.matmul_precision) \
            if self.has_v else None
        self.optimizer = make_optimizer(c.lr, c.lr_schedule, c.lr_decay_steps or total_steps, c.grad_clip,
                                        c.weight_decay)

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def has_v(self) -> bool:
        return self.config.kind in ("iql", "sarsa")

    @property
    def needs_next_actions(self) -> bool:
        return self.config.kind == "dql-critic"

    @property
    def next_action_samples(self) -> int:
        """Next actions a dql-critic update wants per next state (max-Q backup samples several)."""
        return self.config.backup_samples if self.config.max_q_backup else 1

    # ----- evaluation functions (params are {'q': ..., 'v': ...}, optionally 'target_q') -----
    def q(self, params, obs, act) -> jax.Array:
        """Both heads, shape (2, ...)."""
        return self.q_net.apply(params["q"], obs, act)

    def q_min(self, params, obs, act) -> jax.Array:
        return self.q(params, obs, act).min(0)

    def v(self, params, obs) -> jax.Array:
        if not self.has_v:
            raise MDPTError(f"guidance kind {self.kind!r} has no V(s); use an iql or sarsa guidance module")
        return self.v_net.apply(params["v"], obs)

    def advantage(self, params, obs, act) -> jax.Array:
        return self.q_min(params, obs, act) - self.v(params, obs)

    def label(self, params, obs, act, bin_edges: tuple[float, ...] = ()) -> jax.Array:
        """Optimality label for classifier-free conditioning: 1[A(s,a) >= 0], or the index of the
        advantage bin when `bin_edges` (ascending) are given."""
        adv = self.advantage(params, obs, act)
        if not bin_edges:
            return (adv >= 0).astype(jnp.int32)
        return jnp.searchsorted(jnp.asarray(bin_edges, jnp.float32), adv, side="right").astype(jnp.int32)

    def action_grad(self, params, obs, act) -> jax.Array:
        return jax.grad(lambda a: self.q_min(params, obs, a).sum())(act)

    @staticmethod
    def scoring_params(params: dict, critic: str = "target") -> dict:
        """Parameters to score actions with: the target (Polyak) critic when saved and asked for."""
        if critic == "target" and "target_q" in params:
            return {**params, "q": params["target_q"]}
        return params

    # ----- training -----
    def init(self, key: jax.Array) -> dict:
        kq, kv = jax.random.split(key)
        obs = jnp.zeros((1, self.obs_dim))
        params = {"q": self.q_net.init(kq, obs, jnp.zeros((1, self.act_dim)))}
        if self.has_v:
            params["v"] = self.v_net.init(kv, obs)
        opt = {k: self.optimizer.init(p) for k, p in params.items()}
        return {"params": params, "target_q": params["q"], "opt": opt}

    def init_from(self, params: dict) -> dict:
        """Training state that continues from saved parameters (a frozen guidance unfrozen)."""
        online = {k: v for k, v in params.items() if k != "target_q"}
        opt = {k: self.optimizer.init(p) for k, p in online.items()}
        return {"params": online, "target_q": params.get("target_q", online["q"]), "opt": opt}

    @staticmethod
    def saved_params(state: dict) -> dict:
        """What an artifact stores: online parameters and the target critic."""
        return {**state["params"], "target_q": state["target_q"]}

    def _apply_grads(self, state: dict, name: str, grads) -> dict:
        updates, opt = self.optimizer.update(grads, state["opt"][name], state["params"][name])
        params = {**state["params"], name: optax.apply_updates(state["params"][name], updates)}
        return {**state, "params": params, "opt": {**state["opt"], name: opt}}

    def _next_value(self, state: dict, batch: dict, next_actions) -> jax.Array:
        c = self.config
        if c.kind == "iql":
            return self.v_net.apply(state["params"]["v"], batch["next_obs"])
        if c.kind == "sarsa":
            return self.q_net.apply(state["target_q"], batch["next_obs"], batch["next_act"]).min(0)
        if next_actions is None:
            raise ValueError("dql-critic guidance needs next actions from a policy")
        if next_actions.ndim == batch["act"].ndim:
            return self.q_net.apply(state["target_q"], batch["next_obs"], next_actions).min(0)
        # max-Q backup (Diffusion-QL): per head the max over K sampled next actions, then the min.
        k = next_actions.shape[0]
        obs = jnp.broadcast_to(batch["next_obs"], (k,) + batch["next_obs"].shape)
        qs = self.q_net.apply(state["target_q"], obs, next_actions)  # (2, K, B)
        return qs.max(1).min(0)

    def update(self, state: dict, batch: dict, next_actions: jax.Array | None = None) -> tuple[dict, dict]:
        """One gradient step on a batch. `next_actions` (B, A), or (K, B, A) with max_q_backup, is
        required for `dql-critic` only."""
        c = self.config
        metrics = {}
        if self.has_v:
            q_targ = self.q_net.apply(state["target_q"], batch["obs"], batch["act"]).min(0)
            expectile = c.expectile if c.kind == "iql" else 0.5

            def v_loss(vp):
                v = self.v_net.apply(vp, batch["obs"])
                return expectile_loss(q_targ - v, expectile).mean(), v

            (lv, v), g = jax.value_and_grad(v_loss, has_aux=True)(state["params"]["v"])
            state = self._apply_grads(state, "v", g)
            metrics.update({"guidance/v_loss": lv, "guidance/v_mean": v.mean()})

        next_value = self._next_value(state, batch, next_actions)
        target = jax.lax.stop_gradient(batch["rew"] + c.discount * batch["mask"] * next_value)
        # SARSA rows whose next action the file does not hold (a time-limit cut) carry no target.
        weight = batch["next_valid"] if c.kind == "sarsa" else jnp.ones_like(target)

        def q_loss(qp):
            qs = self.q_net.apply(qp, batch["obs"], batch["act"])
            per_row = ((qs - target) ** 2).sum(0)
            return (weight * per_row).sum() / jnp.maximum(weight.sum(), 1.0), qs

        (lq, qs), g = jax.value_and_grad(q_loss, has_aux=True)(state["params"]["q"])
        state = self._apply_grads(state, "q", g)
        state = {**state, "target_q": polyak(state["target_q"], state["params"]["q"], c.tau)}
        metrics.update({"guidance/q_loss": lq, "guidance/q_mean": qs.mean(),
                        "guidance/q_abs_max": jnp.abs(qs).max()})
        return state, metrics
