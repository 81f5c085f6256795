"""The preset departures measured: each departure's run against the preset's run of the same seeds, budget
and evaluation protocol (results/hopper-mr-9seeds), at the last step and over the learning curve.

    OUT=departures bash results/preset-departures/run.sh    # the runs (hours on 2 cores; resumable)
    python results/preset-departures/analyse.py             # writes results/preset-departures/departures.{json,md}

The runs' config, summary and metrics are kept in results/preset-departures/runs/ (no checkpoints); this
script reads only results/, so its output rebuilds from what is committed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from mdpt.evaluation import rules
from mdpt.evaluation.inference import seed_means
from mdpt.io import json_default, write_bytes_atomic, write_json_atomic
from mdpt.reports.markdown import table
from mdpt.reports.runs import load_run

HERE = Path(__file__).resolve().parent
PRESET = HERE.parent / "hopper-mr-9seeds" / "runs" / "bullet-hopper-medium-replay-v0"
# run -> (the preset run it is compared with, what departs, the authors' value, the preset's value)
DEPARTURES = {
    "dql-joint-cosine": ("dql-joint", "diffusion noise schedule", "cosine", "vp"),
    "dql-joint-time64": ("dql-joint", "noise-network time embedding", "64", "16"),
    "dql-gfdt-iql-mish": ("dql-gfdt", "stage-1 IQL critic activation", "mish", "relu"),
    "dql-gfdt-iql-cosine": ("dql-gfdt", "stage-1 IQL critic learning rate", "cosine over 200k", "constant"),
    "dql-gfdt-stage1-45k": ("dql-gfdt", "stage-1 length", "longer than the policy (here 45k)", "15k, as the policy"),
}


def curve(run: dict) -> dict[int, np.ndarray]:
    """step -> per-seed mean guided score."""
    return {int(step): seed_means(np.asarray(scores, float)) for step, scores, _ in run["evals"]["guided"]}


def main() -> int:
    finals, areas, rows = {}, {}, []
    for name, (preset, what, theirs, ours) in DEPARTURES.items():
        path = HERE / "runs" / name
        if not path.exists():
            continue
        dep, base = curve(load_run(path)), curve(load_run(PRESET / preset))
        common = sorted(set(dep) & set(base))
        last = common[-1]
        label = f"{what}: {theirs} (authors) - {ours} (preset), {preset}"
        finals[label] = (dep[last], base[last])
        areas[label] = (np.mean([dep[t] for t in common], 0), np.mean([base[t] for t in common], 0))
        rows.append({"run": name, "preset_run": preset, "setting": what, "authors": theirs, "preset": ours,
                     "step": last, "steps": common, "departure_final": float(dep[last].mean()),
                     "preset_final": float(base[last].mean())})
    if not rows:
        print("no departure runs in results/preset-departures/runs yet", file=sys.stderr)
        return 2
    final = rules.gfdt_rule(finals, claimed=None)  # a difference either way is what is asked
    area = rules.gfdt_rule(areas, claimed=None)
    result = {"rows": rows, "final": final.to_json(), "curve_mean": area.to_json()}
    write_json_atomic(HERE / "departures.json", json.loads(json.dumps(result, default=json_default)))
    body = []
    for row, fv, av in zip(rows, final.verdicts.values(), area.verdicts.values(), strict=True):
        body.append([row["setting"], row["authors"], row["preset"], f"{row['departure_final']:.1f}",
                     f"{row['preset_final']:.1f}", fv.sentence(), av.sentence()])
    lines = table(("setting", "authors' value", "preset", f"authors' final (step {rows[0]['step']})", "preset final",
                   "final: authors' - preset", "curve mean: authors' - preset"), body)
    write_bytes_atomic(HERE / "departures.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
