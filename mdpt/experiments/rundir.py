"""A run directory's housekeeping: the lock, the writable/free-space probe, stale temporaries, the
metrics log (`metrics.jsonl`) with the one reader that the runner and the reports share, the one
rule for a run's status and the one path of an evaluation step's snapshot."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from mdpt.errors import MDPTError
from mdpt.io import is_temp_name, read_json, write_bytes_atomic

MIN_FREE_BYTES = 64 << 20
# Every name a run writes in its directory: a folder that holds anything else is not a run directory,
# and MDPT neither writes into it nor cleans it.
RUN_ENTRIES = frozenset({".lock", "config.json", "metrics.jsonl", "summary.json", "checkpoints", "snapshots",
                         "policy", "guidance", "best", "guidance-run", "random-guidance", "tensorboard", "wandb"})


def claim_folder(folder: Path, entries: frozenset[str] | Callable[[str], bool], what: str) -> list[Path]:
    """Check that `folder` is new, empty, or holds only what MDPT writes there (`entries`: the names, or a
    test of a name; and MDPT's own temporaries), before anything is written or cleaned in it; one-line
    error otherwise. Returns the folders this call creates (outermost first) so that a refused command
    can remove them again."""
    folder = Path(folder)
    ours = entries if callable(entries) else entries.__contains__
    if folder.exists() and not folder.is_dir():
        raise MDPTError(f"{folder}: is a file, not a {what}; choose another --out")
    if folder.is_dir():
        foreign = sorted(p.name for p in folder.iterdir() if not ours(p.name) and not is_temp_name(p.name))
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise MDPTError(f"{folder}: holds files that are not an mdpt {what}'s ({foreign[0]!r}{more}); "
                            "choose a new or empty --out")
        return []
    created, p = [], folder
    while not p.exists() and p != p.parent:
        created.append(p)
        p = p.parent
    return created[::-1]


def undo_claim(folder: Path) -> None:
    """After a refused command, still holding the lock: remove the lock file and an empty metrics log
    it left in `folder` (unlinked while held: a process starting now makes and locks a new one)."""
    folder = Path(folder)
    metrics = folder / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size == 0:
        metrics.unlink()
    (folder / ".lock").unlink(missing_ok=True)


def remove_empty(created: list[Path]) -> None:
    """Remove the folders a refused command created (`claim_folder`'s list), innermost first, while empty."""
    for p in reversed(created):
        try:
            p.rmdir()
        except OSError:
            break


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
    """Delete temporaries a killed process left (`.NAME.mdpt-tmp-XXXX.tmp` files and dirs,
    `.NAME.mdpt-old-PID`): only names MDPT gives its own temporaries (`io.is_temp_name`).

    Call only while holding the run lock, in a folder `claim_folder` accepted: a live writer's
    temporaries look the same.
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
        if not self.path.exists():
            return
        kept = [r for r in self.rows() if r["step"] <= step]
        write_bytes_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    def append(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def snapshot_dir(run_dir: Path, step: int) -> Path:
    """Where a run keeps the artifacts of an evaluation step (`eval.snapshots`, `--train-only`)."""
    return Path(run_dir) / "snapshots" / f"step-{step:09d}"


def run_status(run_dir: Path) -> str:
    """'done' (summary written, finished), 'trained' (trained elsewhere, its evaluations still to come),
    'partial' (started, stopped or unreadable) or 'new'."""
    summary = Path(run_dir) / "summary.json"
    if summary.exists():
        try:
            status = read_json(summary, "run summary").get("status", "finished")
        except (MDPTError, AttributeError):
            return "partial"
        return {"finished": "done", "trained": "trained"}.get(status, "partial")
    return "partial" if (Path(run_dir) / "checkpoints").exists() else "new"
