"""Where a run's metrics go besides `metrics.jsonl` (always written, the source of truth):
TensorBoard (`pip install mdpt[tensorboard]`) and Weights & Biases (`pip install mdpt[wandb]`),
chosen by the setting `log.backends`. Each receives per-chunk training means and per-evaluation
scores as scalars: `train/<metric>` (mean over seeds) and `eval/<variant>/score` (normalized,
mean over seeds and episodes)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from mdpt.errors import MDPTError


def scalars(row: dict) -> dict[str, float]:
    """The scalars of one metrics row."""
    if row.get("phase") == "eval":
        v = row.get("variant", "guided")
        return {f"eval/{v}/score": float(np.mean(row["scores"])), f"eval/{v}/return": float(np.mean(row["returns"]))}
    out = {}
    for key, value in row.items():
        if key in ("phase", "step") or isinstance(value, str):
            continue
        arr = np.asarray(value, dtype=float)
        if arr.size and np.isfinite(arr).all():
            out[f"train/{key}"] = float(arr.mean())
    return out


class TensorBoardSink:
    def __init__(self, folder: Path):
        try:
            from tensorboard.summary import Writer
        except ImportError:
            raise MDPTError("log.backends names tensorboard but the tensorboard package is not installed: "
                            "pip install 'mdpt[tensorboard]'") from None
        self.writer = Writer(str(folder))

    def write(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, run_dir: Path, project: str, config: dict):
        try:
            import wandb
        except ImportError:
            raise MDPTError("log.backends names wandb but the wandb package is not installed: "
                            "pip install 'mdpt[wandb]'") from None
        run_id = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]  # a resumed run logs to the same run
        self.run = wandb.init(project=project, dir=str(run_dir), name=run_dir.name, id=run_id, resume="allow",
                              config=config)

    def write(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class Sinks:
    """The optional sinks of one run; `write(row)` for every metrics row."""

    def __init__(self, run_dir: Path, backends, wandb_project: str = "mdpt", config: dict | None = None):
        self.sinks = []
        if "tensorboard" in backends:
            self.sinks.append(TensorBoardSink(Path(run_dir) / "tensorboard"))
        if "wandb" in backends:
            self.sinks.append(WandbSink(Path(run_dir), wandb_project, config or {}))

    def write(self, row: dict) -> None:
        values = scalars(row)
        for sink in self.sinks:
            sink.write(int(row["step"]), values)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []
