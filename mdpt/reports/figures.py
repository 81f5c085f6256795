"""The reports' figures (PNG, written atomically, nothing timestamped): each draws the numbers it is
given on a matplotlib Figure without pyplot's global state."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from mdpt.io import write_bytes_atomic
from mdpt.reports.runs import cost_key, mode_rank

DPI = 150


def figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: Path) -> None:
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


def data_reference_line(ax, data_mean: float | None) -> None:
    """The data's own episodes' score as a dotted reference line on a learning-curve axis (none: nothing)."""
    if data_mean is not None:
        ax.axhline(data_mean, color="0.3", ls=":", lw=1.2, label=f"the data's own episodes ({data_mean:.1f})")


def fig_learning_curves(curves: list[dict], runs: list[dict], dataset: str, path: Path, confidence: float,
                        data_mean: float | None = None):
    """`curves`: one dict per (run, variant) line: run (index into `runs`, which colours it), label,
    seeds (legend text), style, steps, means, low, high (the CI band); `data_mean`: the data's own
    episodes' score, drawn as a reference line."""
    labels = [f"{c['label']} (nn seeds)" for c in curves]  # widest legend entries: sizes the columns
    per_run = {c["run"] for c in curves}
    ncol = _legend_columns(labels, 8.0)
    counts = {sum(c["run"] == i for c in curves) for i in per_run}
    if len(counts) == 1 and len(per_run) <= ncol and len(labels) > 1:
        ncol = len(per_run)  # legend columns fill first: one column per run
    fig = figure(8.0, 4.6 + 0.17 * math.ceil(len(labels) / ncol))
    ax = fig.add_subplot()
    colors = _colors(len(runs))
    for c in curves:
        marker = "o" if len(c["steps"]) <= 25 else None
        ax.plot(c["steps"], c["means"], c["style"], color=colors[c["run"]], marker=marker, markersize=3, lw=1.6,
                label=f"{c['label']} ({c['seeds']})")
        ax.fill_between(c["steps"], c["low"], c["high"], color=colors[c["run"]], alpha=0.15, lw=0)
    data_reference_line(ax, data_mean)
    ax.set_xlabel("policy gradient steps")
    ax.set_ylabel(_ref_label(runs))
    ax.set_title(f"{dataset}: mean score over seeds, {confidence:.0%} bootstrap CI band")
    ax.xaxis.set_major_formatter(_steps_formatter())
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=ncol, frameon=False)
    save(fig, path)


def fig_boxes(cats: list[tuple], runs: list[dict], dataset: str, path: Path):
    """Final and best score boxes per (run, variant); horizontal when there are many settings. `cats`:
    (name, variant, steps text, final scores, best scores, final seed means, best seed means)."""
    if not cats:
        return False
    horizontal = len(cats) > 8
    if horizontal:
        labels = [f"{n} · {v}\n{st}" for n, v, st, *_ in cats]
        longest = max(len(x) for c in cats for x in (f"{c[0]} · {c[1]}", c[2]))
        fig = figure(6.5 + 0.065 * longest, 1.2 + 0.55 * len(cats))
    else:
        labels = [f"{n}\n{v}\n{st}" for n, v, st, *_ in cats]
        longest = max(len(x) for c in cats for x in c[:3])
        fig = figure(max(6.0, len(cats) * max(1.3, 0.075 * longest) + 2.0), 5.0)
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
            seed_means = c[idx + 2]
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
    save(fig, path)
    return True


def _boxplot(ax, data, positions, horizontal: bool):
    kw = {"positions": positions, "widths": 0.34, "patch_artist": True, "showfliers": True,
          "medianprops": {"color": "black"}, "flierprops": {"markersize": 3, "alpha": 0.5}}
    try:  # matplotlib >= 3.10
        return ax.boxplot(data, orientation="horizontal" if horizontal else "vertical", **kw)
    except TypeError:
        return ax.boxplot(data, vert=not horizontal, **kw)


def fig_transfer(t: dict, mean: np.ndarray, iq: np.ndarray, title: str, path: Path):
    """The transfer matrix `t` as two heatmaps: cell means and IQMs (P x G arrays)."""
    from matplotlib.patches import Rectangle

    P, G = len(t["policies"]), len(t["guidances"])
    longest_g = max(len(g) for g in t["guidances"])
    longest_p = max(len(p) for p in t["policies"])
    rotate = longest_g > 12  # wider than a cell at fontsize 8
    width = 2 * (G * 0.85 + 0.07 * longest_p + 0.6) + 1.6
    height = 0.5 * P + 1.6 + (0.055 * longest_g if rotate else 0.3)
    width, height = max(width, 9.0), max(height, 3.6)
    fig = figure(width, height)
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
    save(fig, path)


def fig_cost(runs: list[dict], path: Path):
    rows = [r for r in runs if r["summary"].get("seconds_per_step") is not None
            or r["summary"].get("peak_memory_bytes") is not None]
    if not rows:
        return False
    rows = sorted(rows, key=cost_key)
    labels = [f"{r['name']}\n({r['config']['mode']})" for r in rows]
    modes = sorted({r["config"]["mode"] for r in rows}, key=mode_rank)
    mode_color = dict(zip(modes, _colors(max(len(modes), 2)), strict=False))
    height = max(3.0, 0.5 * len(rows) + 1.8)
    fig = figure(11.0, height)
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
    save(fig, path)
    return True
