"""Markdown + PNG report over finished run directories (``mdpt report``).

``write_report(run_dirs, out_dir)`` writes ``out_dir/report.md`` and the PNG figures it links;
every file is written atomically (temp file + rename). Nothing is timestamped, so the same
runs give the same report.

Run directory format
--------------------
``config.json``
    The resolved config. Read keys: ``algo``, ``mode`` (``"joint"`` | ``"guidance-first"``),
    ``dataset`` (required); ``guidance_kind``, ``seeds`` (int S), ``steps`` (shown if present).
``metrics.jsonl``
    One JSON object per line; rows with another ``phase`` are ignored. If a ``(step, variant)``
    pair appears twice (a resumed run) the later row wins.

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
    pretraining included). Missing ``final``/``best`` entries are derived from the evaluation rows
    (last checkpoint; checkpoint with the highest mean score).
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

Statistics (``mdpt.evaluation.stats``): point estimates pool all seeds x episodes; CIs are
percentile bootstraps that resample training seeds (episodes when a setting has one seed).
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mdpt.data.registry import parse_dataset_id, reference_bounds
from mdpt.errors import MDPTError
from mdpt.evaluation import stats
from mdpt.io import read_json, write_bytes_atomic

REQUIRED_CONFIG = ("algo", "mode", "dataset")
MODES_ORDER = ("joint", "guidance-first")
VARIANT_STYLES = {"guided": "-", "unguided": "--", "random-guidance": ":"}
DPI = 150


# ============================================================================ loading


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
    metrics = _read_jsonl(run_dir / "metrics.jsonl")
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


def _read_jsonl(path: Path) -> list[dict]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise MDPTError(f"{path}: metrics file not found; not a run directory") from None
    except UnicodeDecodeError:
        raise MDPTError(f"{path}: not a text file; the metrics file is corrupt") from None
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise MDPTError(f"{path}:{i}: not valid JSON; the metrics file is truncated or corrupt") from None
        if not isinstance(row, dict):
            raise MDPTError(f"{path}:{i}: expected a JSON object per line")
        row["_line"] = i
        rows.append(row)
    return rows


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
        env = _env_of(dataset)
        if env is not None:
            lo, hi = reference_bounds(env, "d4rl")
            return 100.0 * (_matrix(row["returns"], where) - lo) / (hi - lo)
    raise MDPTError(f"{where}: evaluation row has no 'scores'")


def _env_of(dataset: str):
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
        where = f"{path}:{row['_line']}"
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


# ============================================================================ statistics helpers


def _final_best(run: dict) -> dict[str, dict[str, tuple[int, np.ndarray, bool]]]:
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


def _reference_note(runs: list[dict]) -> list[str]:
    lines = []
    seen = set()
    for run in runs:
        ref = str(run["summary"].get("reference", "d4rl"))
        dataset = run["config"]["dataset"]
        env = _env_of(dataset)
        bounds = run["summary"].get("reference_bounds")
        key = (ref, env.name if env else dataset, tuple(bounds) if bounds else None)
        if key in seen:
            continue
        seen.add(key)
        if bounds:
            lo, hi = bounds
        elif ref == "d4rl" and env is not None:
            lo, hi = reference_bounds(env, "d4rl")
        else:
            lo = hi = None
        where = ("D4RL `infos.py` bullet constants (min = random policy, max = expert)" if ref == "d4rl"
                 else "the dataset file's attrs (min = mean return of uniform random actions, "
                      "max = mean episode return of its expert data)")
        span = f": min {lo:.2f}, max {hi:.2f}" if lo is not None else ""
        lines.append(f"- `{ref}` reference for {key[1]}{span}, from {where}.")
    return lines


# ============================================================================ figures


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    write_bytes_atomic(path, buf.getvalue())


def _steps_formatter():
    from matplotlib.ticker import FuncFormatter

    def fmt(x, _pos):
        if abs(x) >= 1e6:
            return f"{x / 1e6:g}M"
        if abs(x) >= 1e3:
            return f"{x / 1e3:g}k"
        return f"{x:g}"

    return FuncFormatter(fmt)


def _k(step) -> str:
    if step is None:
        return "?"
    return f"{step / 1000:g}k" if step >= 1000 else str(step)


def _legend_columns(labels: list[str], width_in: float, fontsize: float = 8.0) -> int:
    """How many legend columns of these labels fit across a figure ``width_in`` inches wide."""
    chars_per_row = width_in * 72 / (0.6 * fontsize)
    per_entry = max(len(x) for x in labels) + 6  # handle + padding
    return max(1, min(len(labels), int(chars_per_row // per_entry)))


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _ref_label(runs: list[dict]) -> str:
    refs = sorted({str(r["summary"].get("reference", "d4rl")) for r in runs})
    return f"normalized score ({refs[0]} reference)" if len(refs) == 1 else "normalized score (mixed references)"


def _fig_learning_curves(runs: list[dict], dataset: str, path: Path, n_boot: int, seed: int, confidence: float):
    labels = [f"{r['name']} · {v} (nn seeds)" for r in runs for v in r["evals"]]
    ncol = _legend_columns(labels, 8.0)
    if len({len(r["evals"]) for r in runs}) == 1 and len(runs) <= ncol and len(labels) > 1:
        ncol = len(runs)  # legend columns fill first: one column per run
    fig = _figure(8.0, 4.6 + 0.17 * math.ceil(len(labels) / ncol))
    ax = fig.add_subplot()
    colors = _colors(len(runs))
    n_lines = 0
    for color, run in zip(colors, runs, strict=True):
        for variant, series in run["evals"].items():
            steps = np.array([s for s, _, _ in series], dtype=float)
            means = np.array([x.mean() for _, x, _ in series])
            # resampling seeds, the pooled mean is the mean of the drawn seeds' means: same draws, less work
            cis = np.array([stats.bootstrap_ci(x.mean(axis=1, keepdims=True) if x.shape[0] > 1 else x, "mean",
                                               confidence, n_boot, seed) for _, x, _ in series])
            style = VARIANT_STYLES.get(variant, "-.")
            marker = "o" if len(steps) <= 25 else None
            n_seeds = sorted({x.shape[0] for _, x, _ in series})
            seeds_txt = "/".join(map(str, n_seeds)) + (" seed" if n_seeds == [1] else " seeds")
            ax.plot(steps, means, style, color=color, marker=marker, markersize=3, lw=1.6,
                    label=f"{run['name']} · {variant} ({seeds_txt})")
            ax.fill_between(steps, cis[:, 0], cis[:, 1], color=color, alpha=0.15, lw=0)
            n_lines += 1
    ax.set_xlabel("policy gradient steps")
    ax.set_ylabel(_ref_label(runs))
    ax.set_title(f"{dataset}: mean score over seeds, {confidence:.0%} bootstrap CI band")
    ax.xaxis.set_major_formatter(_steps_formatter())
    ax.grid(alpha=0.3)
    if n_lines:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=ncol, frameon=False)
    _save(fig, path)


def _fig_boxes(runs: list[dict], dataset: str, path: Path):
    """Final and best score boxes per (run, variant); horizontal when there are many settings."""
    cats = []  # (name, variant, steps text, final scores, best scores)
    for run in runs:
        fb = _final_best(run)
        for variant in fb["final"]:
            f = fb["final"][variant]
            b = fb["best"].get(variant, f)
            cats.append((run["name"], variant, f"steps {_k(f[0])} / {_k(b[0])}", f[1], b[1]))
    if not cats:
        return False
    horizontal = len(cats) > 8
    if horizontal:
        labels = [f"{n} · {v}\n{st}" for n, v, st, _, _ in cats]
        longest = max(len(x) for c in cats for x in (f"{c[0]} · {c[1]}", c[2]))
        fig = _figure(6.5 + 0.065 * longest, 1.2 + 0.55 * len(cats))
    else:
        labels = [f"{n}\n{v}\n{st}" for n, v, st, _, _ in cats]
        longest = max(len(x) for c in cats for x in c[:3])
        fig = _figure(max(6.0, len(cats) * max(1.3, 0.075 * longest) + 2.0), 5.0)
    ax = fig.add_subplot()
    pos = np.arange(len(cats), dtype=float)
    palette = {"final": "#4C72B0", "best": "#DD8452"}
    handles = []
    for offset, key, idx in ((-0.2, "final", 3), (0.2, "best", 4)):
        data = [c[idx].reshape(-1) for c in cats]
        bp = _boxplot(ax, data, pos + offset, horizontal)
        for box in bp["boxes"]:
            box.set_facecolor(palette[key])
            box.set_alpha(0.75)
        handles.append(bp["boxes"][0])
        for p, c in zip(pos + offset, cats, strict=True):  # per-seed means
            seed_means = c[idx].mean(axis=1)
            xy = (seed_means, np.full_like(seed_means, p)) if horizontal else (np.full_like(seed_means, p), seed_means)
            ax.scatter(*xy, marker="D", s=14, color="black", zorder=3)
    seed_marker = ax.scatter([], [], marker="D", s=14, color="black")
    ax.legend([*handles, seed_marker], ["final (last iterate)", "best checkpoint", "seed mean"],
              fontsize=8, loc="best")
    if horizontal:
        ax.set_yticks(pos, labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(_ref_label(runs))
        ax.grid(axis="x", alpha=0.3)
    else:
        ax.set_xticks(pos, labels, fontsize=8)
        ax.set_ylabel(_ref_label(runs))
        ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{dataset}: final vs best-checkpoint scores\n(all seeds × episodes; steps: final / best)")
    _save(fig, path)
    return True


def _boxplot(ax, data, positions, horizontal: bool):
    kw = {"positions": positions, "widths": 0.34, "patch_artist": True, "showfliers": True,
          "medianprops": {"color": "black"}, "flierprops": {"markersize": 3, "alpha": 0.5}}
    try:  # matplotlib >= 3.10
        return ax.boxplot(data, orientation="horizontal" if horizontal else "vertical", **kw)
    except TypeError:
        return ax.boxplot(data, vert=not horizontal, **kw)


def _fig_transfer(t: dict, title: str, path: Path):
    from matplotlib.patches import Rectangle

    P, G = len(t["policies"]), len(t["guidances"])
    mean = np.array([[c.mean() for c in row] for row in t["cells"]])
    iq = np.array([[stats.iqm(c) for c in row] for row in t["cells"]])
    longest_g = max(len(g) for g in t["guidances"])
    longest_p = max(len(p) for p in t["policies"])
    rotate = longest_g > 12  # wider than a cell at fontsize 8
    width = 2 * (G * 0.85 + 0.07 * longest_p + 0.6) + 1.6
    height = 0.5 * P + 1.6 + (0.055 * longest_g if rotate else 0.3)
    width, height = max(width, 9.0), max(height, 3.6)
    fig = _figure(width, height)
    axes = fig.subplots(1, 2)
    vmin, vmax = float(min(mean.min(), iq.min())), float(max(mean.max(), iq.max()))
    if vmin == vmax:
        vmin, vmax = vmin - 1, vmax + 1
    im = None
    for ax, values, name in ((axes[0], mean, "mean"), (axes[1], iq, "IQM")):
        im = ax.imshow(values, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        for i in range(P):
            for j in range(G):
                v = values[i, j]
                light = (v - vmin) / (vmax - vmin) > 0.6
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=8,
                        color="black" if light else "white", fontweight="bold" if t["own"][i, j] else None)
                if t["own"][i, j]:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2.5))
        ax.set_xticks(range(G), t["guidances"], rotation=35 if rotate else 0, ha="right" if rotate else "center",
                      rotation_mode="anchor" if rotate else "default", fontsize=8)
        ax.set_yticks(range(P), t["policies"], fontsize=8)
        ax.set_xlabel("guidance used at inference")
        ax.set_title(f"{name} normalized score")
    axes[0].set_ylabel("policy")
    fig.colorbar(im, ax=axes, shrink=0.9, label=f"normalized score ({t.get('reference', 'd4rl')} reference)")
    fig.suptitle(f"{title} (red box: the policy's own training guidance)")
    _save(fig, path)


def _fig_cost(runs: list[dict], path: Path):
    rows = [r for r in runs if r["summary"].get("seconds_per_step") is not None
            or r["summary"].get("peak_memory_bytes") is not None]
    if not rows:
        return False
    rows = sorted(rows, key=_cost_key)
    labels = [f"{r['name']}\n({r['config']['mode']})" for r in rows]
    modes = sorted({r["config"]["mode"] for r in rows}, key=_mode_rank)
    mode_color = dict(zip(modes, _colors(max(len(modes), 2)), strict=False))
    height = max(3.0, 0.5 * len(rows) + 1.8)
    fig = _figure(11.0, height)
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(rows))
    panels = (
        (axes[0], "seconds_per_step", 1e3, "milliseconds per policy gradient step", "training time per step"),
        (axes[1], "peak_memory_bytes", 1 / 2**20, "peak device memory (MiB)", "peak memory"),
    )
    for ax, key, scale, xlabel, title in panels:
        vals = [r["summary"].get(key) for r in rows]
        widths = [0.0 if v is None else float(v) * scale for v in vals]
        colors = [mode_color[r["config"]["mode"]] for r in rows]
        ax.barh(y, widths, color=colors)
        top = max(widths) if any(widths) else 1.0
        for yi, v, w in zip(y, vals, widths, strict=True):
            text = "n/a" if v is None else (f"{w:.1f}" if w < 100 else f"{w:,.0f}")
            ax.text(w + 0.01 * top, yi, text, va="center", fontsize=8)
        ax.set_xlim(0, top * 1.18)
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, labels, fontsize=8)
    axes[0].invert_yaxis()
    from matplotlib.patches import Patch

    fig.legend([Patch(color=mode_color[m]) for m in modes], modes, loc="outside lower center",
               ncol=len(modes), fontsize=8)
    _save(fig, path)
    return True


def _mode_rank(mode: str):
    return (MODES_ORDER.index(mode) if mode in MODES_ORDER else len(MODES_ORDER), mode)


def _cost_key(run: dict):
    c = run["config"]
    return (c["dataset"], c["algo"], str(guidance_kind(c) or ""), _mode_rank(c["mode"]), run["name"])


# ============================================================================ markdown


def _f(x, digits: int = 1) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float) and not np.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "nan")
    return f"{x:.{digits}f}"


def _pct(x) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{100 * x:+.1f}%"


def _table(header: Sequence[str], rows: list[Sequence]) -> list[str]:
    def cell(v):
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return out


def _score_row(name: str, variant: str, step, scores: np.ndarray, derived: bool, opts: dict) -> list:
    s = stats.summarize(scores, **opts)
    mark = "*" if derived else ""
    return [name, variant, f"{step}{mark}" if step is not None else "n/a",
            f"{s['n_seeds']}x{s['n_episodes']}" if s["n_episodes"] else str(s["n"]),
            f"{_f(s['mean'])} [{_f(s['mean_ci_low'])}, {_f(s['mean_ci_high'])}]", _f(s["median"]),
            f"{_f(s['iqm'])} [{_f(s['iqm_ci_low'])}, {_f(s['iqm_ci_high'])}]", _f(s["iqr"])]


SCORE_HEADER = ("run", "variant", "step", "seeds x episodes", "mean [CI]", "median", "IQM [CI]", "IQR")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


def _unique_names(runs: list[dict]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        base = run["name"]
        if base in seen:
            seen[base] += 1
            run["name"] = f"{base} ({seen[base]})"
        else:
            seen[base] = 1


def _hms(seconds) -> str:
    if seconds is None:
        return "n/a"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _mib(b) -> str:
    return "n/a" if b is None else f"{float(b) / 2**20:,.0f} MiB"


def _sim_share(run: dict) -> str:
    sim = tot = 0.0
    for series in run["evals"].values():
        for _, _, row in series:
            if isinstance(row.get("sim_s"), int | float) and isinstance(row.get("eval_s"), int | float):
                sim += row["sim_s"]
                tot += row["eval_s"]
    return f"{100 * sim / tot:.0f}%" if tot > 0 else "n/a"


def _train_wall(run: dict):
    if run["summary"].get("train_wall_s") is not None:
        return run["summary"]["train_wall_s"]
    walls = [m["wall_s"] for m in run["metrics"] if isinstance(m.get("wall_s"), int | float)]
    return max(walls) if walls else None


def _cost_section(runs: list[dict]) -> list[str]:
    rows = []
    for r in sorted(runs, key=_cost_key):
        s, c = r["summary"], r["config"]
        sps = s.get("seconds_per_step")
        rows.append([r["name"], c["algo"], c["mode"], c["dataset"], guidance_kind(c) or "n/a",
                     "n/a" if sps is None else f"{1e3 * float(sps):.2f}", _mib(s.get("peak_memory_bytes")),
                     _hms(_train_wall(r)), _sim_share(r)])
    lines = _table(("run", "algo", "mode", "dataset", "guidance", "ms / step", "peak memory",
                    "train wall time", "eval time in simulator"), rows)
    # joint vs guidance-first pairs with the same algo and dataset; their guidance kinds may differ
    # (DQL joint trains its dql-critic, DQL guidance-first uses an iql module), so both are named
    groups: dict[tuple, dict[str, dict]] = {}
    for r in runs:
        c = r["config"]
        groups.setdefault((c["algo"], c["dataset"]), {}).setdefault(c["mode"], r)
    pairs = []
    for (algo, dataset), by_mode in sorted(groups.items()):
        if "joint" in by_mode and "guidance-first" in by_mode:
            j, g = by_mode["joint"]["summary"], by_mode["guidance-first"]["summary"]
            kinds = " / ".join(str(guidance_kind(by_mode[m]["config"]) or "n/a")
                               for m in ("joint", "guidance-first"))
            pairs.append([algo, dataset, kinds,
                          _pct(_rel(j.get("seconds_per_step"), g.get("seconds_per_step"))),
                          _pct(_rel(j.get("peak_memory_bytes"), g.get("peak_memory_bytes"))),
                          _pct(_rel(_train_wall(by_mode["joint"]), _train_wall(by_mode["guidance-first"])))])
    if pairs:
        lines += ["", "Guidance-first relative to joint training (negative = cheaper):", ""]
        lines += _table(("algo", "dataset", "guidance (joint / guidance-first)", "time / step", "peak memory",
                         "train wall time"), pairs)
    return lines


def _rel(a, b):
    if a is None or b is None or float(a) == 0:
        return None
    return (float(b) - float(a)) / float(a)


def _transfer_section(run: dict, figure: str, opts: dict) -> list[str]:
    t = run["transfer"]
    P, G = len(t["policies"]), len(t["guidances"])
    lines = [f"### Transfer: {run['name']}", "",
             f"![guidance transfer heatmap]({figure})", "",
             f"Rows: policies; columns: the guidance used at inference. Cells: mean (IQM) normalized score "
             f"(`{t.get('reference', 'd4rl')}` reference) over policy seeds x episodes; **bold** = the "
             "policy's own training guidance.", ""]
    rows = []
    for i in range(P):
        cells = []
        for j in range(G):
            c = t["cells"][i][j]
            txt = f"{_f(c.mean())} ({_f(stats.iqm(c))})"
            cells.append(f"**{txt}**" if t["own"][i, j] else txt)
        rows.append([t["policies"][i], *cells])
    lines += _table(("policy \\ guidance", *t["guidances"]), rows)
    own = [t["cells"][i][j] for i in range(P) for j in range(G) if t["own"][i, j]]
    other = [t["cells"][i][j] for i in range(P) for j in range(G) if not t["own"][i, j]]
    group_rows = []
    pooled = {}
    for label, cells in (("own guidance (diagonal)", own), ("swapped guidance (off-diagonal)", other)):
        if not cells:
            continue
        s = stats.summarize(cells, **opts)
        flat = np.concatenate([c.reshape(-1) for c in cells])
        cell_means = np.array([c.mean() for c in cells])
        pooled[label] = (flat, cell_means)
        group_rows.append([label, len(cells), s["n"], _f(s["mean"]), _f(s["median"]),
                           f"{_f(s['iqm'])} [{_f(s['iqm_ci_low'])}, {_f(s['iqm_ci_high'])}]", _f(s["iqr"]),
                           _f(stats.iqr(cell_means)) if len(cells) > 1 else "n/a"])
    lines += ["", *_table(("cells", "count", "scores", "mean", "median", "IQM [CI]", "IQR (all scores)",
                            "IQR (cell means)"), group_rows)]
    if len(pooled) == 2:
        (a_flat, a_means), (b_flat, b_means) = pooled.values()
        change = stats.relative_iqr_change(a_flat, b_flat)
        lines += ["", f"Relative IQR change, swapped vs own guidance: all scores {_pct(change)}"
                  + (f"; cell means {_pct(stats.relative_iqr_change(a_means, b_means))}"
                     if len(a_means) > 1 and len(b_means) > 1 else "")
                  + " (negative = swapped guidance gives a narrower spread)."]
    return lines + [""]


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path, *, n_boot: int = 2000, seed: int = 0,
                 confidence: float = 0.95) -> Path:
    """Write ``out_dir/report.md`` and its PNG figures for the given run directories."""
    if not run_dirs:
        raise MDPTError("no run directories given; pass at least one")
    runs = [load_run(d) for d in run_dirs]
    _unique_names(runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    opts = {"n_boot": n_boot, "seed": seed, "confidence": confidence}
    ci = f"{confidence:.0%}"

    md = ["# MDPT report", ""]
    md += _table(("run", "algo", "mode", "dataset", "guidance", "seeds", "steps", "reference", "directory"),
                 [[r["name"], r["config"]["algo"], r["config"]["mode"], r["config"]["dataset"],
                   guidance_kind(r["config"]) or "n/a", r["config"].get("seeds", "n/a"),
                   r["config"].get("steps", "n/a"), r["summary"].get("reference", "d4rl"), f"`{r['dir']}`"]
                  for r in runs])
    md += ["", "## Score reference", "",
           "Normalized score = 100 * (R - min) / (max - min), R the undiscounted episode return.", ""]
    md += _reference_note(runs)
    md += ["", f"Statistics pool every seed x episode score of a setting. IQM = mean of the middle 50% "
           f"(25% trimmed each side); IQR = 75th - 25th percentile. [CI] = {ci} percentile bootstrap "
           f"({n_boot} resamples, seed {seed}) resampling training seeds (episodes when a setting has one "
           "seed). A step marked * was derived from metrics.jsonl (summary.json had no entry).", ""]

    datasets = sorted({r["config"]["dataset"] for r in runs})
    for dataset in datasets:
        group = [r for r in runs if r["config"]["dataset"] == dataset]
        md += [f"## {dataset}", ""]
        if any(r["evals"] for r in group):
            name = f"learning_curves_{_slug(dataset)}.png"
            _fig_learning_curves([r for r in group if r["evals"]], dataset, out_dir / name, n_boot, seed, confidence)
            md += [f"![learning curves]({name})", "",
                   f"Mean normalized score over seeds (each seed: the mean of its evaluation episodes) "
                   f"against policy gradient steps; band: {ci} bootstrap CI resampling seeds (episodes for "
                   "a single-seed run).", ""]
        finals, bests = [], []
        for r in group:
            fb = _final_best(r)
            finals += [_score_row(r["name"], v, *fb["final"][v], opts) for v in fb["final"]]
            bests += [_score_row(r["name"], v, *fb["best"][v], opts) for v in fb["best"]]
        if finals:
            box = f"scores_{_slug(dataset)}.png"
            if _fig_boxes(group, dataset, out_dir / box):
                md += [f"![score distributions]({box})", "",
                       "Boxes: quartiles of all seed x episode scores (whiskers 1.5 IQR); diamonds: per-seed means.",
                       ""]
            md += ["### Final scores (last iterate)", "", *_table(SCORE_HEADER, finals), ""]
        if bests:
            md += ["### Best-checkpoint scores", "",
                   "Selected on the same evaluation episodes they report, so biased upward; compare runs on "
                   "the last iterate.", "", *_table(SCORE_HEADER, bests), ""]

    md += ["## Time and memory", ""]
    if _fig_cost(runs, out_dir / "cost.png"):
        md += ["![time and memory](cost.png)", ""]
    md += _cost_section(runs) + [""]

    transfers = [r for r in runs if r["transfer"] is not None]
    if transfers:
        md += ["## Guidance transfer", ""]
        for r in transfers:
            name = f"transfer_{_slug(r['name'])}.png"
            t = r["transfer"]
            _fig_transfer(t, f"{t.get('dataset', r['config']['dataset'])}: guidance transfer", out_dir / name)
            md += _transfer_section(r, name, opts)

    path = out_dir / "report.md"
    write_bytes_atomic(path, ("\n".join(md).rstrip() + "\n").encode())
    return path
