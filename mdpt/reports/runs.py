"""Run directories as data for the reports: `load_run` reads one (config, metrics through
`rundir.read_metrics`, summary, an optional transfer matrix), `load_transfer` a `transfer.json`,
`final_best` its final and best scores.

Run directory format
--------------------
``config.json``
    The resolved config. Read keys: ``algo``, ``mode`` (``"joint"`` | ``"guidance-first"``),
    ``dataset`` (required); ``guidance_kind``, ``seeds`` (int S), ``steps`` (shown if present).
``metrics.jsonl``
    One JSON object per line (read by `rundir.read_metrics`: a last line torn by a kill is dropped);
    rows with another ``phase`` are ignored. If a ``(step, variant)`` pair appears twice (a resumed
    run) the later row wins.

    - evaluation: ``{"phase": "eval", "step": int, "variant": str, "returns": [[E floats] x S],
      "scores": [[E floats] x S], "reference": "d4rl" | "dataset", "wall_s": float}``, optional
      ``"sim_s"``/``"policy_s"``/``"eval_s"`` (seconds in the simulator / the policy / the whole
      evaluation; the report shows the simulator's share). ``step`` counts policy (diffusion)
      gradient steps. Without ``scores``, ``returns`` are normalized here if the reference is
      ``d4rl``.
    - training: ``{"phase": "train", "step": int, "wall_s": float, "<loss key>": [S floats]}``.
``summary.json``
    ``{"name": str, "algo", "mode", "dataset", "reference": str,
    "final": {variant: {"step": int, "scores": [[E] x S]}},
    "best": {variant: {"step": int, "scores": [[E] x S]}},
    "seconds_per_step": float, "peak_memory_bytes": int | null}``; optional
    ``"reference_bounds": [min, max]`` and ``"train_wall_s"`` (total training wall time, guidance
    pretraining included; without it the report sums the training rows' ``wall_s``). Missing
    ``final``/``best`` entries are derived from the evaluation rows (last checkpoint; checkpoint
    with the highest mean score).
``transfer.json`` (optional, written by the transfer study)::

    {
      "dataset": "bullet-hopper-medium-v0",          # optional, for titles
      "reference": "d4rl",
      "policies":  ["dql-s0", "dql-s1", ...],         # P row names
      "guidances": ["iql-s0", "iql-s1", ...],         # G column names
      "scores": [[cell(p, g) for g in guidances] for p in policies],
                 # cell = [[E floats] for each policy seed]: normalized scores of policy p
                 # sampled with guidance g; cells may differ in seeds/episodes
      "diagonal": [["dql-s0", "iql-s0"], ...]          # (policy, guidance) pairs where the
                                                      # guidance is the policy's own (the one it
                                                      # trained with); default: cell (i, i)
                                                      # when P == G, else none
    }
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mdpt.data.registry import parse_dataset_id, reference_bounds
from mdpt.errors import MDPTError
from mdpt.experiments.rundir import read_metrics
from mdpt.io import read_json

REQUIRED_CONFIG = ("algo", "mode", "dataset")


MODES_ORDER = ("joint", "guidance-first")


VARIANT_STYLES = {"guided": "-", "unguided": "--", "random-guidance": ":"}


def load_run(run_dir: str | Path) -> dict:
    """Read a run directory. Returns ``{"dir", "name", "config", "metrics", "summary",
    "transfer", "evals", "train"}`` where ``evals`` maps variant -> [(step, scores (S, E), row)]
    sorted by step and ``train`` is the list of training rows. One-line MDPTError on a missing
    or corrupt file."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MDPTError(f"{run_dir}: run directory not found")
    config = read_json(run_dir / "config.json", "run config")
    _require_object(config, run_dir / "config.json")
    missing = [k for k in REQUIRED_CONFIG if k not in config]
    if missing:
        raise MDPTError(f"{run_dir / 'config.json'}: missing key(s) {', '.join(missing)}; not a run config")
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        raise MDPTError(f"{summary_path}: not found; the run has not finished (resume it first)")
    summary = read_json(summary_path, "run summary")
    _require_object(summary, summary_path)
    metrics = read_metrics(run_dir / "metrics.jsonl")
    transfer = None
    if (run_dir / "transfer.json").exists():
        transfer = load_transfer(run_dir / "transfer.json")
    evals = _eval_series(metrics, run_dir / "metrics.jsonl", config, summary)
    return {
        "dir": run_dir,
        "name": str(summary.get("name") or run_dir.name),
        "config": config,
        "metrics": metrics,
        "summary": summary,
        "transfer": transfer,
        "evals": evals,
        "train": [m for m in metrics if m.get("phase") == "train"],
    }


def guidance_kind(config: dict) -> str | None:
    """The guidance kind of a run config (nested since the settings tree; flat before)."""
    nested = config.get("guidance")
    if isinstance(nested, dict) and nested.get("kind"):
        return str(nested["kind"])
    return config.get("guidance_kind")


def _require_object(obj, path: Path) -> None:
    if not isinstance(obj, dict):
        raise MDPTError(f"{path}: expected a JSON object, got {type(obj).__name__}")


def _matrix(value, where: str) -> np.ndarray:
    """A (seeds, episodes) float array from nested lists, or a one-line error."""
    try:
        x = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise MDPTError(f"{where}: scores must be a rectangular list of lists (seeds x episodes)") from None
    if x.ndim != 2 or x.size == 0:
        raise MDPTError(f"{where}: scores must have shape (seeds, episodes); got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise MDPTError(f"{where}: scores contain NaN or infinity")
    return x


def _row_scores(row: dict, where: str, dataset: str, reference: str) -> np.ndarray:
    if "scores" in row:
        return _matrix(row["scores"], where)
    if "returns" in row and row.get("reference", reference) == "d4rl":
        env = env_of(dataset)
        if env is not None:
            lo, hi = reference_bounds(env, "d4rl")
            return 100.0 * (_matrix(row["returns"], where) - lo) / (hi - lo)
    raise MDPTError(f"{where}: evaluation row has no 'scores'")


def env_of(dataset: str):
    try:
        return parse_dataset_id(dataset).env
    except MDPTError:
        return None


def _eval_series(metrics: list[dict], path: Path, config: dict, summary: dict) -> dict:
    reference = str(summary.get("reference", "d4rl"))
    latest: dict[tuple[str, int], tuple[np.ndarray, dict]] = {}
    for row in metrics:
        if row.get("phase") != "eval":
            continue
        where = f"{path} (step {row.get('step')!r})"
        step, variant = row.get("step"), row.get("variant")
        if not isinstance(step, int) or isinstance(step, bool) or not isinstance(variant, str):
            raise MDPTError(f"{where}: evaluation row needs an integer 'step' and a string 'variant'")
        latest[(variant, step)] = (_row_scores(row, where, config["dataset"], reference), row)
    series: dict[str, list] = {}
    order = list(VARIANT_STYLES)
    for (variant, step), (scores, row) in sorted(
        latest.items(), key=lambda kv: (order.index(kv[0][0]) if kv[0][0] in order else len(order), kv[0])
    ):
        series.setdefault(variant, []).append((step, scores, row))
    return series


def load_transfer(path: str | Path) -> dict:
    """Read and validate a ``transfer.json`` (format in the module docstring).

    Returns the JSON object with ``cells`` (P x G nested list of (S, E) arrays) and ``own``
    (P x G bool array: the policy's own guidance) added."""
    path = Path(path)
    t = read_json(path, "transfer results")
    _require_object(t, path)
    for key in ("policies", "guidances", "scores"):
        if key not in t:
            raise MDPTError(f"{path}: missing key {key!r}")
    policies, guidances = list(map(str, t["policies"])), list(map(str, t["guidances"]))
    if not policies or not guidances:
        raise MDPTError(f"{path}: 'policies' and 'guidances' must be non-empty lists of names")
    rows = t["scores"]
    if not isinstance(rows, list) or len(rows) != len(policies):
        raise MDPTError(f"{path}: 'scores' must have one entry per policy ({len(policies)})")
    cells = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(guidances):
            raise MDPTError(f"{path}: scores[{i}] must have one cell per guidance ({len(guidances)})")
        cells.append([_matrix(c, f"{path}: scores[{i}][{j}]") for j, c in enumerate(row)])
    own = np.zeros((len(policies), len(guidances)), bool)
    if "diagonal" in t and t["diagonal"] is not None:
        for pair in t["diagonal"]:
            if not (isinstance(pair, list) and len(pair) == 2 and pair[0] in policies and pair[1] in guidances):
                raise MDPTError(f"{path}: 'diagonal' entries must be [policy, guidance] name pairs; got {pair!r}")
            own[policies.index(pair[0]), guidances.index(pair[1])] = True
    elif len(policies) == len(guidances):
        np.fill_diagonal(own, True)
    return {**t, "policies": policies, "guidances": guidances, "cells": cells, "own": own}


def final_best(run: dict) -> dict[str, dict[str, tuple[int, np.ndarray, bool]]]:
    """{"final"|"best": {variant: (step, scores, derived)}} from summary.json, else the evals."""
    out: dict[str, dict] = {"final": {}, "best": {}}
    summary, path = run["summary"], run["dir"] / "summary.json"
    for kind in ("final", "best"):
        block = summary.get(kind) or {}
        if not isinstance(block, dict):
            raise MDPTError(f"{path}: {kind!r} must map variant -> {{step, scores}}")
        for variant, entry in block.items():
            if not isinstance(entry, dict) or "scores" not in entry:
                raise MDPTError(f"{path}: {kind}[{variant!r}] needs 'step' and 'scores'")
            out[kind][variant] = (entry.get("step"), _matrix(entry["scores"], f"{path}: {kind}[{variant!r}]"), False)
    for variant, series in run["evals"].items():
        if variant not in out["final"]:
            step, scores, _ = series[-1]
            out["final"][variant] = (step, scores, True)
        if variant not in out["best"]:
            step, scores, _ = max(series, key=lambda s: (s[1].mean(), -s[0]))
            out["best"][variant] = (step, scores, True)
    return out


def mode_rank(mode: str):
    return (MODES_ORDER.index(mode) if mode in MODES_ORDER else len(MODES_ORDER), mode)


def cost_key(run: dict):
    c = run["config"]
    return (c["dataset"], c["algo"], str(guidance_kind(c) or ""), mode_rank(c["mode"]), run["name"])


def train_wall_s(run: dict) -> float | None:
    """A run's training wall time: the summary's `train_wall_s`, else the sum of its training rows' `wall_s`
    (None without any)."""
    if run["summary"].get("train_wall_s") is not None:
        return run["summary"]["train_wall_s"]
    walls = [m["wall_s"] for m in run["train"] if isinstance(m.get("wall_s"), int | float)]
    return float(sum(walls)) if walls else None
