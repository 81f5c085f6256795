"""The preset departures measured: each departure's run against the preset's run of the same seeds, budget
and evaluation protocol (results/hopper-mr-9seeds), at the last step and over the learning curve.

    OUT=departures bash results/preset-departures/run.sh    # the runs (hours on 2 cores; resumable)
    python results/preset-departures/analyse.py             # writes results/preset-departures/departures.{json,md}

Each departure may run in shards of its seeds (SEED=0 SEEDS=3 ..., runs/<name>/seeds-A-B); the analysis joins
them and compares each with the preset's run at the same seeds. The runs' config, summary and metrics are kept
in results/preset-departures/runs/ (no checkpoints); this script reads only results/, so its output
rebuilds from what is committed.
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


def curve(run: dict) -> dict[int, dict[int, float]]:
    """step -> {seed number: mean guided score}."""
    first = int(run["config"]["seed"])
    return {int(step): {first + i: float(v) for i, v in enumerate(seed_means(np.asarray(scores, float)))}
            for step, scores, _ in run["evals"]["guided"]}


def at(c: dict, step: int, seeds: list[int]) -> np.ndarray:
    return np.array([c[step][sd] for sd in seeds])


def pooled(shards: list[Path]) -> dict[int, dict[int, float]]:
    """The curves of a departure's shards (runs/<name>/seeds-A-B, each a run of some of the seeds), joined."""
    out: dict[int, dict[int, float]] = {}
    for shard in shards:
        for step, by_seed in curve(load_run(shard)).items():
            out.setdefault(step, {}).update(by_seed)
    return out


def main() -> int:
    finals, areas, rows = {}, {}, []
    for name, (preset, what, theirs, ours) in DEPARTURES.items():
        shards = sorted((HERE / "runs" / name).glob("seeds-*"))
        if not shards:
            continue
        dep, base = pooled(shards), curve(load_run(PRESET / preset))
        common = sorted(set(dep) & set(base))
        last = common[-1]
        seeds = sorted(set(dep[last]) & set(base[last]))  # the preset's run at the departure's seeds
        label = f"{what}: {theirs} (authors) - {ours} (preset), {preset}"
        finals[label] = (at(dep, last, seeds), at(base, last, seeds))
        areas[label] = (np.mean([at(dep, t, seeds) for t in common], 0), np.mean([at(base, t, seeds) for t in common], 0))
        rows.append({"run": name, "preset_run": preset, "setting": what, "authors": theirs, "preset": ours,
                     "seeds": seeds, "step": last, "steps": common,
                     "departure_final": float(at(dep, last, seeds).mean()), "preset_final": float(at(base, last, seeds).mean())})
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
