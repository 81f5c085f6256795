"""Unpack what benchmarks/gpu.py brought back into ordinary run directories, for evaluation here.

    python benchmarks/gpu_unpack.py FILES_DIR OUT_DIR

FILES_DIR holds runs.json (the index, written last: each pack's sha256) and pack-*.safetensors
(float16 parameters). A run whose packs are missing or do not match the index is not unpacked
(exit 1, and each is named): fetch the files again or retrain it. Each other run becomes
OUT_DIR/<dataset>/<run>/ with config.json, metrics.jsonl, summary.json and its artifacts, the
parameters widened back to float32 and checksummed anew; every artifact's metadata records the
float16 transport (and, for a DQL critic, that only its target network travelled).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mdpt.artifacts import META_DIGEST, META_FILE, PARAMS_FILE, meta_digest  # noqa: E402
from mdpt.io import save_params, sha256_file, unflatten_tree, write_bytes_atomic, write_json_atomic  # noqa: E402


def verified_packs(files: Path, index: dict) -> tuple[set[str], dict[str, str]]:
    """The packs whose checksum matches the index (written last), and why the others do not."""
    if "packs" not in index:  # written before the index held checksums: nothing to verify against
        return {p.name for p in files.glob("pack-*.safetensors")}, {}
    good, bad = set(), {}
    for pack, digest in index["packs"].items():
        path = files / pack
        if not path.exists():
            bad[pack] = "missing"
        elif sha256_file(path) != digest:
            bad[pack] = "checksum mismatch (truncated or damaged)"
        else:
            good.add(pack)
    return good, bad


def unpack(files: Path, out: Path) -> tuple[list[Path], dict[str, str]]:
    """Unpack every run whose packs verify; returns (run dirs written, {run: why it was skipped})."""
    index = json.loads((files / "runs.json").read_text())
    work, records = index["work"], index["runs"]
    good, bad = verified_packs(files, index)
    tensors: dict[str, np.ndarray] = {}
    for pack in sorted(good):
        tensors.update(load_file(str(files / pack)))
    written, skipped = [], {}
    for name, rec in records.items():
        broken = [p for p in rec.get("packs", []) if p not in good]
        if broken:  # never loaded half: fetch the files again, or retrain the run (gpu.py resumes)
            skipped[name] = f"{broken[0]}: {bad.get(broken[0], 'not in the index')}"
            continue
        run = out / name
        run.mkdir(parents=True, exist_ok=True)
        config = rec["config"]
        path = (config.get("stage1") or {}).get("guidance_path") or ""
        if path.startswith(work):
            config = {**config, "stage1": {**config["stage1"], "guidance_path": str(out.resolve()) + path[len(work):]}}
        write_json_atomic(run / "config.json", config)
        write_bytes_atomic(run / "metrics.jsonl", rec["metrics"].encode())
        for kind, meta in rec["artifacts"].items():
            prefix = f"{name}/{kind}/"
            flat = {k[len(prefix):]: v.astype(np.float32) for k, v in tensors.items() if k.startswith(prefix)}
            if not flat:
                raise SystemExit(f"{name}: no {kind} parameters in the packs (a pack file is missing)")
            if meta.get("kind") == "dql-critic" and not any(k.startswith("q/") for k in flat):
                flat.update({"q/" + k[len("target_q/"):]: v for k, v in flat.items() if k.startswith("target_q/")})
            params = unflatten_tree(flat)
            (run / kind).mkdir(exist_ok=True)
            digest = save_params(run / kind / PARAMS_FILE, params)
            meta = {k: v for k, v in meta.items() if k != META_DIGEST}
            meta["files"] = {PARAMS_FILE: digest}
            meta["transport"] = "trained on a GPU, parameters carried as float16" + (
                f"; {meta['transport']}" if "transport" in meta else "")
            meta["run_dir"] = str(run)
            trained_with = meta.get("trained_with_guidance") or {}
            if str(trained_with.get("path", "")).startswith(work):  # the GPU machine's path -> here
                meta["trained_with_guidance"] = {**trained_with,
                                                 "path": str(out.resolve()) + trained_with["path"][len(work):]}
            meta[META_DIGEST] = meta_digest(meta)
            write_json_atomic(run / kind / META_FILE, meta)
        write_json_atomic(run / "summary.json", {**rec["summary"], "run_dir": str(run)})
        written.append(run)
    return written, skipped


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    done, skipped = unpack(Path(sys.argv[1]), Path(sys.argv[2]))
    for path in done:
        print(path)
    for name, why in skipped.items():
        print(f"NOT unpacked {name}: {why}; fetch the files again or retrain it", file=sys.stderr)
    sys.exit(1 if skipped else 0)
