"""Datasets shipped inside the package (`mdpt/datasets/`): small but real, made by `mdpt data make`.

They let `mdpt quickstart` and examples run offline on a fresh install. Their recipes (SAC steps,
transitions, seed, returns, command, wall time) are in `mdpt/datasets/README.md` and in each
file's attributes (`mdpt data info PATH`). They are smaller than D4RL's files; the loader never
substitutes them for a dataset id: ask for them by path (`packaged_path(id)`).
"""

from __future__ import annotations

from pathlib import Path

PACKAGED_DIR = Path(__file__).resolve().parents[1] / "datasets"


def packaged_ids() -> list[str]:
    """Ids of the datasets shipped with this install, sorted."""
    return sorted(p.stem for p in PACKAGED_DIR.glob("*.hdf5")) if PACKAGED_DIR.is_dir() else []


def packaged_path(dataset_id: str) -> Path | None:
    """The shipped file for `dataset_id`, or None when this install has none."""
    path = PACKAGED_DIR / f"{dataset_id}.hdf5"
    return path if path.is_file() else None
