"""mdpt.io: atomic directory replacement, safetensors arrays with sha256, the one JSON default."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mdpt import io as mio
from mdpt.errors import MDPTError


def _dir(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "f.txt").write_text(text)
    return path


def test_replace_dir_new_and_existing(tmp_path):
    mio.replace_dir(_dir(tmp_path / "a", "one"), tmp_path / "out")
    assert (tmp_path / "out" / "f.txt").read_text() == "one"
    mio.replace_dir(_dir(tmp_path / "b", "two"), tmp_path / "out")
    assert (tmp_path / "out" / "f.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the aside copy is gone


def test_replace_dir_never_leaves_no_copy(tmp_path, monkeypatch):
    """The old copy is moved aside, not deleted first: when the new one cannot be renamed into
    place, the old one is back under its name."""
    dst = _dir(tmp_path / "out", "old")
    src = _dir(tmp_path / "new", "new")
    real_replace = os.replace
    seen = []

    def replace(a, b):
        seen.append((Path(a).name, Path(b).name))
        if Path(a) == src:
            assert Path(b) == dst and not dst.exists()
            assert any(p.name.startswith(".out.mdpt-old-") for p in tmp_path.iterdir())  # a copy exists meanwhile
            raise OSError(28, "No space left on device")
        return real_replace(a, b)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        mio.replace_dir(src, dst)
    monkeypatch.undo()
    assert (dst / "f.txt").read_text() == "old"
    assert seen[0][0] == "out" and seen[0][1].startswith(".out.mdpt-old-") and mio.is_temp_name(seen[0][1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "out"]


def test_atomic_dir(tmp_path):
    target = _dir(tmp_path / "ds", "old")
    with pytest.raises(RuntimeError):
        with mio.atomic_dir(target) as tmp:
            (tmp / "f.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert (target / "f.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    with mio.atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and mio.is_temp_name(tmp.name)
        (tmp / "f.txt").write_text("new")
    assert (target / "f.txt").read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o777 & ~mio._umask()  # not mkdtemp's 0700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_arrays_round_trip_and_checks(tmp_path):
    arrays = {"a/b": np.arange(6, dtype=np.float32).reshape(2, 3), "c": np.array([True, False])}
    sha = mio.save_arrays(tmp_path / "x.safetensors", arrays)
    back = mio.load_arrays(tmp_path / "x.safetensors", sha)
    assert sorted(back) == ["a/b", "c"]
    np.testing.assert_array_equal(back["a/b"], arrays["a/b"])
    assert mio.load_params(tmp_path / "x.safetensors", sha)["a"]["b"].shape == (2, 3)  # the tree view
    with pytest.raises(MDPTError, match="checksum mismatch; the SAC state is truncated"):
        mio.load_arrays(tmp_path / "x.safetensors", "0" * 64, what="SAC state")
    with pytest.raises(MDPTError, match="buffer not found; start over"):
        mio.load_arrays(tmp_path / "missing.safetensors", what="buffer", hint="start over")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(MDPTError, match="not a valid safetensors file"):
        mio.load_arrays(tmp_path / "bad.safetensors")


def test_json_default():
    text = json.dumps({"a": np.float32(1.5), "b": np.arange(2), "c": Path("x/y")}, default=mio.json_default)
    assert json.loads(text) == {"a": 1.5, "b": [0, 1], "c": "x/y"}
    with pytest.raises(TypeError, match="not JSON serializable: object"):
        json.dumps({"a": object()}, default=mio.json_default)
