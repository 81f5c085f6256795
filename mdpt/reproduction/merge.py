"""`mdpt reproduce --merge A,B,... --out OUT`: one reproduction joined from shards of its seeds.

A reproduction too long for one sitting or one machine runs as shards that differ only in their
seeds (`--seed 0 --seeds 3`, then `--seed 3 --seeds 3`, ...). Each shard finishes on its own and may
be kept without its checkpoints; the merge joins them seed by seed into the reproduction of all the
seeds (runs, metrics, summaries, guidance swaps, the data's statistics), whose report is written like
any other. Every random draw of a seed depends on that seed's number only (`mdpt.seeding`), so a
merged run holds what one run of all the seeds holds, but for the swaps that pair seeds with each
other: a seed-swapped guidance is another seed's of the same shard, and an ensemble's members are
the shard's own iql-b seeds. A merged reproduction can be merged again with further shards.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from mdpt.errors import MDPTError
from mdpt.experiments.run_results import final_and_best
from mdpt.experiments.rundir import read_metrics
from mdpt.io import atomic_dir, read_json, write_bytes_atomic, write_json_atomic
from mdpt.reproduction.protocol import Protocol, dataset_dir, read_protocol, transfer_cells

SEED_FIELDS = ("seed", "seeds", "shards")
PER_SEED = {"scores", "returns", "lengths", "seeds"}  # one entry per training seed
SUMMED = ("wall_s", "sim_s", "policy_s", "eval_s", "train_wall_s")  # seconds: the shards' total


@dataclasses.dataclass
class Shard:
    root: Path
    saved: dict
    protocol: Protocol

    @property
    def ranges(self) -> tuple[tuple[int, int], ...]:
        return self.protocol.shards or ((self.protocol.seed, self.protocol.seeds),)


def merge_reproductions(sources: list[str | Path], out: str | Path) -> Protocol:
    """Join the finished reproductions `sources` (one protocol, contiguous seeds) into `out`, replaced
    whole; returns the merged protocol. One-line MDPTError, with nothing written, when they cannot be
    joined."""
    out = Path(out)
    shards = sorted((_read_shard(Path(s)) for s in sources), key=lambda s: s.protocol.seed)
    if len(shards) < 2:
        raise MDPTError("--merge needs two or more reproduction directories, comma-separated: shards of one "
                        "protocol that differ only in --seed and --seeds")
    _check_out(out, shards)
    first = shards[0]
    for sh in shards[1:]:
        differ = [f.name for f in dataclasses.fields(Protocol) if f.name not in SEED_FIELDS
                  and getattr(sh.protocol, f.name) != getattr(first.protocol, f.name)]
        if differ:
            raise MDPTError(f"{sh.root}: its protocol differs from {first.root}'s in {differ[0]} "
                            f"({getattr(sh.protocol, differ[0])!r} vs {getattr(first.protocol, differ[0])!r}); "
                            "shards of one reproduction differ only in --seed and --seeds")
        if sh.saved["runs"] != first.saved["runs"]:
            raise MDPTError(f"{sh.root}: plans other runs than {first.root}; shards of one reproduction plan the same")
    for a, b in zip(shards, shards[1:], strict=False):
        end = a.protocol.seed + a.protocol.seeds
        if b.protocol.seed != end:
            raise MDPTError(f"{b.root}: its seeds start at {b.protocol.seed}, but {a.root}'s end at {end - 1}; "
                            f"shards must follow each other without gaps or overlap (next --seed {end})")
    merged = dataclasses.replace(first.protocol, seeds=sum(s.protocol.seeds for s in shards),
                                 shards=tuple(r for s in shards for r in s.ranges)).validate()
    new_root = str(out.resolve())
    for sh in shards:
        for key in sh.saved["runs"]:
            if not (sh.root / "runs" / key / "summary.json").exists():
                raise MDPTError(f"{sh.root / 'runs' / key}: not finished; finish the shard first (run its "
                                "mdpt reproduce command again), then merge")
    with atomic_dir(out) as tmp:
        for key in first.saved["runs"]:
            _merge_run(shards, key, tmp / "runs" / key, new_root)
        for ds in merged.datasets:
            name = f"{dataset_dir(ds)}.json"
            _merge_transfer(shards, name, tmp / "transfer" / name, new_root)
            _same_file(shards, Path("data") / name, tmp / "data" / name)
        write_json_atomic(tmp / "protocol.json", {"protocol": merged.to_json(), "runs": first.saved["runs"],
                                                  "root": new_root})
    return merged


def _read_shard(root: Path) -> Shard:
    saved = read_protocol(root)
    return Shard(root, saved, Protocol.from_json(saved["protocol"]))


def _check_out(out: Path, shards: list[Shard]) -> None:
    resolved = out.resolve()
    if any(sh.root.resolve() == resolved for sh in shards):
        raise MDPTError(f"--out {out} is one of the shards; merge into a new directory")
    if out.exists() and any(out.iterdir()):
        saved = read_json(out / "protocol.json", "reproduction plan") if (out / "protocol.json").exists() else None
        if not (isinstance(saved, dict) and (saved.get("protocol") or {}).get("shards")):
            raise MDPTError(f"--out {out} exists and is not a merged reproduction; merge into a new directory")


def _rebase(obj, old: str, new: str):
    """`obj` with every string under the shard's root `old` moved under `new`."""
    if isinstance(obj, str):
        return new + obj[len(old):] if obj == old or obj.startswith(old + "/") else obj
    if isinstance(obj, list):
        return [_rebase(x, old, new) for x in obj]
    if isinstance(obj, dict):
        return {k: _rebase(v, old, new) for k, v in obj.items()}
    return obj


def _root(sh: Shard) -> str:
    """The shard's root as its paths name it: where it was made (protocol.json's root)."""
    return str(sh.saved.get("root") or sh.root.resolve()).rstrip("/")


def _read(sh: Shard, path: Path, what: str, new_root: str):
    return _rebase(read_json(path, what), _root(sh), new_root)


def _differs(where: Path, field: str) -> MDPTError:
    return MDPTError(f"{where}: {field} differs between the shards; they are not shards of one reproduction "
                     "(same protocol and code)")


def _merge_run(shards: list[Shard], key: str, dst: Path, new_root: str) -> None:
    dirs = [sh.root / "runs" / key for sh in shards]
    configs = [_read(sh, d / "config.json", "run config", new_root) for sh, d in zip(shards, dirs, strict=True)]
    counts = [int(c["seeds"]) for c in configs]
    for d, c in zip(dirs[1:], configs[1:], strict=True):
        field = next((k for k in sorted(set(c) | set(configs[0])) if k not in SEED_FIELDS + ("versions",)
                      and c.get(k) != configs[0].get(k)), None)
        if field:
            raise _differs(d / "config.json", field)
    config = {**configs[0], "seeds": sum(counts)}
    rows = _merge_rows([_latest(_rebase(read_metrics(d / "metrics.jsonl"), _root(sh), new_root))
                        for sh, d in zip(shards, dirs, strict=True)], counts, dirs[0] / "metrics.jsonl")
    summaries = [_read(sh, d / "summary.json", "run summary", new_root) for sh, d in zip(shards, dirs, strict=True)]
    summary = _merge_summary(summaries, rows, counts, dirs[0] / "summary.json")
    write_json_atomic(dst / "config.json", config)
    write_bytes_atomic(dst / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    write_json_atomic(dst / "summary.json", summary)


def _latest(rows: list[dict]) -> dict[tuple, dict]:
    """Rows by (phase, step, variant), a resumed run's later row winning, in first-seen order."""
    out: dict[tuple, dict] = {}
    for r in rows:
        out[(r.get("phase"), r["step"], r.get("variant"))] = r
    return out


def _merge_rows(shards: list[dict[tuple, dict]], counts: list[int], where: Path) -> list[dict]:
    keys = list(shards[0])
    for rows in shards[1:]:
        if set(rows) != set(keys):
            phase, step, variant = next(iter(set(rows) ^ set(keys)))
            raise MDPTError(f"{where}: the shards did not record the same rows ({phase} at step {step}"
                            f"{f', {variant}' if variant else ''}); finish every shard first")
    out = []
    for k in keys:
        values = [rows[k] for rows in shards]
        per_seed = PER_SEED | ({f for f in values[0] if all(isinstance(v.get(f), list) and len(v[f]) == n
                                                            for v, n in zip(values, counts, strict=True))}
                               if k[0] == "train" else set())  # training rows: [S floats] per metric
        out.append(_merge_values(values, per_seed, where, f"row {k[0]} at step {k[1]}"))
    return out


def _merge_values(values: list[dict], per_seed: set[str], where: Path, what: str) -> dict:
    """One record from the shards' records of it: per-seed lists joined, seconds summed, the rest equal."""
    out = {}
    for field in values[0]:
        xs = [v.get(field) for v in values]
        if field in per_seed and all(isinstance(x, list) for x in xs):
            out[field] = [y for x in xs for y in x]
        elif field in SUMMED and all(isinstance(x, int | float) for x in xs):
            out[field] = float(sum(xs))
        elif all(x == xs[0] for x in xs[1:]):
            out[field] = xs[0]
        else:
            raise _differs(where, f"{what}: {field}")
    return out


def _merge_summary(summaries: list[dict], rows: list[dict], counts: list[int], where: Path) -> dict:
    evals = [r for r in rows if r.get("phase") == "eval"]
    final, best = final_and_best(evals)
    out = dict(summaries[0])
    out.update(seeds=[s for x in summaries for s in x.get("seeds", [])], final=final, best=best)
    if not evals:  # a run whose summary was not made from its own evaluation rows
        out["final"] = _merge_variants([x.get("final") or {} for x in summaries], where)
        out["best"] = _merge_variants([x.get("best") or {} for x in summaries], where)
    selected = [x.get("selected_offline") or {} for x in summaries]
    out["selected_offline"] = {v: _selected(v, [x[v] for x in selected]) for v in selected[0]
                               if all(v in x for x in selected)}
    out["warnings"] = list(dict.fromkeys(w for x in summaries for w in x.get("warnings", [])))[:20]
    times = [x.get("seconds_per_step") for x in summaries]
    out["seconds_per_step"] = float(np.mean(times)) if all(isinstance(t, int | float) for t in times) else None
    peaks = [x.get("peak_memory_bytes") for x in summaries]
    out["peak_memory_bytes"] = max(peaks) if all(isinstance(p, int) for p in peaks) else None
    if any("train_wall_s" in x for x in summaries):
        out["train_wall_s"] = float(sum(x.get("train_wall_s") or 0.0 for x in summaries))
    if any(x.get("evaluated_later") for x in summaries):
        out["evaluated_later"] = True
    out["value_check"] = _value_check([x.get("value_check") for x in summaries], where)
    done = {"seeds", "final", "best", "selected_offline", "warnings", "seconds_per_step", "peak_memory_bytes",
            "train_wall_s", "evaluated_later", "value_check"}
    for field in sorted(set().union(*summaries) - done):
        if any(x.get(field) != summaries[0].get(field) for x in summaries[1:]):
            raise _differs(where, field)
    return out


def _merge_variants(per_shard: list[dict], where: Path) -> dict:
    return {v: {**_merge_values([x[v] for x in per_shard], {"scores"}, where, v),
                "mean": float(np.mean([s for x in per_shard for s in x[v]["scores"]]))}
            for v in per_shard[0] if all(v in x for x in per_shard)}


def _selected(variant: str, parts: list[dict]) -> dict:
    scores = [s for p in parts for s in p["scores"]]
    return {"steps": [s for p in parts for s in p["steps"]], "scores": scores,
            "mean": float(np.mean([np.mean(s) for s in scores])), "rule": parts[0].get("rule")}


def _value_check(checks: list, where: Path) -> dict | None:
    if all(c is None for c in checks):
        return None
    if any(not isinstance(c, dict) for c in checks):
        raise _differs(where, "value_check")
    for field in ("bound", "limit"):
        if any(c.get(field) != checks[0].get(field) for c in checks):
            raise _differs(where, f"value_check.{field}")
    exceeded = [c["first_exceeded_step"] for c in checks if c.get("first_exceeded_step") is not None]
    return {**checks[0], "max_abs_q": max(c.get("max_abs_q") or 0.0 for c in checks),
            "first_exceeded_step": min(exceeded) if exceeded else None,
            "within_bound": all(c.get("within_bound", True) for c in checks)}


def _merge_transfer(shards: list[Shard], name: str, dst: Path, new_root: str) -> None:
    paths = [sh.root / "transfer" / name for sh in shards]
    if not any(p.exists() for p in paths):
        return
    cells = [_rebase(transfer_cells(p), _root(sh), new_root)
             for sh, p in zip(shards, paths, strict=True)]
    merged = {}
    for key in cells[0]:
        missing = next((p for p, c in zip(paths, cells, strict=True) if key not in c), None)
        if missing:
            raise MDPTError(f"{missing}: swap {key} is not evaluated yet; finish every shard first (run its "
                            "mdpt reproduce command again), then merge")
        merged[key] = _merge_values([c[key] for c in cells], {"scores"}, paths[0], f"swap {key}")
    write_json_atomic(dst, {"cells": merged})


def _same_file(shards: list[Shard], rel: Path, dst: Path) -> None:
    paths = [sh.root / rel for sh in shards if (sh.root / rel).exists()]
    if not paths:
        return
    first = read_json(paths[0], "data statistics")
    if any(read_json(p, "data statistics") != first for p in paths[1:]):
        raise _differs(paths[0], "the data's statistics")
    write_json_atomic(dst, first)
