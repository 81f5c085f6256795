"""`mdpt.evaluate`: a policy (every seed at once) with any compatible guidance, in its bullet env.

The one evaluation entry point: the command line, the runner, the studies and the reports all
call `evaluate` or, with an agent already built, `evaluate_agent`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import jax
import numpy as np

from mdpt.agent import Agent, SelectorConfig
from mdpt.artifacts import Artifact, load_guidance, load_policy
from mdpt.errors import MDPTError
from mdpt.seeding import seed_keys

VARIANTS = ("guided", "unguided", "random-guidance")
MAX_EPISODES = 1000  # episodes per seed: one simulator each, all stepped at once
MAX_ENV_STEPS = 1_000_000  # env steps per episode (the bullet envs end episodes at 1000)
EVAL_LOWER = ("the episodes (eval.episodes, --episodes), the candidates (selector.candidates, --candidates) "
              "or the policy seeds evaluated at once (--policy-seed)")


@dataclass
class Evaluation:
    """Scores (seeds, episodes) of one evaluation, with what produced them."""

    result: object  # evaluation.rollout.EvalResult
    scores: np.ndarray
    reference: str
    record: dict = field(default_factory=dict)  # the agent's record: selector, its sources, critic, guidance

    @property
    def returns(self) -> np.ndarray:
        return self.result.returns

    def summary(self) -> dict:
        from mdpt.evaluation import stats

        return stats.summarize(self.scores)


def check_arguments(episodes, seed, max_steps) -> None:
    """The numbers of an evaluation, as the command line checks its flags: one-line MDPTErrors."""
    from mdpt.settings import check_count

    check_count(episodes, "episodes", 1, MAX_EPISODES, "per seed")
    check_count(seed, "seed", 0, 2**31 - 1 - episodes, "the episodes' env seeds are SEED..SEED+episodes-1, 32-bit")
    if max_steps is not None:
        check_count(max_steps, "max_steps", 1, MAX_ENV_STEPS, "env steps per episode")


def check_agent(agent: Agent, episodes: int) -> None:
    """Refuse, before any environment starts, an evaluation of `episodes` per seed whose act step
    (seeds x episodes x candidates) cannot fit in memory (XLA memory analysis of the compiled
    step; `mdpt.training.profiling.check_memory`), or more episodes than MAX_EPISODES."""
    from mdpt.training.profiling import check_memory, out_of_memory_as_error

    if not 1 <= episodes <= MAX_EPISODES:
        raise MDPTError(f"episodes must be in 1..{MAX_EPISODES} per seed, got {episodes}")
    what = (f"the evaluation's act step ({agent.num_seeds} seeds x {episodes} episodes x "
            f"{agent.selector.candidates} candidates)")
    with out_of_memory_as_error(what, EVAL_LOWER):
        check_memory(agent.compiled(episodes), what, EVAL_LOWER)


def evaluate_agent(agent: Agent, env, episodes: int, seed: int = 0, max_steps: int | None = None, groups: int = 1):
    """The EvalResult (returns (seeds, episodes), lengths, timings) of an agent for all its policy
    seeds at once; one batched agent call per env step, checked first (`check_agent`). `groups`
    > 1 pipelines the policy with the simulator (same distribution, other random draws; about
    even on 2 cores, see benchmarks/RESULTS_eval.md)."""
    from mdpt.evaluation.rollout import evaluate_agent as rollout_agent
    from mdpt.training.profiling import out_of_memory_as_error

    check_arguments(episodes, seed, max_steps)
    check_agent(agent, -(-episodes // groups))
    with out_of_memory_as_error(f"the evaluation ({agent.num_seeds} seeds x {episodes} episodes)", EVAL_LOWER):
        return rollout_agent(agent, env, episodes, seed, max_steps, groups=groups)


def _as_policy(policy) -> Artifact:
    return policy if isinstance(policy, Artifact) else load_policy(policy)


def _as_guidance(guidance) -> list[Artifact]:
    if guidance is None:
        return []
    items = guidance if isinstance(guidance, list | tuple) else [guidance]
    return [g if isinstance(g, Artifact) else load_guidance(g) for g in items]


def evaluate(policy: Artifact | str | os.PathLike, guidance=None, *, selector: SelectorConfig | None = None,
             episodes: int = 10, seed: int = 0, max_steps: int | None = None, reference: str = "d4rl",
             dataset_attrs: dict | None = None, allow_mismatch: bool = False) -> Evaluation:
    """Evaluate every seed of `policy` (an artifact or its directory) with `guidance` (None, one
    artifact or directory, or a list of them: an ensemble). Unset selector fields come from the
    modules' own presets; `reference='dataset'` needs the dataset's attrs; a reference the env or data
    lacks is replaced as `registry.available_reference` says (Evaluation.reference is the one used)."""
    from mdpt.data.registry import available_reference, env_spec_for

    check_arguments(episodes, seed, max_steps)
    if reference not in ("d4rl", "dataset"):
        raise MDPTError(f"unknown reference {reference!r}; use d4rl or dataset")
    if selector is not None and not isinstance(selector, SelectorConfig):
        raise MDPTError(f"selector must be a SelectorConfig, got {type(selector).__name__}")
    pol = _as_policy(policy)
    guides = _as_guidance(guidance)
    if selector is None:
        selector = SelectorConfig() if guides else SelectorConfig("none")
    agent = Agent(pol, guides or None, selector, allow_mismatch)
    env_id = (pol.meta.get("dataset") or {}).get("env_id")
    if not env_id:
        raise MDPTError(f"{pol.path}: metadata records no dataset env_id")
    env = env_spec_for(env_id)
    reference = available_reference(env, reference, dataset_attrs)
    result = evaluate_agent(agent, env, episodes, seed, max_steps)
    return Evaluation(result, result.scores(reference, dataset_attrs), reference, dict(agent.record))


def variant_agent(variant: str, policy: Artifact, guidance: Artifact | None, selector: SelectorConfig,
                  allow_mismatch: bool) -> Agent:
    """guided: own guidance; unguided: plain sampling; random-guidance: an untrained guidance (one per
    policy seed, drawn from the seed's number)."""
    if variant not in VARIANTS:
        raise MDPTError(f"unknown evaluation variant {variant!r}; use one of: {', '.join(VARIANTS)}")
    if variant == "unguided" or guidance is None:
        return Agent(policy, None, SelectorConfig("none", selector.beta, 1, selector.temperature, selector.cfg_weight))
    if variant == "random-guidance":
        module = guidance.module
        keys = seed_keys(10_000, policy.seeds)
        params = jax.vmap(lambda k: module.init(k)["params"])(keys)
        meta = {**guidance.meta, "dataset": policy.meta.get("dataset", {})}
        guidance = Artifact(module, params, guidance.normalizer, meta, None)
    return Agent(policy, guidance, selector, allow_mismatch)
