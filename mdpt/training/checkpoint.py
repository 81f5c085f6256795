"""Exact training-state checkpoints: every leaf of the state pytree, restorable bit for bit.

`state-<step>.safetensors` holds the leaves; `checkpoint.json` (written last, atomically) names
the file and its sha256. A kill at any moment leaves either the previous checkpoint or the new
one, never a mix.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from mdpt.errors import MDPTError
from mdpt.io import load_params, read_json, save_params, write_json_atomic

INDEX = "checkpoint.json"


def save_checkpoint(ckpt_dir: Path, state, step: int, extra: dict | None = None) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree.leaves(jax.device_get(state))
    name = f"state-{step}.safetensors"
    digest = save_params(ckpt_dir / name, {f"{i:05d}": np.asarray(x) for i, x in enumerate(leaves)})
    write_json_atomic(ckpt_dir / INDEX, {"step": int(step), "file": name, "sha256": digest, **(extra or {})})
    for old in ckpt_dir.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load_checkpoint(ckpt_dir: Path, template) -> tuple[object, dict] | None:
    """Restore into the structure of `template`; None when there is no checkpoint."""
    if not (ckpt_dir / INDEX).exists():
        return None
    index = read_json(ckpt_dir / INDEX, "checkpoint index")
    flat = load_params(ckpt_dir / index["file"], index["sha256"])
    leaves, treedef = jax.tree.flatten(template)
    if len(flat) != len(leaves):
        raise MDPTError(f"{ckpt_dir}: checkpoint does not match this run's configuration; start a new run directory")
    restored = []
    for i, ref in enumerate(leaves):
        x = flat[f"{i:05d}"]
        if x.shape != np.shape(ref) or x.dtype != np.asarray(ref).dtype:
            raise MDPTError(f"{ckpt_dir}: checkpoint leaf {i} has shape {x.shape}, expected {np.shape(ref)}; "
                            "start a new run directory")
        restored.append(x)
    return jax.tree.unflatten(treedef, [jax.numpy.asarray(x) for x in restored]), index
