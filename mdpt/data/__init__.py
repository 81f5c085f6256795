"""Offline datasets: D4RL HDF5 and Minari files, checks, resolution, downloads, statistics and making.

`load_dataset(id_or_path)` is the entry point; see docs/ARCHITECTURE.md for the modules.
"""

from mdpt.data.dataset import Dataset
from mdpt.data.load import load_dataset
from mdpt.data.stats import dataset_summary

__all__ = ["Dataset", "dataset_summary", "load_dataset"]
