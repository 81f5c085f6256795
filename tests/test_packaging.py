"""Packaging: one version source, `python -m mdpt`, package data (py.typed, the shipped dataset), tested ranges."""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

import mdpt

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_python_dash_m_mdpt():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "mdpt", "--version"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"mdpt {mdpt.__version__}"
    bad = subprocess.run([sys.executable, "-m", "mdpt", "no-such-command"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_one_version_source():
    project = PYPROJECT["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "mdpt.__version__"}


def test_package_data_ships_py_typed_and_datasets():
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["mdpt"]
    assert (ROOT / "mdpt" / "py.typed").is_file()
    shipped = [p.relative_to(ROOT / "mdpt").as_posix() for p in (ROOT / "mdpt" / "datasets").iterdir()]
    assert any(name.endswith(".hdf5") for name in shipped)
    for name in ["py.typed", *shipped]:
        assert any(fnmatch.fnmatch(name, g) for g in globs), f"{name} is not package data"


def test_extras():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert "make" not in extras  # sbx-rl is not used: `mdpt data make` has its own JAX SAC
    assert {"ray", "minari", "tensorboard", "wandb", "dev"} <= set(extras)
    assert any(d.startswith("minari") for d in extras["dev"])  # CI runs the real-package Minari tests
    assert any(d.startswith("ruff") for d in extras["dev"])


@pytest.mark.parametrize("name", ["jax", "jaxlib", "flax", "optax"])
def test_installed_versions_in_declared_ranges(name):
    packaging_req = pytest.importorskip("packaging.requirements")
    reqs = [packaging_req.Requirement(d) for d in PYPROJECT["project"]["dependencies"]]
    req = next(r for r in reqs if r.name == name)
    try:
        installed = version(name)
    except PackageNotFoundError:
        pytest.skip(f"{name} not installed")
    assert req.specifier.contains(installed, prereleases=True), f"{name} {installed} outside {req.specifier}"


def test_mujoco_is_a_core_dependency():
    """Gymnasium's MuJoCo envs (D4RL MuJoCo v2 and Minari ids evaluate there) install with the package."""
    packaging_req = pytest.importorskip("packaging.requirements")
    reqs = [packaging_req.Requirement(d) for d in PYPROJECT["project"]["dependencies"]]
    assert "mujoco" in next(r for r in reqs if r.name == "gymnasium").extras
