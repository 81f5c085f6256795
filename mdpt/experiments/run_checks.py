"""What a run checks after every chunk, as values: the critic's value bound and `ValueCheck`, and the
chunk metrics as metrics.jsonl keeps them."""

from __future__ import annotations

import numpy as np


def to_list(x):
    return np.asarray(x).tolist()


def value_bound(rewards, discount: float) -> float:
    """The largest |Q| a critic can reach on this data: max |r| / (1 - gamma) (rewards as trained on)."""
    return float(np.abs(np.asarray(rewards)).max()) / (1.0 - discount)


class ValueCheck:
    """|Q| of a trained critic against max |r| / (1 - gamma): a critic past the bound (times a
    margin) for `patience` chunks in a row while still growing is diverging."""

    def __init__(self, bound: float, margin: float, patience: int):
        self.bound, self.limit, self.patience = bound, bound * margin, patience
        self.first_exceeded: int | None = None
        self.max_abs_q = 0.0
        self._streak, self._last = 0, None

    def observe(self, step: int, abs_q_max: float) -> str | None:
        """'ok', 'warn' (past the limit) or 'stop' (past it and growing for `patience` chunks)."""
        self.max_abs_q = max(self.max_abs_q, abs_q_max)
        if abs_q_max <= self.limit:
            self._streak, self._last = 0, abs_q_max
            return "ok"
        if self.first_exceeded is None:
            self.first_exceeded = step
        growing = self._last is None or abs_q_max > self._last
        self._streak = self._streak + 1 if growing else self._streak
        self._last = abs_q_max
        return "stop" if self._streak >= self.patience else "warn"

    def record(self) -> dict:
        return {"bound": self.bound, "limit": self.limit, "max_abs_q": self.max_abs_q,
                "first_exceeded_step": self.first_exceeded, "within_bound": self.first_exceeded is None}


def recorded_metrics(m: dict) -> dict:
    """A chunk's metrics as its metrics.jsonl row keeps them (lists per seed; no per-step '@' series)."""
    return {k: to_list(v) for k, v in m.items() if "@" not in k and k != "nonfinite_at"}


def q_abs_max(row: dict) -> float | None:
    """The largest |Q| over seeds in a train metrics row (None: no critic trains)."""
    return float(np.max(np.asarray(row["guidance/q_abs_max"]))) if "guidance/q_abs_max" in row else None

