"""Training loops: one jitted `lax.scan` over a chunk of steps, `vmap`-ed over seeds.

Roles decide what a step does:
- guidance `train` + policy `train`: joint training, as DQL/IDQL publish (critic step first,
  then the policy step against the just-updated critic).
- guidance `frozen` + policy `train`: guidance-first training. The guidance parameters are an
  argument of the step that is never differentiated or updated: no optimizer state, no target
  copy, no target-action sampling.
- guidance `train` + no policy: a guidance module alone (iql, sarsa).
- guidance `train` (dql-critic) + policy `train`/`frozen`: the critic's next actions come from the
  policy's EMA parameters (trained by BC, or given frozen).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from mdpt.data.batches import sample_batch
from mdpt.guidance.module import GuidanceModule
from mdpt.policies.module import DiffusionPolicy
from mdpt.training.xla_options import training_compiler_options

ROLES = ("train", "frozen", None)


@dataclass
class Trainer:
    """Trains S seeds in one program; with `groups` = D, D datasets of one environment too (the
    replicas of a program are then (D, S): `arrays` stacked by `data.batches.stack_arrays`, frozen
    leaves and state with a leading dataset axis). A grouped program computes what D separate
    runs with the same seeds would."""

    arrays: dict  # device arrays from data.batches.device_arrays (or stacked: see `groups`)
    policy: DiffusionPolicy | None = None
    guidance: GuidanceModule | None = None
    policy_role: str | None = None
    guidance_role: str | None = None
    batch_size: int = 256
    # Frozen parameters: {'guidance': params, 'policy': params, 'guidance_obs': (scale, shift)}.
    # Each leaf has a leading seed axis of size S, or of size 1 to share one module across seeds.
    frozen: dict = field(default_factory=dict)
    groups: int | None = None  # D datasets stacked along a leading axis of arrays, frozen and state
    # XLA options of the compiled chunk; None: `training_compiler_options()` (this backend's, see there).
    compiler_options: dict | None = None
    _compiled: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.guidance_role == "frozen" and "guidance" not in self.frozen:
            raise ValueError("a frozen guidance needs frozen['guidance'] parameters")
        if self.policy_role == "frozen" and "policy" not in self.frozen:
            raise ValueError("a frozen policy needs frozen['policy'] parameters")
        if self.guidance_role == "train" and self.guidance.needs_next_actions and self.policy_role is None:
            raise ValueError("dql-critic guidance needs a policy for its next actions")
        # A leaf with a seed axis of size 1 is shared by every seed (vmapped with in_axes=None).
        seed_axis = 1 if self.groups else 0
        self._frozen_in_axes = {k: jax.tree.map(lambda x: 0 if x.shape[seed_axis] > 1 else None, v)
                                for k, v in self.frozen.items()}
        self._frozen_args = {k: jax.tree.map(lambda x: jnp.asarray(x) if x.shape[seed_axis] > 1
                                             else jnp.take(jnp.asarray(x), 0, axis=seed_axis), v)
                             for k, v in self.frozen.items()}

    # ----- state -----
    def init(self, seeds: list[int] | np.ndarray) -> dict:
        """Initial state of every seed (and dataset group: the same seeds start every group)."""
        keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])
        fn = jax.vmap(self._init_one)
        if self.groups:
            return jax.jit(lambda k: jax.tree.map(lambda x: jnp.stack([x] * self.groups), fn(k)))(keys)
        return jax.jit(fn)(keys)

    def _init_one(self, key):
        k_pol, k_guid, k_train = jax.random.split(key, 3)
        state = {"key": k_train}
        if self.policy_role == "train":
            state["policy"] = self.policy.init(k_pol)
        if self.guidance_role == "train":
            state["guidance"] = self.guidance.init(k_guid)
        return state

    # ----- one step -----
    def _guidance_params(self, state, frozen):
        if self.guidance_role == "train":
            return state["guidance"]["params"], None
        if self.guidance_role == "frozen":
            return frozen["guidance"], frozen.get("guidance_obs")
        return None, None

    def _policy_sample_params(self, state, frozen):
        return state["policy"]["ema"] if self.policy_role == "train" else frozen["policy"]

    def _next_actions(self, state, frozen, next_obs, key):
        """Next actions for a dql-critic target from the policy's sampling copy: (B, A), or
        (K, B, A) when the critic backs up the max over K samples."""
        params = self._policy_sample_params(state, frozen)
        k = self.guidance.next_action_samples
        if k == 1:
            return jax.lax.stop_gradient(self.policy.sample(params, next_obs, key))
        many = jnp.broadcast_to(next_obs, (k,) + next_obs.shape)
        return jax.lax.stop_gradient(self.policy.sample(params, many, key))

    def _guidance_step(self, state, frozen, batch, key):
        next_actions = None
        if self.guidance.needs_next_actions:
            next_actions = self._next_actions(state, frozen, batch["next_obs"], key)
        return self.guidance.update(state["guidance"], batch, next_actions)

    def _guidance_metric_template(self, state, frozen, batch, key):
        return jax.eval_shape(lambda: self._guidance_step(state, frozen, batch, key)[1])

    def step(self, state: dict, frozen: dict, arrays: dict, step_index=None) -> tuple[dict, dict]:
        """One training step. `step_index` (not per seed) decides whether a critic trained every
        k-th step (`guidance.update_every`) updates now; None: it always does."""
        key, k_batch, k_next, k_policy = jax.random.split(state["key"], 4)
        batch = sample_batch(arrays, k_batch, self.batch_size)
        state = {**state, "key": key}
        metrics = {}
        if self.guidance_role == "train":
            every = self.guidance.config.update_every
            if every == 1 or step_index is None:
                state["guidance"], m = self._guidance_step(state, frozen, batch, k_next)
            else:
                template = self._guidance_metric_template(state, frozen, batch, k_next)

                def skip(st):
                    return st["guidance"], jax.tree.map(lambda t: jnp.zeros(t.shape, t.dtype), template)

                state["guidance"], m = jax.lax.cond(step_index % every == 0,
                                                    lambda st: self._guidance_step(st, frozen, batch, k_next),
                                                    skip, state)
            metrics.update(m)
        if self.policy_role == "train":
            gparams, obs_map = self._guidance_params(state, frozen)
            q_fn = label_fn = None
            if gparams is not None:
                g = self.guidance

                def to_guidance_obs(obs):
                    return obs if obs_map is None else obs * obs_map[0] + obs_map[1]

                def q_fn(obs, act):
                    return g.q(gparams, to_guidance_obs(obs), act)

                def label_fn(obs, act):
                    return g.label(gparams, to_guidance_obs(obs), act, self.policy.config.cond_bins)

                def adv_fn(obs, act):
                    return g.advantage(gparams, to_guidance_obs(obs), act)

            adv = {"adv_fn": adv_fn} if gparams is not None and self.policy.uses_advantage else {}
            state["policy"], m = self.policy.update(state["policy"], batch, k_policy, q_fn, label_fn, **adv)
            metrics.update(m)
        return state, metrics

    # ----- chunks -----
    def _chunk(self, state, frozen, arrays, start, steps: int):
        def body(carry, i):
            return self.step(carry, frozen, arrays, start + i)

        index = jnp.arange(steps, dtype=jnp.int32)
        state, metrics = jax.lax.scan(body, state, index)
        every = self.guidance.config.update_every if self.guidance_role == "train" else 1
        critic_ran = (start + index) % every == 0
        summary, ran_of = {}, {}
        for k, v in metrics.items():
            ran = ran_of[k] = critic_ran if k.startswith("guidance/") else jnp.ones_like(critic_ran)
            if k.endswith("_max"):
                summary[k] = jnp.where(ran, v, -jnp.inf).max()
            else:
                summary[k] = jnp.where(ran, v, 0.0).sum() / jnp.maximum(ran.sum(), 1)
            last = jnp.max(jnp.where(ran, jnp.arange(steps), -1))
            summary[f"{k}@last"] = v[jnp.maximum(last, 0)]
        finite = jnp.stack([jnp.isfinite(v) | ~ran_of[k] for k, v in metrics.items()]).all(0)
        summary["nonfinite_at"] = jnp.where(finite.all(), -1, jnp.argmin(finite))
        return state, summary

    @property
    def dataset_bytes(self) -> int:
        return int(sum(x.nbytes for x in self.arrays.values()))

    def compiled(self, state: dict, steps: int):
        """The seed-vmapped chunk of `steps` steps, compiled ahead of time once per length; the same
        executable serves training and XLA's cost/memory analysis."""
        cache_key = (steps, state["key"].shape[:2] if self.groups else state["key"].shape[0])
        if cache_key not in self._compiled:
            # The dataset is an argument shared by all seeds (a closed-over array would be baked
            # into the executable as a constant); so is the step counter `start`, which keeps a
            # critic's every-k-th-step update a real branch rather than a per-seed select.
            fn = jax.vmap(lambda s, f, a, t: self._chunk(s, f, a, t, steps), in_axes=(0, self._frozen_in_axes, None, None))
            if self.groups:
                fn = jax.vmap(fn, in_axes=(0, 0, 0, None))
            # keep_unused: every dataset array stays an argument even where a mode never reads it (a
            # guidance-first step reads only obs and act), so that peak memory less `dataset_bytes` is the
            # step's own memory in every mode; jit's default drops unused arguments from the executable.
            jitted = jax.jit(fn, donate_argnums=(0,), keep_unused=True, compiler_options=self._options())
            self._compiled[cache_key] = jitted.lower(state, self._frozen_args, self.arrays, jnp.int32(0)).compile()
        return self._compiled[cache_key]

    def _options(self) -> dict:
        return training_compiler_options() if self.compiler_options is None else self.compiler_options

    def run(self, state: dict, steps: int, start: int = 0) -> tuple[dict, dict]:
        """Advance every seed by `steps` steps from global step `start`; metrics are chunk means
        (maxima for '*_max' keys) and '@last' values, per seed."""
        return self.compiled(state, steps)(state, self._frozen_args, self.arrays, jnp.int32(start))
