"""Evaluation plans for studies: cheap learning curves, full-protocol final points.

Evaluation dominates a study's cost at scale, and a learning curve only needs to show a trend:
its points can use fewer episodes and fewer sampled candidates per action than the final,
reported numbers, which keep the full protocol. An ``EvalPlan`` records that choice so that a
report can state it in one sentence (``describe()``).
"""

from __future__ import annotations

from dataclasses import dataclass

from mdpt.errors import MDPTError


@dataclass(frozen=True)
class EvalPlan:
    """Episodes per policy seed and candidates per action, for curve points and final points.

    ``None`` candidates mean the agent's own setting (its ``SelectorConfig.candidates``).
    """

    curve_episodes: int = 5
    curve_candidates: int | None = None
    final_episodes: int = 10
    final_candidates: int | None = None

    def __post_init__(self) -> None:
        for name in ("curve_episodes", "final_episodes", "curve_candidates", "final_candidates"):
            v = getattr(self, name)
            if v is None and name.endswith("candidates"):
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise MDPTError(f"EvalPlan.{name} must be an integer >= 1; got {v!r}")

    @classmethod
    def full(cls, episodes: int = 10, candidates: int | None = None) -> EvalPlan:
        """The full protocol for every point."""
        return cls(episodes, candidates, episodes, candidates)

    def episodes(self, final: bool) -> int:
        return self.final_episodes if final else self.curve_episodes

    def candidates(self, final: bool, default: int) -> int:
        """Candidates per action for a point; ``default`` is the agent's own setting."""
        c = self.final_candidates if final else self.curve_candidates
        return default if c is None else c

    def describe(self) -> str:
        """One sentence for reports."""
        def part(episodes: int, candidates: int | None) -> str:
            eps = f"{episodes} episode{'s' if episodes != 1 else ''} per seed"
            if candidates is None:
                return f"{eps} with the agent's own number of candidates per action"
            return f"{eps} with {candidates} candidate{'s' if candidates != 1 else ''} per action"

        final = part(self.final_episodes, self.final_candidates)
        if (self.curve_episodes, self.curve_candidates) == (self.final_episodes, self.final_candidates):
            return f"Every evaluation point (learning curves and final results) uses {final}."
        return (f"Learning-curve points use {part(self.curve_episodes, self.curve_candidates)}; "
                f"final results use the full protocol, {final}.")
