"""Offline datasets: D4RL HDF5 and Minari files, checks, resolution, downloads and making.

`load_dataset(id_or_path)` is the entry point; see docs/ARCHITECTURE.md for the modules.
"""

from mdpt.data.dataset import Dataset
from mdpt.data.load import load_dataset

__all__ = ["Dataset", "load_dataset"]
