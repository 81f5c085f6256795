"""Find a dataset by id or path: an explicit file, the data dir, or a download (D4RL layout), or a
Minari dataset by its Minari id.

Resolution of a D4RL id such as `bullet-hopper-medium-v0` or `hopper-medium-v2`:
1. `<data dir>/<id>.hdf5`, where the data dir is `data_dir`, else `$MDPT_DATA_DIR`, else
   `~/.cache/mdpt/datasets`;
2. for `bullet-*-medium-expert-v0` without a file: the concatenation of the medium and expert datasets
   (D4RL publishes the v2 medium-expert files themselves);
3. a download from D4RL's URL (`$MDPT_D4RL_URL` overrides it; `{dataset_id}` is replaced), streamed to
   a temporary file in the data dir, checked, then renamed into place. `$MDPT_OFFLINE=1` or
   `download=False` turns downloading off.

A Minari id such as `mujoco/hopper/medium-v0` is read from the Minari root (`$MINARI_DATASETS_PATH`,
else `~/.minari/datasets`) through the `minari` package, which downloads it first when allowed (the same
switches). Its environment comes from the dataset's own metadata (its env spec).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mdpt.data.dataset import ARRAY_KEYS, Dataset
from mdpt.data.registry import (
    DATASET_IDS,
    EnvSpec,
    d4rl_mismatch,
    env_spec_for,
    is_minari_id,
    parse_dataset_id,
)
from mdpt.errors import MDPTError
from mdpt.io import atomic_path

ENV_DATA_DIR = "MDPT_DATA_DIR"
ENV_OFFLINE = "MDPT_OFFLINE"
ENV_URL = "MDPT_D4RL_URL"
ENV_TIMEOUT = "MDPT_DOWNLOAD_TIMEOUT"
DEFAULT_DATA_DIR = Path("~/.cache/mdpt/datasets")

# Expected (size in bytes, sha256) of published files, checked after a download when known.
KNOWN_CHECKSUMS: dict[str, tuple[int | None, str | None]] = {}


def default_data_dir() -> Path:
    """`$MDPT_DATA_DIR` if set, else `~/.cache/mdpt/datasets`."""
    value = os.environ.get(ENV_DATA_DIR, "").strip()
    if not value:
        return DEFAULT_DATA_DIR.expanduser()
    path = Path(value).expanduser()
    try:
        path.exists()
    except (OSError, ValueError) as e:  # a name the system refuses (too long, a NUL byte)
        from mdpt.settings import shown

        raise MDPTError(f"{ENV_DATA_DIR}={shown(value)}: not a usable folder name ({getattr(e, 'strerror', None) or e}); "
                        "point it at the folder that holds the datasets") from None
    return path


def offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() not in ("", "0", "false", "no")


def download_timeout() -> float:
    """Seconds a download may wait for the server (`$MDPT_DOWNLOAD_TIMEOUT`, default 60)."""
    from mdpt.settings import env_number

    return env_number(ENV_TIMEOUT, 60.0, 0.1, 86_400.0, "seconds")


def dataset_url(dataset_id: str) -> str:
    template = os.environ.get(ENV_URL, "").strip()
    return template.replace("{dataset_id}", dataset_id) if template else parse_dataset_id(dataset_id).url


def dataset_path(dataset_id: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Where the file for `dataset_id` lives (or would live) in the data dir."""
    return Path(data_dir).expanduser() / f"{dataset_id}.hdf5" if data_dir else default_data_dir() / f"{dataset_id}.hdf5"


def load_dataset(
    id_or_path: str | os.PathLike,
    env: EnvSpec | str | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> Dataset:
    """Load a dataset by id (data dir, medium-expert concatenation, download) or by path.

    A path may be a D4RL HDF5 file or a Minari dataset directory. `env` names the environment for
    files that do not record it (and is checked against those that do).
    """
    text = os.fspath(id_or_path)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            from mdpt.data.minari_io import is_minari_dir, read_minari

            if is_minari_dir(path):
                return read_minari(path, env=env)
            raise MDPTError(f"{path}: is a directory but not a Minari dataset (no data/metadata.json); "
                            f"give an HDF5 file or a Minari dataset directory")
        from mdpt.data.hdf5 import read_d4rl_hdf5

        return read_d4rl_hdf5(path, env=env)
    if text in DATASET_IDS:
        return _load_by_id(text, env, data_dir, download)
    if is_minari_id(text):
        from mdpt.data.minari_io import load_minari_id

        return load_minari_id(text, env=env, download=download and not offline(), offline_reason=_no_download())
    raise _not_found(text)


def preset_dataset(dataset: str | None) -> str | None:
    """The name presets are chosen by: a dataset id as given, or for an HDF5 file the id it records (a file made by
    `mdpt data make hopper-medium-v2` takes hopper-medium-v2's published settings); else the name itself."""
    if isinstance(dataset, str) and dataset.endswith((".hdf5", ".h5")) and Path(dataset).is_file():
        from mdpt.data.hdf5 import recorded_id

        return recorded_id(dataset) or dataset
    return dataset


def check_source(id_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                 download: bool = True) -> None:
    """Refuse, without reading it, a dataset that `load_dataset` would not find: a path that does not
    exist, an unknown id, or an id whose file is not in the data dir (the Minari root for a Minari id)
    and may not be downloaded. A command that writes anything checks its datasets with this first."""
    text = os.fspath(id_or_path)
    if Path(text).expanduser().exists():
        return
    if is_minari_id(text) and text not in DATASET_IDS:
        from mdpt.data.minari_io import is_minari_dir, minari_root

        if not is_minari_dir(minari_root() / text) and (not download or offline()):
            raise MDPTError(f"{text}: not found in {minari_root()} and {_no_download()}; download it with "
                            f"`minari download {text}`, or point MINARI_DATASETS_PATH at the folder that holds it")
        return
    if text not in DATASET_IDS:
        raise _not_found(text)
    info = parse_dataset_id(text)
    mismatch = d4rl_mismatch(info)
    if mismatch:
        raise MDPTError(mismatch)
    directory = Path(data_dir).expanduser() if data_dir else default_data_dir()
    if (directory / f"{text}.hdf5").exists():
        return
    if info.quality == "medium-expert" and info.family == "bullet":
        prefix = text[: -len("medium-expert-v0")]
        for part in (f"{prefix}medium-v0", f"{prefix}expert-v0"):
            check_source(part, directory, download)
        return
    if not download or offline():
        raise _not_local(text, directory)


def _not_found(text: str) -> MDPTError:
    path = Path(text).expanduser()
    if path.suffix in (".hdf5", ".h5") or os.sep in text or text.startswith("."):
        return MDPTError(f"{path}: file not found")
    return MDPTError(f"{text!r} is neither a file nor a known dataset id; known ids: {', '.join(DATASET_IDS)}")


def _not_local(dataset_id: str, directory: Path) -> MDPTError:
    return MDPTError(f"{dataset_id}: not found in {directory} and {_no_download()}; make it with `mdpt data make {dataset_id} "
                     f"--out {directory}`, or point {ENV_DATA_DIR} at a folder holding {dataset_id}.hdf5")


def _load_by_id(dataset_id: str, env, data_dir, download: bool) -> Dataset:
    info = parse_dataset_id(dataset_id)
    mismatch = d4rl_mismatch(info)
    if mismatch:
        raise MDPTError(mismatch)
    if env is not None:
        spec = env if isinstance(env, EnvSpec) else env_spec_for(env)
        if spec.env_id != info.env.env_id:
            raise MDPTError(f"{dataset_id} is data for {info.env.env_id}, not {spec.env_id}; drop --env "
                            f"or choose a dataset for {spec.env_id}")
    directory = Path(data_dir).expanduser() if data_dir else default_data_dir()
    path = directory / f"{dataset_id}.hdf5"
    if path.exists():
        return _read_d4rl(path, info)
    if info.quality == "medium-expert" and info.family == "bullet":
        prefix = dataset_id[: -len("medium-expert-v0")]
        parts = [f"{prefix}medium-v0", f"{prefix}expert-v0"]
        loaded = [_load_by_id(p, None, directory, download) for p in parts]
        return concatenate_datasets(loaded, dataset_id=dataset_id)
    if not download or offline():
        raise _not_local(dataset_id, directory)
    download_dataset(dataset_id, directory)
    return _read_d4rl(path, info)


def _read_d4rl(path: Path, info) -> Dataset:
    """A D4RL id's file; D4RL's own v2 files (no `env_id` attribute) say which env stands in for theirs."""
    import dataclasses

    from mdpt.data.hdf5 import read_d4rl_hdf5

    data = read_d4rl_hdf5(path, env=info.env, dataset_id=info.dataset_id)
    if info.family == "d4rl-mujoco" and "env_id" not in data.attrs:
        gym_id = info.env.env_id.replace("-v5", "-v3")
        note = (f"D4RL collected this data on gym's {gym_id} (mujoco-py); MDPT evaluates on Gymnasium's "
                f"{info.env.env_id}: the same observations and actions, MuJoCo's current physics")
        data = dataclasses.replace(data, notes=(*data.notes, note))
    return data


def _no_download() -> str:
    return f"{ENV_OFFLINE} is set" if offline() else "downloading is off"


# --------------------------------------------------------------------------------------------
# download


def download_dataset(
    dataset_id: str,
    data_dir: str | os.PathLike | None = None,
    url: str | None = None,
    timeout: float | None = None,
) -> Path:
    """Stream `dataset_id` into the data dir: temp file, size/sha256 check, HDF5 check, atomic rename.

    Any failure leaves nothing behind and raises a one-line MDPTError saying how to make the data
    locally instead.
    """
    from mdpt.data.hdf5 import read_d4rl_hdf5

    info = parse_dataset_id(dataset_id)
    directory = Path(data_dir).expanduser() if data_dir else default_data_dir()
    target = directory / f"{dataset_id}.hdf5"
    url = url or dataset_url(dataset_id)
    if timeout is None:
        timeout = download_timeout()
    expected_size, expected_sha = KNOWN_CHECKSUMS.get(dataset_id, (None, None))
    hint = (f"make it locally with `mdpt data make {dataset_id} --out {directory}`, or set {ENV_DATA_DIR} to "
            f"a folder that holds {dataset_id}.hdf5")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MDPTError(f"{directory}: cannot create the data dir ({e.strerror or e}); set {ENV_DATA_DIR} "
                        f"to a writable folder") from None

    def fail(reason: str) -> MDPTError:
        return MDPTError(f"download of {dataset_id} from {url} failed: {reason}; nothing was saved; {hint}")

    with atomic_path(target) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                header = resp.headers.get("Content-Length")
                announced = int(header) if header and header.isdigit() else None
                digest = hashlib.sha256()
                received = 0
                from tqdm.auto import tqdm

                with open(tmp, "wb") as out, tqdm(total=announced, unit="B", unit_scale=True,
                                                  desc=dataset_id, disable=None, leave=False) as bar:
                    while True:
                        chunk = resp.read(1 << 20)
                        if not chunk:
                            break
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
        except urllib.error.HTTPError as e:
            raise fail(f"HTTP {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            raise fail(f"{getattr(e.reason, 'strerror', None) or e.reason}") from None
        except TimeoutError:
            raise fail(f"no answer within {timeout:g} s") from None
        except (http.client.HTTPException, ConnectionError, OSError) as e:
            raise fail(f"{e.__class__.__name__}: {e}") from None
        if announced is not None and received != announced:
            raise fail(f"transfer cut short ({received} of {announced} bytes)")
        if expected_size is not None and received != expected_size:
            raise fail(f"size mismatch ({received} bytes, expected {expected_size})")
        if expected_sha is not None and digest.hexdigest() != expected_sha:
            raise fail("sha256 checksum mismatch (corrupt or altered transfer)")
        try:
            read_d4rl_hdf5(tmp, env=info.env, dataset_id=dataset_id)
        except MDPTError as e:
            raise fail(f"the file does not check out ({str(e).split(': ', 1)[-1]})") from None
    return target


# --------------------------------------------------------------------------------------------
# combining


def concatenate_datasets(datasets: Sequence[Dataset], dataset_id: str | None = None,
                         attrs: dict | None = None) -> Dataset:
    """Datasets one after another, episodes intact: an unmarked final transition of each part
    becomes a timeout so that no episode runs into the next part."""
    if not datasets:
        raise MDPTError("nothing to concatenate")
    env = datasets[0].env
    for d in datasets[1:]:
        if d.env.env_id != env.env_id:
            raise MDPTError(f"cannot concatenate {d.source} ({d.env.env_id}) with {datasets[0].source} "
                            f"({env.env_id}): different environments")
    arrays = {k: np.concatenate([getattr(d, k) for d in datasets]) for k in ARRAY_KEYS}
    notes: list[str] = []
    offset = 0
    marked = 0
    for d in datasets[:-1]:
        offset += len(d)
        if not (arrays["terminals"][offset - 1] or arrays["timeouts"][offset - 1]):
            arrays["timeouts"][offset - 1] = True
            marked += 1
    names = [d.dataset_id or d.source for d in datasets]
    notes.append(f"concatenation of {' + '.join(names)}"
                 + (f" ({marked} cut final episode(s) marked as timeouts)" if marked else ""))
    for d in datasets:
        notes.extend(f"{d.dataset_id or d.source}: {n}" for n in d.notes)
    merged = dict(datasets[-1].attrs)
    for key in ("ref_min_score", "ref_max_score"):
        values = {d.attrs.get(key) for d in datasets}
        if len(values) != 1:
            merged.pop(key, None)  # parts disagree on the reference: no dataset reference
    merged["concatenation_of"] = names
    merged["part_fingerprints"] = [d.fingerprint for d in datasets]
    merged["part_lengths"] = [len(d) for d in datasets]
    if dataset_id:
        merged["dataset_id"] = dataset_id
    merged.update(attrs or {})
    return Dataset(env=env, dataset_id=dataset_id, source=" + ".join(d.source for d in datasets),
                   attrs=merged, notes=tuple(notes), **arrays)
