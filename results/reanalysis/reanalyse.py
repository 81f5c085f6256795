"""The committed reproductions re-analysed with the calibrated verdict rules, from what they kept.

Their runs' metrics.jsonl were not committed, so the learning curves are gone; each run's
summary.json keeps the last evaluation's scores per seed and episode, and the transfer caches keep
every swap's. That is enough for finding 2 (guidance-first vs joint at the last step, guided and
sampled plainly) and finding 3 (own vs swapped guidance), not for the stage part of finding 1
(it needs the first evaluation too). No compute: the numbers are the committed ones.

    python results/reanalysis/reanalyse.py            # writes results/reanalysis/verdicts.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from mdpt.io import json_default, read_json, write_json_atomic
from mdpt.reproduction.protocol import Protocol, read_protocol, transfer_cells
from mdpt.reproduction.verdicts import verdicts

RESULTS = Path(__file__).resolve().parents[1]
REPRODUCTIONS = ("reproduce-cpu", "reproduce-hopper-mr")


def last_points(out: Path) -> dict:
    """A reproduction as `verdicts` reads it, each run holding only its last evaluation (from summary.json)."""
    saved = read_protocol(out)
    runs: dict[str, dict] = {}
    for key in saved["runs"]:
        dataset, name = key.split("/", 1)
        summary = read_json(out / "runs" / key / "summary.json", "run summary")
        evals = {variant: [(int(f["step"]), np.asarray(f["scores"], float), {})]
                 for variant, f in (summary.get("final") or {}).items()}
        runs.setdefault(dataset, {})[name] = {"summary": summary, "evals": evals}
    transfer = {p.stem: transfer_cells(p) for p in sorted((out / "transfer").glob("*.json"))}
    return {"protocol": Protocol.from_json(saved["protocol"]), "runs": runs, "transfer": transfer}


def main() -> int:
    result = {}
    for name in REPRODUCTIONS:
        v = verdicts(last_points(RESULTS / name))
        v.pop("stage_mismatched", None)  # one point per curve here: no stage test
        result[name] = v
    path = Path(__file__).parent / "verdicts.json"
    write_json_atomic(path, json.loads(json.dumps(result, default=json_default)))
    for name, v in result.items():
        for key in ("gfdt", "gfdt_plain", "spread", "spread_cross", "spread_ensemble"):
            if v.get(key):
                print(f"{name} {key}: {v[key]['word']}")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
