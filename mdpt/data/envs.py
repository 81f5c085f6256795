"""Gymnasium environments for evaluation and data making: PyBullet ones created quietly (PyBullet prints
from C on connect and import), any other registered id (Gymnasium MuJoCo `*-v5`, ...) as Gymnasium makes it."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import gymnasium as gym

from mdpt.errors import MDPTError


def _c_fflush() -> None:
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def quiet_stdout(enabled: bool = True, stderr: bool = False) -> Iterator[None]:
    """Silence file descriptor 1 (and 2 with ``stderr``) for C code that prints.

    PyBullet prints 'argv[0]=' to stdout when it connects and its build time to stderr when it
    is imported. Whatever any thread writes to a silenced descriptor meanwhile is dropped.
    """
    if not enabled:
        yield
        return
    streams = [(sys.stdout, 1)] + ([(sys.stderr, 2)] if stderr else [])
    saved: list[tuple[int, int]] = []
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream, default_fd in streams:
            with contextlib.suppress(Exception):
                stream.flush()
            fd = default_fd  # C code writes to fds 1/2 whatever Python's sys.stdout is
            _c_fflush()
            saved.append((fd, os.dup(fd)))
            os.dup2(devnull, fd)
        yield
    finally:
        for stream, _ in streams:
            with contextlib.suppress(Exception):
                stream.flush()
        _c_fflush()  # C-level printf output is buffered; drop it before the fds come back
        for fd, copy in reversed(saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


class QuietReset(gym.Wrapper):
    """PyBullet connects (and prints) on an env's first reset, which may run in a worker process."""

    def __init__(self, env, quiet: bool):
        super().__init__(env)
        self._quiet = quiet

    def reset(self, **kwargs):
        with quiet_stdout(self._quiet):
            return self.env.reset(**kwargs)


def import_pybullet(quiet: bool = True) -> None:
    """Import pybullet and register the *BulletEnv-v0 ids, without pybullet's start-up line.

    The pybullet C extension prints ``pybullet build time: ...`` from C when it is first
    imported (``gym.make`` imports it through the env's entry point module), so file
    descriptors 1 and 2 are redirected around the import itself. Only the first call imports.
    """
    if "pybullet" in sys.modules and "pybullet_envs_gymnasium" in sys.modules:
        return
    with quiet_stdout(quiet, stderr=quiet):
        import pybullet  # noqa: F401
        import pybullet_envs_gymnasium  # noqa: F401  (registers the *BulletEnv-v0 ids)


def is_bullet(env_id: str) -> bool:
    return env_id.endswith("BulletEnv-v0")


def make_env(env_id: str, quiet: bool = True):
    """One environment (top level, so AsyncVectorEnv can pickle it for 'spawn' workers)."""
    if is_bullet(env_id):
        import_pybullet(quiet)
    hint = ("install pybullet and pybullet-envs-gymnasium" if is_bullet(env_id)
            else "install the package that provides it (MuJoCo envs: pip install mujoco)")
    with quiet_stdout(quiet and is_bullet(env_id)):
        try:
            # The passive checker only re-validates spaces on every step; skip its overhead.
            return QuietReset(gym.make(env_id, disable_env_checker=True), quiet and is_bullet(env_id))
        except Exception as e:  # a missing or broken simulator install
            raise MDPTError(f"cannot create {env_id} ({e.__class__.__name__}: {e}); {hint}") from None


def env_spec(env_id: str):
    """Gymnasium's registered `EnvSpec` of an env (entry point, time limit), without making it."""
    if is_bullet(env_id):
        with quiet_stdout(True, stderr="pybullet" not in sys.modules):
            import pybullet_envs_gymnasium  # noqa: F401  (registers the *BulletEnv-v0 ids)
    try:
        return gym.spec(env_id)
    except Exception as e:
        raise MDPTError(f"{env_id} is not a registered Gymnasium environment ({e.__class__.__name__}); "
                        "install the package that registers it") from None
