"""A run directory's housekeeping: the lock, the writable/free-space probe, stale temporaries and
the metrics log (`metrics.jsonl`), with the one reader that the runner and the reports share."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

from mdpt.errors import MDPTError
from mdpt.io import is_temp_name, write_bytes_atomic

MIN_FREE_BYTES = 64 << 20


class RunLock:
    """An exclusive lock on a directory (`.lock`), held while a process works in it."""

    def __init__(self, run_dir: Path, what: str = "run directory"):
        self.path = Path(run_dir) / ".lock"
        self.what = what
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise MDPTError(f"{self.path.parent}: another mdpt process is using this {self.what}; "
                            "wait for it or choose another --out") from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def check_writable(run_dir: Path, need_bytes: int = MIN_FREE_BYTES) -> None:
    """Fail before training if the output directory is unwritable or nearly full."""
    run_dir = Path(run_dir)
    probe = run_dir / f".probe-{os.getpid()}.tmp"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            probe.write_bytes(b"x")
        finally:
            probe.unlink(missing_ok=True)
        free = shutil.disk_usage(run_dir).free
    except OSError as e:
        raise MDPTError(f"{run_dir}: output directory is not writable ({e.strerror or e.__class__.__name__}); "
                        "choose another --out") from None
    if free < need_bytes:
        raise MDPTError(f"{run_dir}: only {free >> 20} MiB free, need about {need_bytes >> 20} MiB; "
                        "free space or choose another --out")


def remove_stale_temporaries(run_dir: Path, folders=("", "checkpoints", "policy", "guidance", "best")) -> list[Path]:
    """Delete temporaries a killed process left (`.NAME.XXXX.tmp` files and dirs, `.NAME.old-PID`).

    Call only while holding the run lock: a live writer's temporaries look the same.
    """
    removed = []
    for sub in folders:
        folder = Path(run_dir) / sub
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if is_temp_name(p.name):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics.jsonl file. A last line torn by a kill is dropped (it is redone on
    resume); a damaged line before the end is a corrupt file (one-line error)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise MDPTError(f"{path}: metrics file not found; not a run directory") from None
    except UnicodeDecodeError:
        raise MDPTError(f"{path}: not a text file; the metrics file is corrupt") from None
    lines = text.split("\n")
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):  # no newline after it: a write cut short
                break
            raise MDPTError(f"{path}:{i}: not valid JSON; the metrics file is truncated or corrupt") from None
        if not (isinstance(row, dict) and isinstance(row.get("step"), int)):
            raise MDPTError(f"{path}:{i}: expected a JSON object with an integer step per line")
        rows.append(row)
    return rows


class MetricsLog:
    """Append-only JSONL; on resume, rows past the checkpoint (or torn by a kill) are dropped."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def rows(self) -> list[dict]:
        return read_metrics(self.path) if self.path.exists() else []

    def truncate_after(self, step: int) -> None:
        kept = [r for r in self.rows() if r["step"] <= step]
        write_bytes_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    def append(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
