"""D4RL HDF5 files, read: read-only, checked, the legacy d4rl-pybullet layout converted (`layout.py`).

Layout: `observations` (N, obs_dim), `actions` (N, act_dim), `rewards` (N,), `terminals` (N,),
`timeouts` (N,), optional `next_observations` (N, obs_dim); file attrs such as `env_id`,
`ref_min_score`, `ref_max_score`. Other datasets and groups (D4RL's `infos/...`, `metadata/...`) are
ignored.

Writing lives in `hdf5_write.py`; `write_d4rl_hdf5`, `convert_legacy_pybullet` and
`is_legacy_layout` are importable from here too, so that this module names the whole format.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mdpt.data.checks import build_dataset
from mdpt.data.dataset import ARRAY_KEYS, Dataset
from mdpt.data.hdf5_write import write_d4rl_hdf5
from mdpt.data.layout import convert_legacy_pybullet, is_legacy_layout, normalize_layout
from mdpt.data.registry import DATASET_IDS, ENVS, EnvSpec, d4rl_mismatch, env_spec_for, parse_dataset_id
from mdpt.errors import MDPTError

__all__ = ["read_d4rl_hdf5", "read_raw_hdf5", "resolve_env", "write_d4rl_hdf5", "convert_legacy_pybullet",
           "is_legacy_layout", "normalize_layout"]

MAX_ELEMENTS = 4_000_000_000  # a header claiming more than this is corrupt, not a dataset
LEGACY_NAME = re.compile(r"^(?P<env>[a-z0-9]+)-bullet-(?P<quality>[a-z-]+)-v\d+$")


# --------------------------------------------------------------------------------------------
# reading


def read_d4rl_hdf5(
    path: str | os.PathLike,
    env: EnvSpec | str | None = None,
    dataset_id: str | None = None,
) -> Dataset:
    """Read a D4RL-layout HDF5 file into a checked `Dataset`; the file is opened read-only.

    The environment comes from `env`, else the file's `env_id` attribute, else the dataset id
    (argument, `dataset_id` attribute, or the file name). The legacy d4rl-pybullet layout (no
    `timeouts`, rewards shifted by one step, a zero-action row closing each episode) is converted;
    what was done is listed in `Dataset.notes`.
    """
    path = Path(path)
    source = str(path)
    arrays, attrs = read_raw_hdf5(path)
    spec = resolve_env(source, attrs, env, dataset_id, path)
    if dataset_id is None:
        dataset_id = _dataset_id_from(attrs, path)
        if dataset_id in DATASET_IDS and parse_dataset_id(dataset_id).env is not spec:
            dataset_id = None  # the name says one env, the data another: the name is not to be trusted
    arrays, notes = normalize_layout(source, arrays, spec)
    return build_dataset(arrays, spec, source=source, dataset_id=dataset_id, attrs=attrs, notes=notes)


def read_raw_hdf5(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """The known arrays and the file attributes, as numpy / Python values. Any failure while
    reading the bytes (truncated or corrupt file, not HDF5 at all) becomes a one-line MDPTError."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise MDPTError(f"{path}: file not found")
    if path.is_dir():
        raise MDPTError(f"{path}: is a directory, not an HDF5 file (a Minari dataset? see `mdpt data info DIR`)")
    arrays: dict[str, np.ndarray] = {}
    try:
        with _open_readonly(path) as f:
            attrs = {str(k): _py_value(v) for k, v in f.attrs.items()}
            for key in ARRAY_KEYS:
                if key not in f:
                    continue
                obj = f[key]
                if not isinstance(obj, h5py.Dataset):
                    raise MDPTError(f"{path}: {key!r} is an HDF5 group, expected an array; "
                                    "fix the file or remake it (`mdpt data make ID`)")
                if obj.size > MAX_ELEMENTS:
                    raise MDPTError(f"{path}: {key!r} claims shape {obj.shape}, too large to be real; "
                                    f"the file is corrupt: delete it and download or make it again")
                arrays[key] = np.asarray(obj[()])
    except MDPTError:
        raise
    except PermissionError:
        raise MDPTError(f"{path}: permission denied; make the file readable") from None
    except Exception as e:  # h5py raises OSError, KeyError, ValueError, RuntimeError, ... on bad bytes
        raise MDPTError(
            f"{path}: not a readable HDF5 file ({e.__class__.__name__}: {_first_line(e)}); it is truncated or "
            f"corrupt: delete it and download or make it again (`mdpt data make ID`)"
        ) from None
    return arrays, attrs


def _open_readonly(path: Path):
    import h5py

    try:
        return h5py.File(path, "r", locking=False)  # read-only mounts cannot take a lock
    except TypeError:  # pragma: no cover - h5py/HDF5 without the locking option
        return h5py.File(path, "r")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else "no detail"


def _py_value(v):
    if isinstance(v, bytes):
        v = v.decode("utf-8", errors="replace")
    if isinstance(v, str):
        if v[:1] in ("{", "[") and v[-1:] in ("}", "]"):  # dicts and lists are written as JSON
            try:
                return json.loads(v)
            except ValueError:
                return v
        return v
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "SO":
            return [x.decode("utf-8", errors="replace") if isinstance(x, bytes) else _py_value(x) for x in v.tolist()]
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def resolve_env(source: str, attrs: Mapping, env: EnvSpec | str | None, dataset_id: str | None,
                path: Path | None = None) -> EnvSpec:
    """The environment a file's data is for: from `env`, the `env_id` attribute, or the dataset id."""
    requested = env if isinstance(env, EnvSpec) else (env_spec_for(env) if env else None)
    named = attrs.get("env_id")
    from_attrs = None
    if isinstance(named, str) and named:
        try:
            from_attrs = env_spec_for(named)
        except MDPTError as e:
            if requested is None:
                raise MDPTError(f"{source}: the data names env_id {named!r}, which MDPT cannot use ({e}); "
                                f"pass --env to say which one the data is for") from None
    if requested is not None and from_attrs is not None and requested.env_id != from_attrs.env_id:
        raise MDPTError(f"{source}: the file says env_id {from_attrs.env_id} but {requested.env_id} was "
                        f"requested; drop --env or use a file made for {requested.env_id}")
    if requested is not None:
        return requested
    if from_attrs is not None:
        return from_attrs
    candidates = [dataset_id, attrs.get("dataset_id") if isinstance(attrs.get("dataset_id"), str) else None]
    if path is not None:
        candidates.append(path.stem)
    for cand in candidates:
        if not cand:
            continue
        if cand in DATASET_IDS:
            mismatch = d4rl_mismatch(parse_dataset_id(cand))
            if mismatch:
                raise MDPTError(f"{source}: {mismatch}")
            return parse_dataset_id(cand).env
        m = LEGACY_NAME.match(cand)
        if m and m.group("env") in ENVS:
            return ENVS[m.group("env")]
    raise MDPTError(f"{source}: cannot tell which environment the data is for (no env_id attribute and "
                    f"no known dataset id in the name); pass --env (e.g. --env HopperBulletEnv-v0)")


def recorded_id(path: str | os.PathLike) -> str | None:
    """The dataset id an HDF5 file records in its attributes (`mdpt data make` writes it), read without the
    arrays; None for a file without one or one that cannot be read (loading it says why)."""
    try:
        with _open_readonly(Path(path)) as f:
            did = f.attrs.get("dataset_id")
    except (OSError, ValueError):
        return None
    did = did.decode() if isinstance(did, bytes) else did
    return did if isinstance(did, str) and did else None


def _dataset_id_from(attrs: Mapping, path: Path) -> str | None:
    did = attrs.get("dataset_id")
    if isinstance(did, str) and did:
        return did
    return path.stem if path.stem in DATASET_IDS else None
