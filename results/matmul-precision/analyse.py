"""Matmul precision vs scores and values: the runs of README.md's command -> summary.json, table.md, curves.png.

    python results/matmul-precision/analyse.py RUNS_DIR   (RUNS_DIR/<precision>/ as `mdpt train-policy --out` wrote them)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from mdpt.evaluation.stats import diff_ci, mean_ci

HERE = Path(__file__).resolve().parent
# run folder -> label; the control is the default precision again, its seeds 0 and 1 vmapped as 2 instead of 4
# (fp32 sums in another order): the score change that any rounding-level difference makes
RUNS = {"default": "default (fp32 on CPU)", "default-2seeds": "default, seeds 0-1 run as 2 (control)",
        "tf32": "tf32", "bf16": "bf16"}


def load(run: Path) -> dict:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {"train": [r for r in rows if r["phase"] == "train"], "eval": [r for r in rows if r["phase"] == "eval"],
            "summary": json.loads((run / "summary.json").read_text()),
            "config": json.loads((run / "config.json").read_text())}


def series(run: dict, key: str) -> tuple[list[int], np.ndarray]:
    """(steps, (chunks, seeds) values) of a per-chunk training metric."""
    return [r["step"] for r in run["train"]], np.asarray([r[key] for r in run["train"]], float)


def scores_at(run: dict, step: int) -> np.ndarray:
    return np.asarray(next(r["scores"] for r in run["eval"] if r["step"] == step and r["variant"] == "guided"))


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.abs(b)))


def compare(runs: dict) -> dict:
    """Each run against the default run's same seeds: scores (bootstrap CIs over seeds) and training values."""
    base = runs["default"]
    steps = sorted({r["step"] for r in base["eval"]})
    out = {"steps": steps, "rows": {}}
    for p, run in runs.items():
        seeds = run["summary"]["seeds"]
        same = [base["summary"]["seeds"].index(s) for s in seeds]  # the default run's rows of these seeds
        row = {"label": RUNS[p], "seeds": seeds, "seconds_per_step": run["summary"]["seconds_per_step"],
               "max_abs_q": run["summary"]["value_check"]["max_abs_q"],
               "bound": run["summary"]["value_check"]["bound"]}
        for t in steps:
            s, b = scores_at(run, t), scores_at(base, t)[same]
            row[f"score@{t}"] = mean_ci(s)
            row[f"seed_means@{t}"] = s.mean(1).tolist()
            if p != "default":
                row[f"diff@{t}"] = diff_ci(s, b)
                row[f"paired_diff@{t}"] = (s.mean(1) - b.mean(1)).tolist()
        for key in ("policy/bc_loss", "guidance/q_mean"):
            _, v = series(run, key)
            row[f"{key}@last"] = v[-1].tolist()
            if p != "default":
                _, b = series(base, key)
                row[f"{key} relative diff, first chunk"] = relative(v[0], b[0, same])
                row[f"{key} relative diff, last chunk"] = relative(v[-1], b[-1, same])
        out["rows"][p] = row
    return out


def table(c: dict) -> str:
    last = c["steps"][-1]
    lines = ["| run | score at " + " / ".join(f"{t // 1000}k" for t in c["steps"])
             + " [95% CI] | per seed at the last step | minus default's same seeds, last step: mean [95% CI]; "
             "per seed | BC loss; Q mean: largest relative difference from default's same seed, first / last chunk | "
             "max \\|Q\\| (bound) | s / step (CPU) |",
             "|---|---|---|---|---|---:|---:|"]
    for p, r in c["rows"].items():
        scores = " / ".join(f"{r[f'score@{t}'][0]:.1f} [{r[f'score@{t}'][1]:.1f}, {r[f'score@{t}'][2]:.1f}]"
                            for t in c["steps"])
        diff = (f"{r[f'diff@{last}'][0]:+.1f} [{r[f'diff@{last}'][1]:+.1f}, {r[f'diff@{last}'][2]:+.1f}]; "
                + ", ".join(f"{x:+.1f}" for x in r[f"paired_diff@{last}"]) if p != "default" else "")
        drift = ("" if p == "default" else
                 f"{r['policy/bc_loss relative diff, first chunk']:.1e} / {r['policy/bc_loss relative diff, last chunk']:.1e}; "
                 f"{r['guidance/q_mean relative diff, first chunk']:.1e} / {r['guidance/q_mean relative diff, last chunk']:.1e}")
        per_seed = ", ".join(f"{x:.1f}" for x in r[f"seed_means@{last}"])
        lines.append(f"| {r['label']} (seeds {', '.join(map(str, r['seeds']))}) | {scores} | {per_seed} | {diff} | {drift} | {r['max_abs_q']:.0f} ({r['bound']:.0f}) | "
                     f"{r['seconds_per_step']:.3f} |")
    return "\n".join(lines) + "\n"


COLORS = {"default": "k", "default-2seeds": "tab:gray", "tf32": "tab:blue", "bf16": "tab:red"}


def figure(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for p, run in runs.items():
        for ax, key in zip(axes, ("policy/bc_loss", "guidance/q_mean"), strict=True):
            steps, v = series(run, key)
            for i in range(v.shape[1]):
                ax.plot(steps, v[:, i], color=COLORS[p], alpha=0.7, lw=1, label=RUNS[p] if i == 0 else None)
            ax.set_title(key + " (per seed, per chunk)")
            ax.set_xlabel("step")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(runs_dir: str) -> None:
    runs = {p: load(Path(runs_dir) / p) for p in RUNS if (Path(runs_dir) / p / "summary.json").exists()}
    c = compare(runs)
    (HERE / "summary.json").write_text(json.dumps(c, indent=1) + "\n")
    (HERE / "table.md").write_text(table(c))
    figure(runs, HERE / "curves.png")
    print(table(c))


if __name__ == "__main__":
    main(sys.argv[1])
