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

from mdpt.errors import MDPTError
from mdpt.nets.averaging import polyak
from mdpt.nets.modules import ACTIVATIONS, TwinQ, ValueNet
from mdpt.nets.optim import adam

GUIDANCE_KINDS = ("iql", "sarsa", "dql-critic")

# Published architectures: IQL/IDQL critics 2 x 256 ReLU with LayerNorm; DQL critics 3 x 256 Mish.
_KIND_DEFAULTS = {
    "iql": {"depth": 2, "activation": "relu", "layer_norm": True},
    "sarsa": {"depth": 2, "activation": "relu", "layer_norm": True},
    "dql-critic": {"depth": 3, "activation": "mish", "layer_norm": False},
}


@dataclass(frozen=True)
class GuidanceConfig:
    kind: str = "iql"
    hidden: int = 256
    depth: int | None = None
    activation: str | None = None
    layer_norm: bool | None = None
    expectile: float = 0.7
    discount: float = 0.99
    tau: float = 0.005
    lr: float = 3e-4
    lr_schedule: str = "constant"
    grad_clip: float | None = None

    def resolved(self) -> GuidanceConfig:
        self.validate()
        filled = {k: v for k, v in _KIND_DEFAULTS[self.kind].items() if getattr(self, k) is None}
        return dataclasses.replace(self, **filled)

    def validate(self) -> None:
        if self.kind not in GUIDANCE_KINDS:
            raise MDPTError(f"unknown guidance kind {self.kind!r}; use one of: {', '.join(GUIDANCE_KINDS)}")
        if not 0.0 < self.expectile < 1.0:
            raise MDPTError(f"expectile must be in (0, 1), got {self.expectile}")
        if not 0.0 <= self.discount < 1.0:
            raise MDPTError(f"discount must be in [0, 1), got {self.discount}")
        if not 0.0 < self.tau <= 1.0:
            raise MDPTError(f"target update rate tau must be in (0, 1], got {self.tau}")
        if self.hidden < 1 or (self.depth is not None and self.depth < 1):
            raise MDPTError("guidance hidden width and depth must be positive")
        if self.lr <= 0:
            raise MDPTError(f"learning rate must be positive, got {self.lr}")
        if self.activation is not None and self.activation not in ACTIVATIONS:
            raise MDPTError(f"unknown activation {self.activation!r}; use one of: {', '.join(ACTIVATIONS)}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise MDPTError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def expectile_loss(diff: jax.Array, expectile: float) -> jax.Array:
    """|tau - 1[diff < 0]| diff^2, diff = target - prediction."""
    weight = jnp.where(diff < 0, 1.0 - expectile, expectile)
    return weight * diff**2


class GuidanceModule:
    def __init__(self, config: GuidanceConfig, obs_dim: int, act_dim: int, total_steps: int | None = None):
        self.config = config.resolved()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        c = self.config
        self.q_net = TwinQ(c.hidden, c.depth, c.activation, c.layer_norm)
        self.v_net = ValueNet(c.hidden, c.depth, c.activation, c.layer_norm) if self.has_v else None
        self.optimizer = adam(c.lr, c.lr_schedule, total_steps, c.grad_clip)

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def has_v(self) -> bool:
        return self.config.kind in ("iql", "sarsa")

    @property
    def needs_next_actions(self) -> bool:
        return self.config.kind == "dql-critic"

    # ----- evaluation functions (params are the online parameters {'q': ..., 'v': ...}) -----
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

    # ----- training -----
    def init(self, key: jax.Array) -> dict:
        kq, kv = jax.random.split(key)
        obs = jnp.zeros((1, self.obs_dim))
        params = {"q": self.q_net.init(kq, obs, jnp.zeros((1, self.act_dim)))}
        if self.has_v:
            params["v"] = self.v_net.init(kv, obs)
        opt = {k: self.optimizer.init(p) for k, p in params.items()}
        return {"params": params, "target_q": params["q"], "opt": opt}

    def _apply_grads(self, state: dict, name: str, grads) -> dict:
        updates, opt = self.optimizer.update(grads, state["opt"][name], state["params"][name])
        params = {**state["params"], name: optax.apply_updates(state["params"][name], updates)}
        return {**state, "params": params, "opt": {**state["opt"], name: opt}}

    def update(self, state: dict, batch: dict, next_actions: jax.Array | None = None) -> tuple[dict, dict]:
        """One gradient step on a batch. `next_actions` is required for `dql-critic` only."""
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

        if c.kind == "iql":
            next_value = self.v_net.apply(state["params"]["v"], batch["next_obs"])
        else:
            if c.kind == "dql-critic":
                if next_actions is None:
                    raise ValueError("dql-critic guidance needs next actions from a policy")
                a_next = next_actions
            else:
                a_next = batch["next_act"]
            next_value = self.q_net.apply(state["target_q"], batch["next_obs"], a_next).min(0)
        target = jax.lax.stop_gradient(batch["rew"] + c.discount * batch["mask"] * next_value)

        def q_loss(qp):
            qs = self.q_net.apply(qp, batch["obs"], batch["act"])
            return ((qs - target) ** 2).mean(-1).sum(), qs

        (lq, qs), g = jax.value_and_grad(q_loss, has_aux=True)(state["params"]["q"])
        state = self._apply_grads(state, "q", g)
        state = {**state, "target_q": polyak(state["target_q"], state["params"]["q"], c.tau)}
        metrics.update({"guidance/q_loss": lq, "guidance/q_mean": qs.mean()})
        return state, metrics
