"""Markdown and number formatting shared by every report: one table helper (cells escaped), one
duration and one memory formatter."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np


def fmt(x, digits: int = 1) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float) and not np.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "nan")
    return f"{x:.{digits}f}"


def pct(x, digits: int = 1) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{100 * x:+.{digits}f}%"


def table(header: Sequence[str], rows: list[Sequence]) -> list[str]:
    def cell(v):
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return out


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


def hms(seconds) -> str:
    if seconds is None:
        return "n/a"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def mib(b) -> str:
    return "n/a" if b is None else f"{float(b) / 2**20:,.0f} MiB"


def steps_k(step) -> str:
    if step is None:
        return "?"
    return f"{step / 1000:g}k" if step >= 1000 else str(step)


def ci(t, digits=1, pct=False):
    """An estimate and its interval, (point, low, high), signed: `+1.2 [-0.3, +2.5]` (`pct`: in percent)."""
    if t is None:
        return "n/a"
    k = 100.0 if pct else 1.0
    unit = "%" if pct else ""
    return f"{k * t[0]:+.{digits}f}{unit} [{k * t[1]:+.{digits}f}, {k * t[2]:+.{digits}f}]"
