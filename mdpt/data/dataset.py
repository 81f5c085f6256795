"""In-memory offline dataset (D4RL layout) and what training derives from it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from mdpt.data.registry import EnvSpec

ARRAY_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")


def episode_returns(rewards: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Undiscounted return (float64) of each episode of D4RL-ordered `rewards`; `ends[i]` marks the
    last transition of an episode (a terminal or a timeout), and the final transition ends one too."""
    rewards = np.asarray(rewards)
    if len(rewards) == 0:
        return np.zeros(0)
    stops = np.flatnonzero(np.asarray(ends, bool)[:-1]) + 1
    stops = np.concatenate([stops, [len(rewards)]])
    starts = np.concatenate([[0], stops[:-1]])
    csum = np.concatenate([[0.0], np.cumsum(rewards, dtype=np.float64)])
    return csum[stops] - csum[starts]


@dataclass(frozen=True, eq=False)
class Dataset:
    """Transitions in D4RL order. `terminals` are true ends (no bootstrap), `timeouts` time limits.

    Every array has the same length N; episodes are contiguous and end at a terminal or timeout
    (the final transition of the file ends an episode too).
    """

    observations: np.ndarray  # (N, obs_dim) float32
    actions: np.ndarray  # (N, act_dim) float32
    rewards: np.ndarray  # (N,) float32
    terminals: np.ndarray  # (N,) bool
    timeouts: np.ndarray  # (N,) bool
    next_observations: np.ndarray  # (N, obs_dim) float32
    env: EnvSpec
    dataset_id: str | None = None
    source: str = "<memory>"
    attrs: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # conversions applied while loading, said to the user

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def obs_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def act_dim(self) -> int:
        return self.actions.shape[1]

    @cached_property
    def episode_ends(self) -> np.ndarray:
        """Boolean (N,): transition i is the last of its episode."""
        ends = self.terminals | self.timeouts
        ends = ends.copy()
        ends[-1] = True
        return ends

    @cached_property
    def episode_slices(self) -> list[slice]:
        stops = np.flatnonzero(self.episode_ends) + 1
        starts = np.concatenate([[0], stops[:-1]])
        return [slice(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]

    @cached_property
    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode (float64), in order."""
        return episode_returns(self.rewards, self.episode_ends)

    @property
    def masks(self) -> np.ndarray:
        """Bootstrap mask 1 - terminal: learning continues through timeouts."""
        return 1.0 - self.terminals.astype(np.float32)

    @cached_property
    def next_actions(self) -> np.ndarray:
        """The dataset's next action (for SARSA targets). At an episode end the next action is not
        recorded; the current action stands in (irrelevant after a terminal, where mask = 0)."""
        nxt = np.empty_like(self.actions)
        nxt[:-1] = self.actions[1:]
        nxt[self.episode_ends] = self.actions[self.episode_ends]
        return nxt

    @property
    def next_action_valid(self) -> np.ndarray:
        """0 at a time-limit cut (an episode end that is not a terminal): the file records no next
        action there, yet the target bootstraps. 1 elsewhere (after a terminal nothing bootstraps)."""
        return (~(self.episode_ends & ~self.terminals)).astype(np.float32)

    def returns_to_go(self, discount: float = 0.99) -> np.ndarray:
        """Discounted return from each transition to the end of its episode (no bootstrap)."""
        rtg = np.zeros(len(self), dtype=np.float64)
        running = 0.0
        for i in range(len(self) - 1, -1, -1):
            if self.episode_ends[i]:
                running = 0.0
            running = self.rewards[i] + discount * running
            rtg[i] = running
        return rtg.astype(np.float32)

    @cached_property
    def fingerprint(self) -> str:
        """Content hash of the arrays: a saved module records which data it was trained on."""
        h = hashlib.sha256()
        for key in ARRAY_KEYS:
            arr = np.ascontiguousarray(getattr(self, key))
            h.update(key.encode())
            h.update(str(arr.dtype).encode())
            h.update(str(arr.shape).encode())
            h.update(arr.tobytes())
        return h.hexdigest()[:16]

    def return_stats(self) -> dict:
        r = self.episode_returns
        return {"episodes": int(len(r)), "mean": float(r.mean()), "std": float(r.std()),
                "min": float(r.min()), "max": float(r.max())}
