"""A finished reproduction directory for report tests, with no training: `tests/data/reproduction/` holds
the protocol, run configs and summaries, transfer cells and data statistics of a real `mdpt reproduce`
(bullet-hopper-medium-replay-v0, DQL, 3 seeds x 15k steps); `make_reproduction(dst)` copies it and adds
each run's metrics.jsonl, drawn from a seeded generator (the real ones were not kept), whose last
evaluation is the summary's final scores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).parent / "data" / "reproduction"
DATASET = "bullet-hopper-medium-replay-v0"


def _metrics(config: dict, summary: dict, rng: np.random.Generator) -> list[dict]:
    rows, seeds = [], len(config["seeds"]) if isinstance(config["seeds"], list) else config["seeds"]
    ev = config.get("eval") or {}
    for step in range(ev.get("every") or config["steps"], config["steps"] + 1, ev.get("every") or config["steps"]):
        rows.append({"phase": "train", "step": step, "wall_s": float(rng.uniform(100, 200)),
                     "policy/bc_loss": rng.uniform(0, 1, seeds).tolist()})
        for variant in ev.get("variants", []) if config.get("algo") else []:
            final = (summary.get("final") or {}).get(variant)
            episodes = ev["final_episodes"] if step == config["steps"] else ev["episodes"]
            scores = final["scores"] if final and step == config["steps"] else \
                rng.normal(30 + 20 * rng.uniform(), 10, (seeds, episodes)).tolist()
            rows.append({"phase": "eval", "step": step, "variant": variant, "scores": scores,
                         "wall_s": float(rng.uniform(10, 20))})
    return rows


def make_reproduction(dst: Path, missing: tuple[str, ...] = ()) -> Path:
    """A copy of the reproduction in `dst` with every run's metrics, but those of the run names in `missing`."""
    shutil.copytree(SOURCE, dst)
    rng = np.random.default_rng(7)
    for run in sorted((dst / "runs" / DATASET).iterdir()):
        config = json.loads((run / "config.json").read_text())
        summary = json.loads((run / "summary.json").read_text())
        rows = _metrics(config, summary, rng)
        if run.name not in missing:
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dst
