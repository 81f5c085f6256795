"""Property tests: any corruption of a tiny HDF5 file ends in MDPTError or a valid Dataset, never
another exception, and the file's bytes stay unchanged."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import d4rl_arrays, write_raw_hdf5
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdpt.data.dataset import Dataset
from mdpt.data.load import load_dataset
from mdpt.errors import MDPTError

# MDPT_HYPOTHESIS_EXAMPLES raises the count for a longer hunt (default 50 keeps the suite fast).
SETTINGS = settings(max_examples=int(os.environ.get("MDPT_HYPOTHESIS_EXAMPLES", "50")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")
ATTRS = {"env_id": "HopperBulletEnv-v0"}


@pytest.fixture(scope="module")
def valid_bytes(tmp_path_factory) -> bytes:
    path = write_raw_hdf5(tmp_path_factory.mktemp("valid") / "tiny.hdf5", d4rl_arrays(lengths=(5, 4)), ATTRS)
    return path.read_bytes()


def _check(path: Path) -> None:
    """Load must give MDPTError or a valid Dataset, and must not touch the file."""
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        data = load_dataset(path)
    except MDPTError as e:
        assert "\n" not in str(e) and str(path) in str(e)
    else:
        assert isinstance(data, Dataset)
        n = len(data)
        assert n > 0
        for key in KEYS:
            arr = getattr(data, key)
            assert len(arr) == n
            if arr.dtype.kind == "f":
                assert np.isfinite(arr).all()
        assert data.observations.shape[1] == data.next_observations.shape[1] == 15
        assert data.actions.shape[1] == 3 and np.abs(data.actions).max() <= 1.0
        assert data.terminals.dtype == bool and data.timeouts.dtype == bool
        assert not (data.terminals & data.timeouts).any()
        assert np.isfinite(data.episode_returns).all()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


@SETTINGS
@given(cut=st.floats(0.0, 1.0, exclude_max=True))
def test_truncation(valid_bytes, cut):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "cut.hdf5"
        path.write_bytes(valid_bytes[: int(cut * len(valid_bytes))])
        _check(path)


@SETTINGS
@given(where=st.floats(0.0, 1.0, exclude_max=True), junk=st.binary(min_size=1, max_size=16))
def test_overwritten_bytes(valid_bytes, where, junk):
    data = bytearray(valid_bytes)
    i = int(where * len(data))
    data[i: i + len(junk)] = junk
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "flipped.hdf5"
        path.write_bytes(bytes(data[: len(valid_bytes)]))
        _check(path)


def _mutation(draw_key, kind, rows, arrays):
    a = arrays[draw_key]
    if np.ndim(a) == 0 or len(a) == 0:  # already a scalar or empty: only deletion still applies
        if kind == "delete":
            del arrays[draw_key]
        return
    if a.dtype.kind not in "biuf" and kind not in ("delete", "shorten", "lengthen", "empty_all", "flatten",
                                                   "add_axis", "scalar", "wrong_width", "strings"):
        return  # numeric mutations of a string array: nothing to add
    n = len(a)
    if kind == "delete":
        del arrays[draw_key]
    elif kind == "float64":
        arrays[draw_key] = a.astype(np.float64)
    elif kind == "int":
        arrays[draw_key] = np.round(a).astype(np.int64)
    elif kind == "strings":
        arrays[draw_key] = np.array([b"x"] * n)
    elif kind == "complex":
        arrays[draw_key] = a.astype(np.complex64)
    elif kind == "flatten":
        arrays[draw_key] = a.reshape(-1)
    elif kind == "add_axis":
        arrays[draw_key] = a[..., None]
    elif kind == "scalar":
        arrays[draw_key] = np.float32(1.0)
    elif kind == "shorten":
        arrays[draw_key] = a[: rows % n]
    elif kind == "lengthen":
        arrays[draw_key] = np.concatenate([a, a[: 1 + rows % n]])
    elif kind == "empty_all":
        for k in list(arrays):
            if np.ndim(arrays[k]):
                arrays[k] = arrays[k][:0]
    elif kind in ("nan", "inf"):
        b = a.astype(np.float32)
        b.reshape(n, -1)[rows % n, 0] = np.nan if kind == "nan" else -np.inf
        arrays[draw_key] = b
    elif kind == "scale":
        arrays[draw_key] = a.astype(np.float32) * (1.0 + (rows % 7) * 0.5)
    elif kind == "nudge":
        b = a.astype(np.float32).copy()
        b.reshape(n, -1)[rows % n, 0] = 1.00003
        arrays[draw_key] = b
    elif kind == "zeros":
        arrays[draw_key] = np.zeros_like(a)
    elif kind == "ones":
        arrays[draw_key] = np.ones_like(a)
    elif kind == "wrong_width":
        arrays[draw_key] = np.zeros((n, 1 + rows % 20), np.float32) if a.ndim == 2 else np.zeros((n, 2), np.float32)


KINDS = ("delete", "float64", "int", "strings", "complex", "flatten", "add_axis", "scalar", "shorten",
         "lengthen", "empty_all", "nan", "inf", "scale", "nudge", "zeros", "ones", "wrong_width")


@SETTINGS
@given(mutations=st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(KINDS), st.integers(0, 1000)),
                          min_size=1, max_size=3),
       as_group=st.booleans(), drop_env=st.booleans())
def test_structural_corruption(mutations, as_group, drop_env):
    arrays = d4rl_arrays(lengths=(5, 4))
    for key, kind, rows in mutations:
        if key in arrays:
            with np.errstate(invalid="ignore"):
                _mutation(key, kind, rows, arrays)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "mutated.hdf5"
        write_raw_hdf5(path, arrays, {} if drop_env else ATTRS)
        if as_group and "rewards" in arrays:
            with h5py.File(path, "a") as f:
                del f["rewards"]
                f.create_group("rewards")
        _check(path)
