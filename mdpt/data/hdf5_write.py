"""Write D4RL-layout HDF5 files: atomic (temp file + rename), gzip-compressed, deterministic."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mdpt.data.checks import REQUIRED_KEYS, missing_keys_error
from mdpt.data.dataset import ARRAY_KEYS, Dataset
from mdpt.errors import MDPTError
from mdpt.io import atomic_path, json_default


def write_d4rl_hdf5(
    path: str | os.PathLike,
    dataset_or_arrays: Dataset | Mapping[str, np.ndarray],
    attrs: Mapping | None = None,
) -> Path:
    """Write a D4RL-layout file atomically (temp file + rename), gzip-compressed, float32 / bool.

    A `Dataset`'s own attrs (and `env_id`, `dataset_id`) are written too; `attrs` override them.
    Dict and list attribute values are stored as JSON strings, None values are skipped. The output
    is deterministic: the same arrays and attrs give the same bytes.
    """
    import h5py

    path = Path(path)
    if isinstance(dataset_or_arrays, Dataset):
        data = dataset_or_arrays
        arrays = {k: getattr(data, k) for k in ARRAY_KEYS}
        all_attrs = dict(data.attrs)
        all_attrs["env_id"] = data.env.env_id
        if data.dataset_id:
            all_attrs["dataset_id"] = data.dataset_id
    else:
        arrays = dict(dataset_or_arrays)
        all_attrs = {}
    all_attrs.update(attrs or {})

    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise missing_keys_error(f"{path} (writing)", missing)
    cast = {
        "observations": np.float32, "actions": np.float32, "rewards": np.float32,
        "terminals": bool, "timeouts": bool, "next_observations": np.float32,
    }
    out = {k: np.ascontiguousarray(np.asarray(arrays[k]).astype(cast[k])) for k in ARRAY_KEYS if k in arrays}
    n = len(out["rewards"])
    if n == 0:
        raise MDPTError(f"{path}: refusing to write an empty dataset")
    if any(len(v) != n for v in out.values()):
        listed = ", ".join(f"{k} {len(v)}" for k, v in out.items())
        raise MDPTError(f"{path}: refusing to write arrays of different lengths ({listed})")

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            for key in ARRAY_KEYS:
                if key not in out:
                    continue
                arr = out[key]
                chunks = (min(n, 16384),) + arr.shape[1:]
                f.create_dataset(key, data=arr, chunks=chunks, compression="gzip", compression_opts=4,
                                 shuffle=arr.dtype != bool, track_times=False)
            for k in sorted(all_attrs):
                v = _attr_value(all_attrs[k])
                if v is not None:
                    f.attrs[k] = v
        os.chmod(tmp, 0o644)  # a data file, readable like any other (the temp file was private)
    return path


def _attr_value(v):
    if v is None:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, sort_keys=True, default=json_default)
    if isinstance(v, (str, bool, int, float, np.ndarray)):
        return v
    return str(v)
