"""D4RL HDF5 files: read (read-only, checked, legacy d4rl-pybullet layout converted) and write (atomic).

Layout: `observations` (N, obs_dim), `actions` (N, act_dim), `rewards` (N,), `terminals` (N,),
`timeouts` (N,), optional `next_observations` (N, obs_dim); file attrs such as `env_id`,
`ref_min_score`, `ref_max_score`. Other datasets and groups (D4RL's `infos/...`, `metadata/...`) are
ignored.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mdpt.data.checks import (
    REQUIRED_KEYS,
    as_flags,
    as_numeric,
    as_vector,
    build_dataset,
    derive_timeouts,
    missing_keys_error,
)
from mdpt.data.dataset import ARRAY_KEYS, Dataset
from mdpt.data.registry import DATASET_IDS, ENVS, EnvSpec, env_spec_for, parse_dataset_id
from mdpt.errors import MDPTError
from mdpt.io import atomic_path

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
        except MDPTError:
            if requested is None:
                known = ", ".join(s.env_id for s in ENVS.values())
                raise MDPTError(f"{source}: env_id {named!r} is not a known environment ({known}); "
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
            return parse_dataset_id(cand).env
        m = LEGACY_NAME.match(cand)
        if m and m.group("env") in ENVS:
            return ENVS[m.group("env")]
    raise MDPTError(f"{source}: cannot tell which environment the data is for (no env_id attribute and "
                    f"no known dataset id in the name); pass --env (e.g. --env HopperBulletEnv-v0)")


def _dataset_id_from(attrs: Mapping, path: Path) -> str | None:
    did = attrs.get("dataset_id")
    if isinstance(did, str) and did:
        return did
    return path.stem if path.stem in DATASET_IDS else None


# --------------------------------------------------------------------------------------------
# layouts


def is_legacy_layout(arrays: Mapping[str, np.ndarray]) -> bool:
    """The d4rl-pybullet layout: no `timeouts`, and every terminal row has an all-zero action."""
    if "timeouts" in arrays or not all(k in arrays for k in ("observations", "actions", "rewards", "terminals")):
        return False
    try:
        _, act, _, term = _core_arrays("<arrays>", arrays)
    except MDPTError:
        return False
    return bool(term.any()) and bool(np.all(act[term] == 0))


def _core_arrays(source: str, arrays: Mapping[str, np.ndarray]):
    obs = as_numeric(source, "observations", arrays["observations"], (2,))
    act = as_numeric(source, "actions", arrays["actions"], (2,))
    rew = as_vector(source, "rewards", arrays["rewards"])
    term = as_flags(source, "terminals", arrays["terminals"])
    lengths = {"observations": len(obs), "actions": len(act), "rewards": len(rew), "terminals": len(term)}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k} {v}" for k, v in lengths.items())
        raise MDPTError(f"{source}: arrays have different lengths ({listed}); the file is inconsistent: "
                        "fix the file or remake it (`mdpt data make ID`)")
    return obs, act, rew, term


def normalize_layout(source: str, arrays: dict[str, np.ndarray], env: EnvSpec) -> tuple[dict, list[str]]:
    """Bring the arrays to the modern D4RL layout; return them with notes on what was done."""
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if "timeouts" in arrays or len(missing) > 1:
        if missing:
            raise missing_keys_error(source, missing)
        return arrays, []
    obs, act, rew, term = _core_arrays(source, arrays)
    core = {"observations": obs, "actions": act, "rewards": rew, "terminals": term}
    if term.any() and np.all(act[term] == 0):
        return convert_legacy_pybullet(core, env.max_episode_steps)
    out = dict(arrays, **core)
    out["timeouts"] = derive_timeouts(term, env.max_episode_steps)
    return out, [f"no 'timeouts' in the file: episodes end at terminals or after {env.max_episode_steps} "
                 f"steps ({int(out['timeouts'].sum())} timeout(s) derived)"]


def convert_legacy_pybullet(arrays: Mapping[str, np.ndarray], max_steps: int = 1000) -> tuple[dict, list[str]]:
    """Convert the d4rl-pybullet layout to D4RL's.

    There, an episode with transitions (o_t, a_t, r_t, o_{t+1}), t < T, is stored as T + 1 rows:
    row t holds o_t, a_t and the reward r_{t-1} of the transition *into* o_t (0 at t = 0); row T
    holds o_T, a zero action, r_{T-1} and terminal = 1. Converted: rewards shifted back one row,
    the closing rows dropped (their observation becomes the last next_observation), and the
    episode end marked as a timeout if the episode ran `max_steps` transitions, else a terminal.
    Rows after the last closing row (a cut episode) keep all but their last row, ending in a timeout.
    """
    obs = np.asarray(arrays["observations"])
    act = np.asarray(arrays["actions"])
    rew = np.asarray(arrays["rewards"])
    if rew.ndim == 2:
        rew = rew[:, 0]
    term = np.asarray(arrays["terminals"]).astype(bool)
    n = len(obs)
    closing = np.flatnonzero(term)
    starts = np.concatenate([[0], closing + 1])
    stops = np.concatenate([closing, [n - 1]])  # exclusive of the closing row; a cut tail drops its last row
    keep_idx, ends_term, ends_tout = [], [], []
    episodes = timeouts = terminals = 0
    cut = False
    for k, (s, e) in enumerate(zip(starts, stops, strict=True)):
        if e <= s:
            continue
        idx = np.arange(s, e)
        keep_idx.append(idx)
        length = e - s
        episodes += 1
        t = np.zeros(length, bool)
        o = np.zeros(length, bool)
        if k == len(closing):  # rows after the last closing row: cut by the end of the file
            o[-1] = True
            cut = True
        elif length >= max_steps:
            o[-1] = True
            timeouts += 1
        else:
            t[-1] = True
            terminals += 1
        ends_term.append(t)
        ends_tout.append(o)
    if not keep_idx:
        empty = {k: np.asarray(arrays[k])[:0] for k in ("observations", "actions", "rewards", "terminals")}
        empty["timeouts"] = np.zeros(0, bool)
        return empty, ["legacy d4rl-pybullet layout: no complete transition"]
    idx = np.concatenate(keep_idx)
    out = {
        "observations": obs[idx],
        "actions": act[idx],
        "rewards": rew[idx + 1],
        "next_observations": obs[idx + 1],
        "terminals": np.concatenate(ends_term),
        "timeouts": np.concatenate(ends_tout),
    }
    dropped = n - len(idx)
    note = (f"converted the legacy d4rl-pybullet layout: rewards shifted back one step, {dropped} "
            f"episode-closing row(s) dropped, next_observations taken from the following rows, "
            f"{terminals} terminal(s) and {timeouts} timeout(s) derived from {max_steps}-step episode lengths")
    if cut:
        note += "; the final cut episode ends in a timeout"
    return out, [note]


# --------------------------------------------------------------------------------------------
# writing


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
        return json.dumps(v, sort_keys=True, default=_json_default)
    if isinstance(v, (str, bool, int, float, np.ndarray)):
        return v
    return str(v)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
