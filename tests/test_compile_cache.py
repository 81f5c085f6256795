"""The command line's persistent XLA cache: where it goes, how to turn it off, and that a second process
loads what the first compiled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mdpt.compile_cache import compile_cache_dir, enable_compile_cache


@pytest.mark.parametrize("environ, expected", [
    ({"MDPT_COMPILE_CACHE": "/c/mdpt", "JAX_COMPILATION_CACHE_DIR": "/c/jax"}, Path("/c/mdpt")),
    ({"MDPT_COMPILE_CACHE": "off", "JAX_COMPILATION_CACHE_DIR": "/c/jax"}, None),
    ({"MDPT_COMPILE_CACHE": "0"}, None),
    ({"JAX_COMPILATION_CACHE_DIR": "/c/jax"}, Path("/c/jax")),
    ({"XDG_CACHE_HOME": "/c/xdg"}, Path("/c/xdg/mdpt/xla")),
])
def test_the_environment_chooses_the_folder_or_turns_it_off(environ, expected):
    assert compile_cache_dir(environ) == expected


def test_a_folder_that_cannot_be_made_leaves_the_cache_off(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert enable_compile_cache(blocker / "cache") is None


def test_the_cli_enables_the_cache_before_running_a_command(monkeypatch, run_cli, tiny_hopper_hdf5):
    import mdpt.cli.main as cli

    calls = []
    monkeypatch.setattr(cli, "enable_compile_cache", lambda: calls.append("enabled"))
    code, _, _ = run_cli("data", "info", tiny_hopper_hdf5)
    assert (code, calls) == (0, ["enabled"])


PROGRAM = """
import sys, time
from mdpt.compile_cache import enable_compile_cache
enable_compile_cache(sys.argv[1], min_compile_secs=0)
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
start = time.perf_counter()
f.lower(jnp.ones((64, 64))).compile()
print(time.perf_counter() - start)
"""


def test_a_second_process_finds_the_first_ones_program_in_the_folder(tmp_path):
    folder = tmp_path / "xla"
    run = [sys.executable, "-c", PROGRAM, str(folder)]
    subprocess.run(run, check=True, capture_output=True)
    entries = sorted(p.name for p in folder.iterdir())
    assert any(name.endswith("-cache") for name in entries), entries
    subprocess.run(run, check=True, capture_output=True)
    assert sorted(p.name for p in folder.iterdir()) == entries  # loaded, not written again
