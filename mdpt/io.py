"""Atomic file and directory writes, JSON, and arrays / parameter trees stored as safetensors (never pickle)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mdpt.errors import MDPTError

SEP = "/"
# Temporaries MDPT writes are named `.NAME.mdpt-tmp-XXXXXXXX.tmp` (and an old directory moved aside
# `.NAME.mdpt-old-PID`): the marker is what lets a clean-up prove a file is MDPT's own; a user's
# `.notes.tmp` or `.photos.old-2023` never matches.
TEMP_MARK = "mdpt-tmp-"
_TEMP_RE = re.compile(r"\..+\.(mdpt-tmp-[A-Za-z0-9_]+\.tmp|mdpt-old-[0-9]+)")


def temp_prefix(name: str) -> str:
    """The `prefix` for `tempfile.mkstemp`/`mkdtemp` of a temporary beside `name` (suffix `.tmp`)."""
    return f".{name}.{TEMP_MARK}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, else remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask is process-wide, toggling it later would race


def _umask() -> int:
    return _UMASK


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in `path` durable (best effort: not every file system supports it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_temp_name(name: str) -> bool:
    """Names MDPT's writers give their temporaries (`.NAME.mdpt-tmp-XXXX.tmp`, `.NAME.mdpt-old-PID`), and no others."""
    return _TEMP_RE.fullmatch(name) is not None


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success it replaces `path` (`replace_dir`),
    else it is removed. The directory gets ordinary permissions (mkdtemp makes 0700)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rename directory `src` to `dst`, replacing an existing `dst` with no moment without a copy.

    The old `dst` is first renamed aside (`.NAME.mdpt-old-PID`), then `src` renamed into place, then the
    old copy removed; if the second rename fails the old copy is put back. A crash in between
    leaves the old copy under the aside name (`is_temp_name` recognises it), never nothing.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists():
        old = dst.with_name(f".{dst.name}.mdpt-old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        try:
            os.replace(src, dst)
        except BaseException:
            os.replace(old, dst)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
    fsync_dir(dst.parent)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=1, sort_keys=True, default=json_default) + "\n").encode())


def json_default(obj: Any) -> Any:
    """`json.dumps(default=...)` for numpy scalars and arrays and paths; anything else is an error."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")



def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MDPTError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MDPTError(f"{path}: {what} is not valid JSON ({e.__class__.__name__}); it may be truncated") from None


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def flatten_tree(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dicts of arrays -> {'a/b/c': array}. Keys must not contain '/'."""
    out: dict[str, np.ndarray] = {}
    if isinstance(tree, dict) or hasattr(tree, "items"):
        for k, v in tree.items():
            out.update(flatten_tree(v, f"{prefix}{k}{SEP}"))
        return out
    out[prefix[:-1]] = tree if hasattr(tree, "shape") and hasattr(tree, "dtype") else np.asarray(tree)
    return out


def unflatten_tree(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(SEP)
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> str:
    """Save flat named arrays as safetensors atomically; return the file's sha256."""
    from safetensors.numpy import save

    data = save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
    write_bytes_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def load_arrays(path: str | os.PathLike, expected_sha256: str | None = None, what: str = "parameter file",
                hint: str = "retrain or restore it") -> dict[str, np.ndarray]:
    """Load flat named arrays from a safetensors file, verifying its checksum when one is given.
    A missing, altered or unreadable file is a one-line MDPTError naming `what` it is and `hint`."""
    from safetensors.numpy import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MDPTError(f"{path}: {what} not found; {hint}") from None
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise MDPTError(f"{path}: checksum mismatch; the {what} is truncated or was altered, {hint}")
    try:
        return load(data)
    except Exception as e:  # safetensors raises its own error types; it never runs code from the file
        raise MDPTError(f"{path}: not a valid safetensors file ({e.__class__.__name__}); {hint}") from None


def save_params(path: str | os.PathLike, tree: Any) -> str:
    """Save a parameter tree as safetensors atomically; return the file's sha256."""
    return save_arrays(path, flatten_tree(tree))


def load_params(path: str | os.PathLike, expected_sha256: str | None = None) -> dict:
    """Load a safetensors parameter tree, verifying its checksum when one is given."""
    return unflatten_tree(load_arrays(path, expected_sha256, "parameter file"))


def versions() -> dict:
    """Versions of mdpt and the packages whose behaviour its results depend on, and the backend."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("mdpt", "jax", "jaxlib", "flax", "optax", "numpy", "h5py", "gymnasium", "pybullet",
                "pybullet-envs-gymnasium"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    try:
        import jax

        out["backend"] = jax.default_backend()
    except Exception:  # no usable JAX backend: the record says so rather than failing
        out["backend"] = "unavailable"
    return out
