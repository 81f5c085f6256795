"""Minari's on-disk format (HDF5 backend), read and written directly with h5py (no `minari` package).

A Minari dataset directory `<root>/` holds `data/main_data.hdf5` and `data/metadata.json`. The HDF5
file has one group per episode, `episode_<i>`, with attrs `id` and `total_steps` and datasets
`observations` (T + 1 rows: the final observation is included), `actions`, `rewards`,
`terminations`, `truncations` (T rows each). `metadata.json` records `dataset_id`,
`total_episodes`, `total_steps`, `data_format` ("hdf5"), `observation_space` / `action_space`
(JSON-serialized Gymnasium Box spaces), `env_spec` and `minari_version`, plus optional keys
(`ref_min_score`, `ref_max_score`, `author`, `description`, ...).

Written datasets load with `minari.MinariDataset("<root>/data")` (or `minari.load_dataset(id)`
when placed under `~/.minari/datasets/<id>/`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from mdpt.data.checks import build_dataset
from mdpt.data.dataset import Dataset
from mdpt.data.registry import EnvSpec, parse_dataset_id
from mdpt.errors import MDPTError

MAIN_FILE = "main_data.hdf5"
METADATA_FILE = "metadata.json"
MINARI_FORMAT_VERSION = "0.5.3"  # the on-disk version written (read by Minari 0.4.0 and later)
UNMARKED_END_ATTR = "mdpt_unmarked_end"  # the episode was cut by the end of the data, not the env


def _data_dir(path: Path) -> Path:
    return path / "data" if (path / "data" / METADATA_FILE).exists() else path


def is_minari_dir(path: str | os.PathLike) -> bool:
    """A Minari dataset root (`data/` inside) or its `data/` folder itself."""
    d = _data_dir(Path(path))
    return (d / METADATA_FILE).is_file() and (d / MAIN_FILE).is_file()


def minari_id(dataset_id: str | None, env: EnvSpec) -> str:
    """Our id as a Minari id `namespace/name-vN`: bullet-hopper-medium-v0 -> mdpt/hopper-bullet/medium-v0."""
    if dataset_id:
        try:
            info = parse_dataset_id(dataset_id)
            return f"mdpt/{info.env.name}-bullet/{info.quality}-v0"
        except MDPTError:
            pass
    return f"mdpt/{env.name}-bullet/custom-v0"


# --------------------------------------------------------------------------------------------
# reading


def read_minari(path: str | os.PathLike, env: EnvSpec | str | None = None) -> Dataset:
    """Read a Minari (HDF5 backend) dataset directory into a checked `Dataset`.

    Observations and actions must be flat Box arrays. The environment comes from `env`, else the
    metadata (`env_spec` id, or the `mdpt` block written by `write_minari`).
    """
    import h5py

    root = Path(path)
    data_dir = _data_dir(root)
    source = str(root)
    meta_path = data_dir / METADATA_FILE
    if not meta_path.is_file():
        raise MDPTError(f"{root}: not a Minari dataset (no {METADATA_FILE}); give the dataset directory")
    try:
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise MDPTError(f"{meta_path}: unreadable Minari metadata ({e.__class__.__name__}); the dataset is "
                        f"corrupt: export or download it again") from None
    fmt = meta.get("data_format", "hdf5")
    if fmt != "hdf5":
        raise MDPTError(f"{root}: Minari data format {fmt!r} is not supported (only 'hdf5'); convert it with "
                        f"Minari to the hdf5 backend")
    spec = _env_from_metadata(source, meta, env)
    mdpt_meta = meta.get("mdpt") if isinstance(meta.get("mdpt"), dict) else {}

    episodes: list[dict[str, np.ndarray]] = []
    try:
        with h5py.File(data_dir / MAIN_FILE, "r", locking=False) as f:
            names = [k for k in f.keys() if k.startswith("episode_") and k[len("episode_"):].isdigit()]
            names.sort(key=lambda k: int(k[len("episode_"):]))
            for name in names:
                grp = f[name]
                if not isinstance(grp, h5py.Group):
                    raise MDPTError(f"{root}: {name} is not an HDF5 group; the dataset is corrupt")
                ep = {}
                for key in ("observations", "actions", "rewards", "terminations", "truncations"):
                    if key not in grp:
                        raise MDPTError(f"{root}: {name} has no {key!r}; the dataset is incomplete")
                    obj = grp[key]
                    if not isinstance(obj, h5py.Dataset):
                        raise MDPTError(f"{root}: {name}/{key} is a group (Dict or Tuple space); only flat "
                                        f"Box observations and actions are supported")
                    ep[key] = np.asarray(obj[()])
                ep["unmarked_end"] = bool(grp.attrs.get(UNMARKED_END_ATTR, False))
                episodes.append(ep)
    except MDPTError:
        raise
    except Exception as e:
        raise MDPTError(f"{data_dir / MAIN_FILE}: not a readable HDF5 file ({e.__class__.__name__}); it is "
                        f"truncated or corrupt: export or download the dataset again") from None
    if not episodes:
        raise MDPTError(f"{root}: the dataset is empty (no episodes)")

    parts: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts",
                                              "next_observations")}
    for i, ep in enumerate(episodes):
        obs, act = ep["observations"], ep["actions"]
        steps = len(ep["rewards"]) if np.ndim(ep["rewards"]) else -1
        for key in ("actions", "terminations", "truncations"):
            if np.ndim(ep[key]) == 0 or len(ep[key]) != steps:
                raise MDPTError(f"{root}: episode_{i} has {key} of length {len(ep[key]) if np.ndim(ep[key]) else 0} "
                                f"but {max(steps, 0)} rewards; the dataset is inconsistent")
        if np.ndim(obs) == 0 or len(obs) != steps + 1:
            raise MDPTError(f"{root}: episode_{i} has {len(obs) if np.ndim(obs) else 0} observations, expected "
                            f"{steps + 1} (one more than its {steps} steps); the dataset is inconsistent")
        if obs.dtype.kind not in "biuf" or obs.ndim != 2:
            raise MDPTError(f"{root}: episode_{i} observations have dtype {obs.dtype} and shape {obs.shape}; "
                            f"only flat numeric Box observations are supported")
        term = np.asarray(ep["terminations"]).astype(bool)
        trunc = np.asarray(ep["truncations"]).astype(bool) & ~term
        if ep["unmarked_end"] and steps > 0:
            trunc[-1] = False
        parts["observations"].append(obs[:-1])
        parts["next_observations"].append(obs[1:])
        parts["actions"].append(act)
        parts["rewards"].append(ep["rewards"])
        parts["terminals"].append(term)
        parts["timeouts"].append(trunc)
    try:
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
    except ValueError as e:
        raise MDPTError(f"{root}: episodes disagree in shape ({e}); the dataset is inconsistent") from None

    attrs = dict(mdpt_meta.get("attrs", {})) if isinstance(mdpt_meta.get("attrs"), dict) else {}
    for key in ("ref_min_score", "ref_max_score"):
        if key in meta and key not in attrs:
            attrs[key] = meta[key]
    attrs["minari_dataset_id"] = meta.get("dataset_id")
    attrs["env_id"] = spec.env_id
    dataset_id = mdpt_meta.get("dataset_id") if isinstance(mdpt_meta.get("dataset_id"), str) else None
    return build_dataset(arrays, spec, source=source, dataset_id=dataset_id, attrs=attrs,
                         notes=[f"read from Minari dataset {meta.get('dataset_id', '?')} ({len(episodes)} episodes)"])


def _env_from_metadata(source: str, meta: dict, env: EnvSpec | str | None) -> EnvSpec:
    from mdpt.data.hdf5 import resolve_env

    attrs = {}
    mdpt_meta = meta.get("mdpt")
    if isinstance(mdpt_meta, dict) and isinstance(mdpt_meta.get("env_id"), str):
        attrs["env_id"] = mdpt_meta["env_id"]
    else:
        spec_json = meta.get("env_spec")
        if isinstance(spec_json, str):
            try:
                env_name = json.loads(spec_json).get("id")
            except (ValueError, AttributeError):
                env_name = None
            if isinstance(env_name, str):
                attrs["env_id"] = env_name
    return resolve_env(source, attrs, env, None)


# --------------------------------------------------------------------------------------------
# writing


def write_minari(
    path: str | os.PathLike,
    data: Dataset,
    dataset_id: str | None = None,
    overwrite: bool = False,
    author: str | None = None,
    description: str | None = None,
) -> Path:
    """Write `data` as a Minari dataset directory (`<path>/data/{main_data.hdf5, metadata.json}`).

    Episodes follow `data.episode_slices`; each episode's observations get its final next
    observation appended. The whole directory is built beside `path` and renamed into place.
    """
    import h5py

    root = Path(path)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise MDPTError(f"{root}: already exists and is not empty; choose another folder or overwrite it")
    mid = dataset_id or minari_id(data.dataset_id, data.env)
    slices = data.episode_slices
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (staging / "data").mkdir(parents=True)
        with h5py.File(staging / "data" / MAIN_FILE, "w", track_order=True) as f:
            for i, s in enumerate(slices):
                g = f.create_group(f"episode_{i}")
                g.attrs["id"] = i
                g.attrs["total_steps"] = s.stop - s.start
                term = data.terminals[s].copy()
                trunc = data.timeouts[s].copy()
                if not (term[-1] or trunc[-1]):  # Minari episodes end in a termination or truncation
                    trunc[-1] = True
                    g.attrs[UNMARKED_END_ATTR] = True
                obs = np.concatenate([data.observations[s], data.next_observations[s.stop - 1: s.stop]])
                for key, arr in (("observations", obs.astype(np.float32)),
                                 ("actions", data.actions[s].astype(np.float32)),
                                 ("rewards", data.rewards[s].astype(np.float64)),
                                 ("terminations", term), ("truncations", trunc)):
                    g.create_dataset(key, data=arr, chunks=True, maxshape=(None, *arr.shape[1:]),
                                     track_times=False)
        meta = _metadata(data, mid, len(slices), author, description)
        meta["dataset_size"] = round((staging / "data" / MAIN_FILE).stat().st_size / 1e6, 1)
        (staging / "data" / METADATA_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        if root.exists():
            shutil.rmtree(root)
        os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root


def _box(shape: int, low: float, high: float) -> str:
    return json.dumps({"type": "Box", "dtype": "float32", "shape": [shape],
                       "low": [low] * shape, "high": [high] * shape})


def _metadata(data: Dataset, mid: str, episodes: int, author: str | None, description: str | None) -> dict:
    from mdpt import __version__

    env = data.env
    attrs = {k: v for k, v in data.attrs.items() if isinstance(v, (str, int, float, bool, list))}
    meta = {
        "dataset_id": mid,
        "total_episodes": episodes,
        "total_steps": len(data),
        "data_format": "hdf5",
        "jpeg_encoding": False,
        "minari_version": MINARI_FORMAT_VERSION,
        "observation_space": _box(env.obs_dim, float("-inf"), float("inf")),
        "action_space": _box(env.act_dim, -1.0, 1.0),
        "env_spec": _env_spec_json(env),
        "algorithm_name": str(data.attrs.get("recipe", "unknown"))[:200],
        "author": [author or "mdpt"],
        "description": description or (f"{data.dataset_id or 'dataset'} for {env.env_id}, exported by mdpt "
                                       f"{__version__} (fingerprint {data.fingerprint})"),
        "requirements": ["pybullet-envs-gymnasium>=0.5", "pybullet>=3.2.6"],
        "mdpt": {"dataset_id": data.dataset_id, "env_id": env.env_id, "fingerprint": data.fingerprint,
                 "attrs": attrs, "version": __version__},
    }
    for key in ("ref_min_score", "ref_max_score"):
        if key in data.attrs:
            meta[key] = float(data.attrs[key])
    # Minari's JSON stores +-inf as Infinity (Python's json does the same)
    return meta


def _env_spec_json(env: EnvSpec) -> str:
    """Gymnasium's EnvSpec JSON for the bullet env (what Minari's recover_environment() needs)."""
    cls, threshold = {"hopper": ("HopperBulletEnv", 2500.0), "halfcheetah": ("HalfCheetahBulletEnv", 3000.0),
                      "walker2d": ("Walker2DBulletEnv", 2500.0), "ant": ("AntBulletEnv", 2500.0)}.get(
        env.name, (env.env_id.split("-")[0], None))
    spec = {
        "id": env.env_id, "entry_point": f"pybullet_envs_gymnasium.gym_locomotion_envs:{cls}",
        "reward_threshold": threshold,
        "nondeterministic": False, "max_episode_steps": env.max_episode_steps, "order_enforce": True,
        "disable_env_checker": False, "kwargs": {}, "additional_wrappers": [], "vector_entry_point": None,
    }
    return json.dumps(spec)

