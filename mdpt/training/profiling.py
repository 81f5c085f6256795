"""XLA cost and memory analysis of compiled functions, and the memory preflight built on it.

Before a run trains (or an evaluation rolls out), its compiled program's XLA memory analysis is
compared with the memory available (`available_memory`; `$MDPT_MEMORY_LIMIT_BYTES` overrides it,
`off` turns the check off) and a program that cannot fit is refused with one line that gives
both numbers (`check_memory`). Out-of-memory errors that get past the check (XLA
RESOURCE_EXHAUSTED at compile or run time) become the same kind of one-line error
(`out_of_memory_as_error`).
"""

from __future__ import annotations

import contextlib
import os
import re

from mdpt.errors import MDPTError
from mdpt.settings import shown


def compiled_peak_bytes(compiled) -> int | None:
    """Peak memory of one call of a compiled function (XLA memory analysis, on every backend; the
    device's own peak statistic is process-wide and only rises, so it cannot compare two steps)."""
    m = compiled_memory_bytes(compiled)
    return m["peak"] if m else None


def compiled_flops(compiled) -> float | None:
    """FLOPs of one call. XLA counts a `lax.scan` body once: for a chunk this is one step (x seeds)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def compiled_memory_bytes(compiled) -> dict | None:
    """XLA's memory analysis of a compiled function on any backend (not the process-wide device
    peak): argument, output, temporary and aliased bytes, and their peak (args + out + temp - alias)."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    out = {"argument": int(m.argument_size_in_bytes), "output": int(m.output_size_in_bytes),
           "temp": int(m.temp_size_in_bytes), "alias": int(m.alias_size_in_bytes)}
    out["peak"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


# ----- memory preflight: refuse a program that cannot fit before it runs -----

MEMORY_LIMIT_ENV = "MDPT_MEMORY_LIMIT_BYTES"
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
MAX_BYTES = 2**60  # an exbibyte: more than any machine holds


def _parse_bytes(raw: str) -> int:
    """'8000000000', '8G', '512MiB' -> bytes (suffixes are powers of 1024)."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]*)?(?:[eE][0-9]+)?)\s*([kKmMgGtT]?)(?:i?[bB])?", raw)
    value = float(m.group(1)) * _UNITS[m.group(2).lower()] if m else 0.0
    if not 1 <= value <= MAX_BYTES:
        raise MDPTError(f"{MEMORY_LIMIT_ENV}={shown(raw)}: expected a number of bytes in 1..{MAX_BYTES:.3g} "
                        "(e.g. 8000000000 or 8G), or off")
    return int(value)


def available_memory() -> tuple[int | None, str]:
    """(bytes one compiled program may use, where the number comes from); None: unknown or off.

    `$MDPT_MEMORY_LIMIT_BYTES` (bytes, or with a K/M/G/T suffix in powers of 1024; `off` turns
    the check off) overrides the rest. Else an accelerator's memory (`bytes_limit` of the first
    device's memory_stats()), or on CPU the host memory this process can hold: what it holds
    already (its resident set: a program's arguments live there) plus MemAvailable from
    /proc/meminfo, within a cgroup's memory limit where one is set.
    """
    raw = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if raw.lower() in ("off", "none"):
        return None, f"{MEMORY_LIMIT_ENV}={raw}"
    if raw:
        return _parse_bytes(raw), MEMORY_LIMIT_ENV
    import jax

    device = jax.devices()[0]
    if device.platform != "cpu":
        try:
            limit = (device.memory_stats() or {}).get("bytes_limit")
        except Exception:  # a backend without memory statistics
            limit = None
        return (int(limit), f"{device.device_kind} memory") if limit else (None, "unknown")
    return _host_memory(), "host memory: MemAvailable + this process's resident set"


def _host_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: line.split()[1] for line in f if ":" in line}
        free = int(info["MemAvailable"]) * 1024
        with open("/proc/self/statm") as f:
            resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, KeyError, ValueError, IndexError):  # not Linux
        return None
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as f, open(usage_file) as g:
                free = min(free, int(f.read()) - int(g.read()))
            break
        except (OSError, ValueError):  # no such cgroup file, or 'max' (no limit)
            continue
    return max(free, 0) + resident


def _size(n: int) -> str:
    return f"{n} bytes ({n / 2**30:.3g} GiB)"


def check_memory(compiled, what: str, lower: str) -> dict | None:
    """Refuse, with one line that gives both numbers, a compiled program whose XLA peak
    (arguments + outputs + temporaries - aliased) exceeds the memory available. Returns the
    memory analysis (None where the backend has none)."""
    m = compiled_memory_bytes(compiled)
    available, source = available_memory()
    if m is not None and available is not None and m["peak"] > available:
        raise MDPTError(f"{what} needs {_size(m['peak'])} (XLA memory analysis: arguments + outputs + temporaries) "
                        f"but {_size(available)} is available ({source}); lower {lower}")
    return m


def is_out_of_memory(error: BaseException) -> bool:
    """An XLA RESOURCE_EXHAUSTED / out-of-memory error (at compile or run time), or a MemoryError."""
    if isinstance(error, MemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower())


def out_of_memory_message(error: BaseException, what: str, lower: str) -> str:
    """One line: what ran out of memory, XLA's first line (the bytes it asked for), the memory
    available, and what to lower."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    try:
        available, source = available_memory()
    except MDPTError:
        available, source = None, ""
    have = f"{_size(available)} is available ({source})" if available is not None else "the memory available is unknown"
    return f"{what} ran out of memory ({first}); {have}; lower {lower}"


@contextlib.contextmanager
def out_of_memory_as_error(what: str, lower: str):
    """Inside: an out-of-memory error becomes a one-line MDPTError (exit code 2)."""
    try:
        yield
    except MDPTError:
        raise
    except (RuntimeError, MemoryError) as e:
        if not is_out_of_memory(e):
            raise
        raise MDPTError(out_of_memory_message(e, what, lower)) from None
