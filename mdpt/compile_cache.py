"""A persistent XLA compilation cache for the command line: a second `mdpt` call that builds the same
programs (same shapes, settings, JAX version and backend) loads them from disk instead of compiling.

Where: `MDPT_COMPILE_CACHE` (a directory, or `off`), else JAX's own `JAX_COMPILATION_CACHE_DIR`, else
`$XDG_CACHE_HOME/mdpt/xla` (`~/.cache/mdpt/xla`). JAX keys each entry by the program and everything that
changes its code, and bounds the folder (least recently used entries go first). The setting is
process-wide, so the library never sets it on import: `mdpt.cli` calls `enable_compile_cache()` once.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

LOG = logging.getLogger("mdpt")
OFF = {"", "0", "off", "false", "no", "none"}
MAX_BYTES = 2 << 30


def compile_cache_dir(environ=os.environ) -> Path | None:
    """The cache folder the environment asks for; None when it is turned off."""
    chosen = environ.get("MDPT_COMPILE_CACHE")
    if chosen is not None:
        return None if chosen.strip().lower() in OFF else Path(chosen).expanduser()
    if environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(environ["JAX_COMPILATION_CACHE_DIR"]).expanduser()
    base = environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mdpt" / "xla"


def enable_compile_cache(path: str | Path | None = None, min_compile_secs: float | None = None) -> Path | None:
    """Point JAX's persistent cache at `path` (default: `compile_cache_dir()`); programs that compile in
    under `min_compile_secs` (default: JAX's, 1 s, or its environment variable) are not worth a file. A
    folder that cannot be made leaves the cache off (a debug message, never an error): caching only
    saves time."""
    folder = Path(path) if path is not None else compile_cache_dir()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        LOG.debug("compilation cache off: cannot make %s (%s)", folder, e.strerror or e)
        return None
    problem = _unwritable(folder)
    if problem:  # checked once here: JAX would warn once per compiled program instead
        LOG.warning("compilation cache off: cannot write to %s (%s); running without it (set MDPT_COMPILE_CACHE to a "
                    "writable folder, or off)", folder, problem)
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(folder))
    if min_compile_secs is not None:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_secs)
    if importlib.util.find_spec("filelock") is not None:  # JAX refuses a bound without it (a --no-deps install)
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return folder


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be written in `folder`, or None when they can (a probe file is made and removed)."""
    import tempfile

    from mdpt.io import temp_prefix

    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=temp_prefix("probe"))
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        return e.strerror or str(e)
    return None
