"""Exact training-state checkpoints: every leaf of the state pytree, restorable bit for bit.

`state-<step>.safetensors` holds the leaves; `checkpoint.json` (written last, atomically) names
the file and its sha256. A kill at any moment leaves either the previous checkpoint or the new
one, never a mix.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from mdpt.errors import MDPTError
from mdpt.io import load_params, read_json, save_params, write_json_atomic
from mdpt.settings import env_number

INDEX = "checkpoint.json"
# Test hook: seconds to sleep between writing the state file and the index, so that a test can
# kill the process in the middle of a checkpoint write.
SLOW_ENV = "MDPT_TEST_SLOW_CHECKPOINT"


def save_checkpoint(ckpt_dir: Path, state, step: int, extra: dict | None = None) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree.leaves(jax.device_get(state))
    name = f"state-{step}.safetensors"
    digest = save_params(ckpt_dir / name, {f"{i:05d}": np.asarray(x) for i, x in enumerate(leaves)})
    pause = env_number(SLOW_ENV, 0.0, 0.0, 3600.0, "seconds")
    if pause:
        time.sleep(pause)
    write_json_atomic(ckpt_dir / INDEX, {"step": int(step), "file": name, "sha256": digest, **(extra or {})})
    prune_checkpoints(ckpt_dir, keep=name)


def prune_checkpoints(ckpt_dir: Path, keep: str | None = None) -> None:
    """Remove state files other than `keep` (default: the one the index names), e.g. those a kill
    left behind between writing a state file and the index, or before removing the previous one."""
    if keep is None:
        try:
            keep = read_json(ckpt_dir / INDEX, "checkpoint index")["file"]
        except (MDPTError, KeyError, TypeError):
            return  # no valid index: leave everything for a person to look at
    for old in ckpt_dir.glob("state-*.safetensors"):
        if old.name != keep:
            old.unlink(missing_ok=True)


def load_checkpoint(ckpt_dir: Path, template) -> tuple[object, dict] | None:
    """Restore into the structure of `template`; None when there is no checkpoint."""
    if not (ckpt_dir / INDEX).exists():
        return None
    index = read_json(ckpt_dir / INDEX, "checkpoint index")
    if not (isinstance(index, dict) and isinstance(index.get("step"), int) and not isinstance(index["step"], bool)
            and index["step"] >= 0 and isinstance(index.get("file"), str) and isinstance(index.get("sha256"), str)
            and Path(index["file"]).name == index["file"]):
        raise MDPTError(f"{ckpt_dir / INDEX}: not a valid checkpoint index (needs step, file, sha256); "
                        "remove the checkpoints folder to start over")
    flat = load_params(ckpt_dir / index["file"], index["sha256"])
    leaves, treedef = jax.tree.flatten(template)
    if len(flat) != len(leaves):
        raise MDPTError(f"{ckpt_dir}: checkpoint does not match this run's configuration; start a new run directory")
    restored = []
    for i, ref in enumerate(leaves):
        x = flat.get(f"{i:05d}")
        if not isinstance(x, np.ndarray):
            raise MDPTError(f"{ckpt_dir / index['file']}: checkpoint leaf {i} is missing; start a new run directory")
        if x.shape != np.shape(ref) or x.dtype != np.asarray(ref).dtype:
            raise MDPTError(f"{ckpt_dir}: checkpoint leaf {i} has shape {x.shape}, expected {np.shape(ref)}; "
                            "start a new run directory")
        restored.append(x)
    return jax.tree.unflatten(treedef, [jax.numpy.asarray(x) for x in restored]), index
