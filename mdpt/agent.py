"""An agent at inference: diffusion policy + guidance (or none) + selector.

For each state the policy draws N candidate actions; the selector picks one:
- `softmax`: sample from softmax(beta * Q(s, a_i)) (equal to softmax over advantages, since V(s)
  is the same for every candidate of one state),
- `argmax`: the candidate with the highest min-Q,
- `none`: plain diffusion sampling (one candidate, no guidance).
`cfg` policies additionally sample with guidance weight w. Each module normalizes states with
its own normalizer, so a guidance module trained with other statistics still sees its own inputs.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from mdpt.artifacts import Artifact, check_compatible
from mdpt.errors import MDPTError

SELECTORS = ("softmax", "argmax", "none")


@dataclass(frozen=True)
class SelectorConfig:
    selector: str = "softmax"
    beta: float = 1.0
    candidates: int = 50
    temperature: float = 0.5
    cfg_weight: float = 1.0

    def validate(self, has_guidance: bool) -> None:
        if self.selector not in SELECTORS:
            raise MDPTError(f"unknown selector {self.selector!r}; use one of: {', '.join(SELECTORS)}")
        if self.selector != "none" and not has_guidance:
            raise MDPTError(f"selector {self.selector!r} needs a guidance module (--guidance DIR), or use --selector none")
        if self.candidates < 1:
            raise MDPTError(f"candidates must be >= 1, got {self.candidates}")
        if self.beta < 0 or self.temperature < 0:
            raise MDPTError("beta and temperature must be >= 0")


class Agent:
    """Acts for S policy seeds at once: obs (S, E, obs_dim) -> actions (S, E, act_dim).

    A guidance artifact with one seed is shared by every policy seed; with S seeds, seed i of the
    guidance goes with seed i of the policy.
    """

    def __init__(self, policy: Artifact, guidance: Artifact | None, selector: SelectorConfig,
                 allow_mismatch: bool = False):
        selector.validate(guidance is not None)
        self.policy, self.guidance, self.selector = policy, guidance, selector
        self.record = {"selector": selector.__dict__.copy(), "policy": str(policy.path)}
        if guidance is not None and selector.selector != "none":
            self.record.update(check_compatible(policy, guidance, allow_mismatch))
            if guidance.num_seeds not in (1, policy.num_seeds):
                raise MDPTError(f"guidance {guidance.path} holds {guidance.num_seeds} seeds; use one "
                                f"(--guidance-seed) or as many as the policy ({policy.num_seeds})")
        self._act = jax.jit(self._build())

    def with_params(self, policy_params, guidance_params=None) -> Agent:
        """This agent with other parameters of the same shapes, sharing its compiled function.

        `policy_params` has the policy's (seeds, ...) layout; `guidance_params` the guidance
        artifact's (None: keep the current guidance parameters). No checks are redone and
        nothing is recompiled as long as the shapes stay the same.
        """
        new = copy.copy(self)
        new.policy = _replace_params(self.policy, policy_params)
        if guidance_params is not None and self.guidance is not None:
            new.guidance = _replace_params(self.guidance, guidance_params)
        new.record = dict(self.record)
        return new

    @property
    def num_seeds(self) -> int:
        return self.policy.num_seeds

    def _build(self):
        pol, sel = self.policy.module, self.selector
        pn = self.policy.normalizer
        use_guidance = self.guidance is not None and sel.selector != "none"
        gmod = self.guidance.module if use_guidance else None
        gn = self.guidance.normalizer if use_guidance else None
        n = sel.candidates if use_guidance else 1

        def act_one(pparams, gparams, obs, key):  # obs (E, obs_dim) raw
            k_sample, k_pick = jax.random.split(key)
            e = obs.shape[0]
            p_obs = jnp.repeat(pn.normalize_obs(obs), n, axis=0)
            cands = pol.sample(pparams, p_obs, k_sample, sel.temperature, sel.cfg_weight)
            if not use_guidance:
                return cands.reshape(e, -1)
            g_obs = jnp.repeat(gn.normalize_obs(obs), n, axis=0)
            q = gmod.q_min(gparams, g_obs, cands).reshape(e, n)
            if sel.selector == "argmax":
                idx = q.argmax(-1)
            else:
                idx = jax.random.categorical(k_pick, sel.beta * q, axis=-1)
            return cands.reshape(e, n, -1)[jnp.arange(e), idx]

        g_axis = 0 if use_guidance and self.guidance.num_seeds > 1 else None

        def act(pparams, gparams, obs, key):
            keys = jax.random.split(key, obs.shape[0])
            return jax.vmap(act_one, in_axes=(0, g_axis, 0, 0))(pparams, gparams, obs, keys)

        return act

    def _guidance_params(self):
        if self.guidance is None or self.selector.selector == "none":
            return None
        params = self.guidance.params
        return params if self.guidance.num_seeds > 1 else jax.tree.map(lambda x: x[0], params)

    def act(self, obs: np.ndarray, key: jax.Array) -> np.ndarray:
        return np.asarray(self.act_async(obs, key))

    def act_async(self, obs: np.ndarray, key: jax.Array) -> jax.Array:
        """Like `act`, but returns the JAX array without waiting for it (JAX dispatches
        asynchronously), so the caller can step simulators while the actions are computed."""
        obs = jnp.asarray(obs, jnp.float32)
        if obs.ndim != 3 or obs.shape[0] != self.num_seeds:
            raise ValueError(f"obs must be (seeds={self.num_seeds}, envs, obs_dim), got {obs.shape}")
        return self._act(self.policy.params, self._guidance_params(), obs, key)


def _replace_params(art: Artifact, params) -> Artifact:
    return dataclasses.replace(art, params=params)
