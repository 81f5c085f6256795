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

from mdpt import presets
from mdpt.artifacts import Artifact, check_compatible
from mdpt.errors import MDPTError
from mdpt.seeding import seed_keys
from mdpt.settings import check_count, check_number, setting

SELECTORS = ("softmax", "argmax", "none")
CRITICS = ("target", "online")
ENSEMBLES = ("mean", "min")
MAX_CANDIDATES = 10_000  # candidates per state; each is a policy sample for every env and seed
# The largest magnitude of each selection number: past these, beta * Q, the initial noise and the cfg
# mixture overflow float32 for the critics' value ranges (|Q| up to ~1e4 on bullet tasks).
SELECTION_LIMITS = {"beta": 1e6, "temperature": 1e3, "cfg_weight": 1e3}


@dataclass(frozen=True)
class SelectorConfig:
    """How an agent picks one of N candidate actions (None: the preset, see `resolve_selector`)."""

    selector: str | None = setting(None, "softmax | argmax | none (plain sampling)", alias="selector",
                                   choices=SELECTORS, preset=True)
    beta: float | None = setting(None, "inverse temperature of softmax(beta * score)", alias="beta", preset=True)
    candidates: int | None = setting(None, "candidate actions drawn per state", alias="candidates", preset=True)
    temperature: float | None = setting(None, "sampling temperature of the diffusion policy", alias="temperature",
                                        preset=True)
    cfg_weight: float = setting(1.0, "cfg policies: guidance weight w", alias="cfg_weight")
    critic: str = setting("target", "score with the target (Polyak) critic or the online one", choices=CRITICS)
    ensemble: str = setting("mean", "several guidance modules: combine their scores by mean or min", choices=ENSEMBLES)

    def validate(self, has_guidance: bool) -> None:
        if self.selector not in SELECTORS:
            raise MDPTError(f"unknown selector {self.selector!r}; use one of: {', '.join(SELECTORS)}")
        if self.selector != "none" and not has_guidance:
            raise MDPTError(f"selector {self.selector!r} needs a guidance module (--guidance DIR), or use --selector none")
        check_count(self.candidates, "candidates", 1, MAX_CANDIDATES)
        for name, limit in SELECTION_LIMITS.items():
            check_number(getattr(self, name), name, -limit if name == "cfg_weight" else 0.0, limit)
        if self.critic not in CRITICS:
            raise MDPTError(f"unknown critic {self.critic!r}; use one of: {', '.join(CRITICS)}")
        if self.ensemble not in ENSEMBLES:
            raise MDPTError(f"unknown ensemble rule {self.ensemble!r}; use one of: {', '.join(ENSEMBLES)}")

    def describe(self) -> str:
        if self.selector == "none":
            return f"plain sampling at temperature {self.temperature:g}"
        rule = f"softmax(beta {self.beta:g})" if self.selector == "softmax" else "argmax"
        return f"{rule} of min-Q over {self.candidates} candidates at temperature {self.temperature:g}, {self.critic} critic"


def guidance_selection(guidance: Artifact) -> tuple[dict, str]:
    """A guidance module's own selection rule and beta: the one it was saved with, else its kind's
    preset (with the task's beta for a dql-critic)."""
    saved = guidance.meta.get("selection")
    if isinstance(saved, dict) and saved.get("selector") in SELECTORS and isinstance(saved.get("beta"), int | float):
        return {"selector": saved["selector"], "beta": float(saved["beta"])}, f"{guidance.module.kind} guidance's own"
    kind = guidance.module.kind
    dataset = (guidance.meta.get("dataset") or {}).get("id")
    out = {**presets.SELECTION[kind], **presets.task_settings(None, kind, dataset).get("selector", {})}
    return out, f"{kind} preset" + (f" for {dataset}" if dataset else "")


def policy_sampling(policy: Artifact) -> tuple[dict, str]:
    """A policy's candidate count and temperature: as saved, else its algorithm's preset."""
    saved = policy.meta.get("sampling")
    if isinstance(saved, dict) and isinstance(saved.get("candidates"), int) and isinstance(saved.get("temperature"), int | float):
        return {"candidates": saved["candidates"], "temperature": float(saved["temperature"])}, "policy's own"
    return dict(presets.ALGORITHMS[policy.module.algo]["selector"]), f"{policy.module.algo} preset"


def resolve_selector(selector: SelectorConfig, policy: Artifact, guidance: Artifact | None) -> tuple[SelectorConfig, dict]:
    """Fill every None of `selector`: rule and beta from the guidance, candidates and temperature
    from the policy. Returns the complete selector and where each value came from."""
    sampling, s_src = policy_sampling(policy)
    if guidance is None:
        chosen, g_src = {"selector": "none", "beta": 1.0}, "no guidance"
    else:
        chosen, g_src = guidance_selection(guidance)
    filled, sources = {}, {}
    for name, value, src in (("selector", chosen["selector"], g_src), ("beta", chosen["beta"], g_src),
                             ("candidates", sampling["candidates"], s_src),
                             ("temperature", sampling["temperature"], s_src)):
        if getattr(selector, name) is None:
            filled[name], sources[name] = value, src
        else:
            sources[name] = "given"
    out = dataclasses.replace(selector, **filled)
    if out.selector == "none":
        out = dataclasses.replace(out, candidates=1)
    return out, sources


class Agent:
    """Acts for S policy seeds at once: obs (S, E, obs_dim) -> actions (S, E, act_dim).

    `guidance` is one artifact or a list of K artifacts (an ensemble: candidates are scored by the
    mean or min of their min-Q, `selector.ensemble`). A guidance artifact with one seed is shared
    by every policy seed; with S seeds, seed i of the guidance goes with seed i of the policy.
    Unset selector fields come from the modules (`resolve_selector`); candidates are scored with
    the target critic unless `selector.critic` is 'online' (artifacts saved before target
    parameters were stored are scored with the online critic, and the record says so).
    """

    def __init__(self, policy: Artifact, guidance: Artifact | list[Artifact] | None, selector: SelectorConfig,
                 allow_mismatch: bool = False):
        guides = [] if guidance is None else list(guidance) if isinstance(guidance, list | tuple) else [guidance]
        for what, art in (("policy", policy), *(("guidance", g) for g in guides)):
            if not isinstance(art, Artifact):
                raise MDPTError(f"{what} must be an artifact (mdpt.load_{what}(DIR)), got {type(art).__name__}")
        if not isinstance(selector, SelectorConfig):
            raise MDPTError(f"selector must be a SelectorConfig, got {type(selector).__name__}")
        selector, sources = resolve_selector(selector, policy, guides[0] if guides else None)
        selector.validate(bool(guides))
        if selector.selector == "none":
            guides = []
        self.policy, self.guides, self.selector = policy, guides, selector
        self.record = {"selector": dataclasses.asdict(selector), "selector_sources": sources,
                       "policy": str(policy.path)}
        for g in guides:
            rec = check_compatible(policy, g, allow_mismatch)
            if g.num_seeds not in (1, policy.num_seeds):
                raise MDPTError(f"guidance {g.path} holds {g.num_seeds} seeds; use one "
                                f"(--guidance-seed) or as many as the policy ({policy.num_seeds})")
            self.record["mismatch_override"] = self.record.get("mismatch_override", False) or rec["mismatch_override"]
        if guides:
            self.record["guidance"] = str(guides[0].path) if len(guides) == 1 else [str(g.path) for g in guides]
            self.record["guidance_fingerprint"] = guides[0].fingerprint
            self.record["critic"] = self.critic_used
        self._act = jax.jit(self._build())
        self._compiled: dict[int, object] = {}  # envs -> compiled act (shared with `with_params` copies)

    @property
    def guidance(self) -> Artifact | None:
        return self.guides[0] if self.guides else None

    @property
    def critic_used(self) -> str:
        if self.selector.critic == "online":
            return "online"
        missing = [g for g in self.guides if "target_q" not in g.params]
        return "target" if not missing else "online (the artifact predates saved target critics)"

    def with_params(self, policy_params, guidance_params=None) -> Agent:
        """This agent with other parameters of the same shapes, sharing its compiled function.

        `policy_params` has the policy's (seeds, ...) layout; `guidance_params` the (first)
        guidance artifact's (None: keep the current guidance parameters). No checks are redone and
        nothing is recompiled as long as the shapes stay the same.
        """
        new = copy.copy(self)
        new.policy = _replace_params(self.policy, policy_params)
        if guidance_params is not None and self.guides:
            new.guides = [_replace_params(self.guides[0], guidance_params), *self.guides[1:]]
        new.record = dict(self.record)
        return new

    @property
    def num_seeds(self) -> int:
        return self.policy.num_seeds

    def _build(self):
        pol, sel = self.policy.module, self.selector
        pn = self.policy.normalizer
        guides = [(g.module, g.normalizer) for g in self.guides]
        n = sel.candidates if guides else 1
        critic = sel.critic

        def score(gparams, obs, cands):  # (E*n,) combined min-Q of every guidance module
            qs = [mod.q_min(mod.scoring_params(p, critic), norm.normalize_obs(obs), cands)
                  for (mod, norm), p in zip(guides, gparams, strict=True)]
            stacked = jnp.stack(qs)
            return stacked.min(0) if sel.ensemble == "min" else stacked.mean(0)

        def act_one(pparams, gparams, obs, key):  # obs (E, obs_dim) raw
            k_sample, k_pick = jax.random.split(key)
            e = obs.shape[0]
            p_obs = jnp.repeat(pn.normalize_obs(obs), n, axis=0)
            cands = pol.sample(pparams, p_obs, k_sample, sel.temperature, sel.cfg_weight)
            if not guides:
                return cands.reshape(e, -1)
            q = score(gparams, jnp.repeat(obs, n, axis=0), cands).reshape(e, n)
            if sel.selector == "argmax":
                idx = q.argmax(-1)
            else:
                idx = jax.random.categorical(k_pick, sel.beta * q, axis=-1)
            return cands.reshape(e, n, -1)[jnp.arange(e), idx]

        g_axes = [0 if g.num_seeds > 1 else None for g in self.guides]

        seed_numbers = self.policy.seeds

        def act(pparams, gparams, obs, key):  # policy seed s samples with fold_in(key, s), as in any other group
            keys = seed_keys(key, seed_numbers)
            return jax.vmap(act_one, in_axes=(0, g_axes, 0, 0))(pparams, gparams, obs, keys)

        return act

    def compiled(self, envs: int):
        """`act` for observations (seeds, envs, obs_dim), compiled ahead of time: the executable
        later calls of that shape run, and the XLA memory analysis an evaluation checks first."""
        if envs not in self._compiled:
            obs = jax.ShapeDtypeStruct((self.num_seeds, envs, self.policy.module.obs_dim), jnp.float32)
            lowered = self._act.lower(self.policy.params, self._guidance_params(), obs, jax.random.PRNGKey(0))
            self._compiled[envs] = lowered.compile()
        return self._compiled[envs]

    def _guidance_params(self) -> list:
        return [g.params if g.num_seeds > 1 else jax.tree.map(lambda x: x[0], g.params) for g in self.guides]

    def act(self, obs: np.ndarray, key: jax.Array) -> np.ndarray:
        return np.asarray(self.act_async(obs, key))

    def act_async(self, obs: np.ndarray, key: jax.Array) -> jax.Array:
        """Like `act`, but returns the JAX array without waiting for it (JAX dispatches
        asynchronously), so the caller can step simulators while the actions are computed."""
        try:
            obs = jnp.asarray(obs, jnp.float32)
        except (TypeError, ValueError):
            raise MDPTError(f"observations must be an array of numbers, got {type(obs).__name__}") from None
        want = self.policy.module.obs_dim
        if obs.ndim != 3 or obs.shape[0] != self.num_seeds or obs.shape[2] != want or obs.shape[1] < 1:
            raise MDPTError(f"observations must have the shape (seeds={self.num_seeds}, envs, obs_dim={want}), "
                            f"got {tuple(obs.shape)}")
        return self._act(self.policy.params, self._guidance_params(), obs, key)


def _replace_params(art: Artifact, params) -> Artifact:
    return dataclasses.replace(art, params=params)
