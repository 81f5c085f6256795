"""Minari datasets, read and written through Farama's `minari` package (`pip install 'mdpt[minari]'`).

The on-disk format and its versioning are Minari's: a dataset directory `<root>/` holds
`data/metadata.json` and the episodes in the backend's files (`data/main_data.hdf5` for HDF5),
written with `minari.dataset.minari_storage.MinariStorage` and read with `minari.MinariDataset`,
which refuses a dataset written by a newer Minari. Without the package, recognising a Minari
directory still works; reading or writing one is a one-line error that names the extra.

D4RL arrays <-> episodes: each episode's observations are its D4RL observations plus the final
next observation; `terminations` / `truncations` are D4RL's terminals / timeouts. A D4RL file may
end mid-episode (no terminal, no timeout); Minari episodes always end, so such an episode is
written truncated with the episode attribute `mdpt_unmarked_end`, and read back unmarked.

Written datasets load with `minari.MinariDataset("<root>/data")`, or `minari.load_dataset(id)`
when `<root>` is `$MINARI_DATASETS_PATH/<id>` (default `~/.minari/datasets/<id>`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from mdpt.data.checks import build_dataset
from mdpt.data.dataset import Dataset
from mdpt.data.registry import EnvSpec, parse_dataset_id
from mdpt.errors import MDPTError
from mdpt.io import atomic_dir

METADATA_FILE = "metadata.json"
UNMARKED_END_ATTR = "mdpt_unmarked_end"  # the episode was cut by the end of the data, not the env
INSTALL_HINT = "pip install 'mdpt[minari]'"
ENV_MINARI_ROOT = "MINARI_DATASETS_PATH"


def _minari():
    """The `minari` package, or a one-line MDPTError saying how to install it."""
    try:
        import minari
    except ImportError:
        raise MDPTError(f"Minari datasets need the minari package, which is not installed: {INSTALL_HINT}") from None
    return minari


def _data_dir(path: Path) -> Path:
    return path / "data" if (path / "data" / METADATA_FILE).exists() else path


def is_minari_dir(path: str | os.PathLike) -> bool:
    """A Minari dataset root (`data/` inside) or its `data/` folder itself (no package needed)."""
    return (_data_dir(Path(path)) / METADATA_FILE).is_file()


def minari_id(dataset_id: str | None, env: EnvSpec) -> str:
    """Our id as a Minari id `namespace/name-vN`: bullet-hopper-medium-v0 -> mdpt/hopper-bullet/medium-v0,
    hopper-medium-v2 -> mdpt/hopper-mujoco/medium-v0."""
    if dataset_id:
        try:
            info = parse_dataset_id(dataset_id)
            return f"mdpt/{info.env.name}-{_family_tag(info.env)}/{info.quality}-v0"
        except MDPTError:
            pass
    return f"mdpt/{env.name.lower()}-{_family_tag(env)}/custom-v0"


def _family_tag(env: EnvSpec) -> str:
    return "bullet" if env.family == "bullet" else "mujoco" if env.d4rl_min is not None else "gym"


# --------------------------------------------------------------------------------------------
# reading


def minari_root() -> Path:
    """Minari's datasets folder: `$MINARI_DATASETS_PATH`, else `~/.minari/datasets` (as `minari` itself)."""
    value = os.environ.get(ENV_MINARI_ROOT, "").strip()
    return Path(value).expanduser() if value else Path("~/.minari/datasets").expanduser()


def load_minari_id(dataset_id: str, env: EnvSpec | str | None = None, download: bool = True,
                   offline_reason: str = "downloading is off") -> Dataset:
    """A Minari dataset by id from the Minari root, downloaded there first (by `minari`) when allowed."""
    root = minari_root() / dataset_id
    if not is_minari_dir(root):
        if not download:
            raise MDPTError(f"{dataset_id}: not found in {minari_root()} and {offline_reason}; download it with "
                            f"`minari download {dataset_id}`, or point {ENV_MINARI_ROOT} at the folder that holds it")
        minari = _minari()
        try:
            minari.download_dataset(dataset_id)
        except Exception as e:  # network, unknown id, a remote's errors
            raise MDPTError(f"download of Minari dataset {dataset_id} failed ({e.__class__.__name__}: {_first_line(e)}); "
                            f"check the id (`minari list remote`) or download it with `minari download {dataset_id}`") from None
    return read_minari(root, env=env, dataset_id=dataset_id)


def read_minari(path: str | os.PathLike, env: EnvSpec | str | None = None, dataset_id: str | None = None) -> Dataset:
    """Read a Minari dataset directory into a checked `Dataset` (through `minari.MinariDataset`).

    Observations and actions must be flat Box arrays. The environment comes from `env`, else the
    metadata (the `mdpt` block written by `write_minari`, or the `env_spec` id). `dataset_id`: the id
    it was asked for by (else the one `write_minari` recorded).
    """
    root = Path(path)
    data_dir = _data_dir(root)
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
    minari = _minari()
    source = str(root)
    spec = _env_from_metadata(source, meta, env)
    written_by = meta.get("minari_version")
    if written_by not in minari.supported_dataset_versions:  # Minari's own list of the versions it reads
        raise MDPTError(f"{root}: written by Minari {written_by}, which the installed minari {minari.__version__} "
                        f"does not read; install a minari that does (pip install -U minari)")
    try:
        ds = minari.MinariDataset(data_dir)
    except Exception as e:
        raise MDPTError(f"{root}: not a readable Minari dataset ({e.__class__.__name__}: {_first_line(e)})") from None
    _check_box(root, "observation", ds.observation_space)
    _check_box(root, "action", ds.action_space)
    try:
        episodes = list(ds.iterate_episodes())
        unmarked = [bool(m.get(UNMARKED_END_ATTR, False))
                    for m in ds.storage.get_episode_metadata(range(ds.total_episodes))]
    except Exception as e:  # the backend's files: h5py / pyarrow errors on truncated or altered bytes
        raise MDPTError(f"{data_dir}: not a readable HDF5 file or episode data ({e.__class__.__name__}); it is "
                        f"truncated or corrupt: export or download the dataset again") from None
    if not episodes:
        raise MDPTError(f"{root}: the dataset is empty (no episodes)")
    arrays = _episodes_to_arrays(root, episodes, unmarked)

    mdpt_meta = meta.get("mdpt") if isinstance(meta.get("mdpt"), dict) else {}
    attrs = dict(mdpt_meta.get("attrs", {})) if isinstance(mdpt_meta.get("attrs"), dict) else {}
    for key in ("ref_min_score", "ref_max_score"):
        if key in meta and key not in attrs:
            attrs[key] = meta[key]
    attrs["minari_dataset_id"] = meta.get("dataset_id")
    attrs["minari_version"] = meta.get("minari_version")
    attrs["env_id"] = spec.env_id
    if dataset_id is None and isinstance(mdpt_meta.get("dataset_id"), str):
        dataset_id = mdpt_meta["dataset_id"]
    return build_dataset(arrays, spec, source=source, dataset_id=dataset_id, attrs=attrs,
                         notes=[f"read from Minari dataset {meta.get('dataset_id', '?')} ({len(episodes)} episodes, "
                                f"minari {minari.__version__})"])


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else e.__class__.__name__


def _check_box(root: Path, what: str, space) -> None:
    shape = getattr(space, "shape", None)
    if type(space).__name__ != "Box" or shape is None or len(shape) != 1:
        raise MDPTError(f"{root}: the {what} space is {space}; only flat Box observations and actions are "
                        f"supported")


def _episodes_to_arrays(root: Path, episodes, unmarked: list[bool]) -> dict[str, np.ndarray]:
    parts: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts",
                                              "next_observations")}
    for i, ep in enumerate(episodes):
        obs, act, rew = np.asarray(ep.observations), np.asarray(ep.actions), np.asarray(ep.rewards)
        steps = len(rew) if rew.ndim else -1
        for key in ("actions", "terminations", "truncations"):
            value = np.asarray(getattr(ep, key))
            if value.ndim == 0 or len(value) != steps:
                raise MDPTError(f"{root}: episode_{i} has {key} of length {len(value) if value.ndim else 0} "
                                f"but {max(steps, 0)} rewards; the dataset is inconsistent")
        if obs.ndim != 2 or len(obs) != steps + 1:
            raise MDPTError(f"{root}: episode_{i} has {len(obs) if obs.ndim else 0} observations, expected "
                            f"{steps + 1} (one more than its {steps} steps); the dataset is inconsistent")
        term = np.asarray(ep.terminations).astype(bool)
        trunc = np.asarray(ep.truncations).astype(bool) & ~term
        if unmarked[i] and steps > 0:
            trunc[-1] = False
        parts["observations"].append(obs[:-1])
        parts["next_observations"].append(obs[1:])
        parts["actions"].append(act)
        parts["rewards"].append(rew)
        parts["terminals"].append(term)
        parts["timeouts"].append(trunc)
    try:
        return {k: np.concatenate(v) for k, v in parts.items()}
    except ValueError as e:
        raise MDPTError(f"{root}: episodes disagree in shape ({e}); the dataset is inconsistent") from None


def _env_from_metadata(source: str, meta: dict, env: EnvSpec | str | None) -> EnvSpec:
    from mdpt.data.hdf5 import resolve_env

    attrs = {}
    mdpt_meta = meta.get("mdpt")
    if isinstance(mdpt_meta, dict) and isinstance(mdpt_meta.get("env_id"), str):
        attrs["env_id"] = mdpt_meta["env_id"]
    else:
        spec_json = meta.get("eval_env_spec") or meta.get("env_spec")  # the env to evaluate on, else the data's
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
    """Write `data` as a Minari dataset directory (`<path>/data/`, HDF5 backend) with `minari`.

    Episodes follow `data.episode_slices`. The whole directory is built beside `path` and then
    replaces it (`io.atomic_dir`): an existing dataset stays whole until the new one is complete.
    """
    import gymnasium as gym

    minari = _minari()
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    from mdpt.data.envs import env_spec

    root = Path(path)
    if root.exists() and (not root.is_dir() or any(root.iterdir())) and not overwrite:
        raise MDPTError(f"{root}: already exists and is not empty; choose another folder or overwrite it")
    env = data.env
    buffers, unmarked = [], []
    for i, s in enumerate(data.episode_slices):
        term = data.terminals[s].copy()
        trunc = data.timeouts[s].copy()
        if not (term[-1] or trunc[-1]):  # Minari episodes end in a termination or truncation
            trunc[-1] = True
            unmarked.append(i)
        obs = np.concatenate([data.observations[s], data.next_observations[s.stop - 1: s.stop]])
        buffers.append(EpisodeBuffer(observations=obs.astype(np.float32), actions=data.actions[s].astype(np.float32),
                                     rewards=data.rewards[s].astype(np.float64), terminations=term,
                                     truncations=trunc))
    with atomic_dir(root.absolute()) as staging:  # Minari joins a relative folder with its own path again
        storage = MinariStorage.new(
            staging / "data",
            observation_space=gym.spaces.Box(-np.inf, np.inf, (env.obs_dim,), np.float32),
            action_space=gym.spaces.Box(-1.0, 1.0, (env.act_dim,), np.float32),
            env_spec=env_spec(env.env_id), data_format="hdf5")
        storage.update_metadata(_metadata(data, dataset_id or minari_id(data.dataset_id, env), author,
                                          description, minari.__version__))
        storage.update_episodes(buffers)
        if unmarked:
            storage.update_episode_metadata([{UNMARKED_END_ATTR: True}] * len(unmarked), unmarked)
    return root


def _metadata(data: Dataset, mid: str, author: str | None, description: str | None, minari_version: str) -> dict:
    from mdpt import __version__

    attrs = {k: v for k, v in data.attrs.items() if isinstance(v, (str, int, float, bool, list))}
    meta = {
        "dataset_id": mid,
        "minari_version": minari_version,
        "algorithm_name": str(data.attrs.get("recipe", "unknown"))[:200],
        "author": {author or "mdpt"},
        "description": description or (f"{data.dataset_id or 'dataset'} for {data.env.env_id}, exported by mdpt "
                                       f"{__version__} (fingerprint {data.fingerprint})"),
        "requirements": (["pybullet-envs-gymnasium>=0.5", "pybullet>=3.2.6"] if data.env.family == "bullet"
                         else ["gymnasium[mujoco]>=1.0"] if data.env.d4rl_min is not None else []),
        "mdpt": {"dataset_id": data.dataset_id, "env_id": data.env.env_id, "fingerprint": data.fingerprint,
                 "attrs": attrs, "version": __version__},
    }
    for key in ("ref_min_score", "ref_max_score"):
        if key in data.attrs:
            meta[key] = float(data.attrs[key])
    return meta
