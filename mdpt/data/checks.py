"""Validation of raw transition arrays, shared by every file format (D4RL HDF5, Minari).

Every problem becomes an `MDPTError` with one line: which file, what is wrong, what to do.
The functions here never see h5py objects, only numpy arrays, so that a reader can first pull
everything off the disk (where any failure means a truncated or corrupt file) and then check.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mdpt.data.dataset import Dataset
from mdpt.data.registry import EnvSpec
from mdpt.errors import MDPTError

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
OPTIONAL_KEYS = ("next_observations",)
ACTION_TOLERANCE = 1e-4  # actions this far outside [-1, 1] are rounding and get clipped
REMAKE = "fix the file or remake it (`mdpt data make ID`)"


def missing_keys_error(source: str, missing: list[str]) -> MDPTError:
    names = ", ".join(repr(k) for k in missing)
    return MDPTError(
        f"{source}: missing dataset{'s' if len(missing) > 1 else ''} {names}; a D4RL file needs "
        f"{', '.join(REQUIRED_KEYS)} (next_observations optional); {REMAKE}"
    )


def as_numeric(source: str, key: str, value, ndim: tuple[int, ...]) -> np.ndarray:
    """`value` as a numpy array of real numbers with one of the allowed ranks, else MDPTError."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise MDPTError(
            f"{source}: {key!r} has dtype {arr.dtype} (expected numbers: float32, or bool for flags); {REMAKE}"
        )
    if arr.ndim not in ndim:
        want = " or ".join({1: "(N,)", 2: "(N, dim)"}.get(n, f"{n}-D") for n in ndim)
        raise MDPTError(f"{source}: {key!r} has shape {arr.shape} (expected {want}); {REMAKE}")
    return arr


def as_flags(source: str, key: str, value) -> np.ndarray:
    arr = as_vector(source, key, value)
    if arr.dtype.kind == "b":
        return arr.astype(bool)
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise MDPTError(
            f"{source}: {key!r} must hold 0/1 flags but row {i} has {arr[i].item()!r}; {REMAKE}"
        )
    return arr.astype(bool)


def as_vector(source: str, key: str, value) -> np.ndarray:
    arr = as_numeric(source, key, value, (1, 2))
    if arr.ndim == 2:
        if arr.shape[1] != 1:
            raise MDPTError(f"{source}: {key!r} has shape {arr.shape} (expected (N,)); {REMAKE}")
        arr = arr[:, 0]
    return arr


def check_finite(source: str, key: str, arr: np.ndarray) -> None:
    if arr.dtype.kind != "f":
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(arr), -1).any(axis=1))
        raise MDPTError(
            f"{source}: {key!r} contains {int(bad.sum())} NaN/inf value(s) (first at row {int(rows[0])}); "
            "drop or repair those rows, or remake the file (`mdpt data make ID`)"
        )


def build_dataset(
    arrays: Mapping[str, np.ndarray],
    env: EnvSpec,
    *,
    source: str = "<memory>",
    dataset_id: str | None = None,
    attrs: Mapping | None = None,
    notes: tuple[str, ...] | list[str] = (),
) -> Dataset:
    """Check raw D4RL arrays against `env` and return a `Dataset` (float32 / bool).

    `next_observations` may be absent: it is rebuilt from the next row within an episode (at an
    episode end the observation itself stands in, and a note says so).
    """
    notes = list(notes)
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise missing_keys_error(source, missing)

    obs = as_numeric(source, "observations", arrays["observations"], (2,))
    act = as_numeric(source, "actions", arrays["actions"], (2,))
    rew = as_vector(source, "rewards", arrays["rewards"])
    term = as_flags(source, "terminals", arrays["terminals"])
    tout = as_flags(source, "timeouts", arrays["timeouts"])
    nxt = arrays.get("next_observations")
    if nxt is not None:
        nxt = as_numeric(source, "next_observations", nxt, (2,))

    lengths = {"observations": len(obs), "actions": len(act), "rewards": len(rew),
               "terminals": len(term), "timeouts": len(tout)}
    if nxt is not None:
        lengths["next_observations"] = len(nxt)
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k} {v}" for k, v in lengths.items())
        raise MDPTError(f"{source}: arrays have different lengths ({listed}); the file is inconsistent: {REMAKE}")
    n = len(rew)
    if n == 0:
        raise MDPTError(f"{source}: the dataset is empty (0 transitions); {REMAKE}")

    for key, arr, dim in (("observations", obs, env.obs_dim), ("actions", act, env.act_dim),
                          ("next_observations", nxt, env.obs_dim)):
        if arr is not None and arr.shape[1] != dim:
            what = "features" if key != "actions" else "dimensions"
            raise MDPTError(
                f"{source}: {key} have {arr.shape[1]} {what} but {env.env_id} expects {dim}; "
                f"name the right environment (--env) or use a file made for {env.env_id}"
            )

    for key, arr in (("observations", obs), ("actions", act), ("rewards", rew), ("next_observations", nxt)):
        if arr is not None:
            check_finite(source, key, arr)

    act = act.astype(np.float32)
    outside = np.abs(act) > 1.0
    if outside.any():
        worst = float(np.abs(act).max())
        if worst > 1.0 + ACTION_TOLERANCE:
            row = int(np.flatnonzero((np.abs(act) > 1.0 + ACTION_TOLERANCE).any(axis=1))[0])
            raise MDPTError(
                f"{source}: actions outside [-1, 1] (max |a| = {worst:.6g}, first at row {row}); bullet "
                f"action spaces are [-1, 1]: rescale the actions or use another file"
            )
        act = np.clip(act, -1.0, 1.0)
        notes.append(f"clipped {int(outside.sum())} action value(s) within {ACTION_TOLERANCE:g} of [-1, 1]")

    # A row that is both terminal and timeout is a true end: no bootstrap.
    tout = tout & ~term
    obs = obs.astype(np.float32)
    if nxt is None:
        nxt, missing_ends = rebuild_next_observations(obs, term | tout)
        msg = "next_observations rebuilt from the following rows"
        if missing_ends:
            msg += f"; at {missing_ends} episode end(s) without one the observation itself stands in"
        notes.append(msg)
    else:
        nxt = nxt.astype(np.float32)

    ends = (term | tout).copy()
    ends[-1] = True
    lengths_ep = np.diff(np.concatenate([[0], np.flatnonzero(ends) + 1]))
    too_long = int((lengths_ep > env.max_episode_steps).sum())
    if too_long:
        notes.append(f"{too_long} episode(s) longer than the {env.max_episode_steps}-step limit "
                     f"(timeouts may be missing)")

    return Dataset(
        observations=obs,
        actions=act,
        rewards=rew.astype(np.float32),
        terminals=term,
        timeouts=tout,
        next_observations=nxt,
        env=env,
        dataset_id=dataset_id,
        source=source,
        attrs=dict(attrs or {}),
        notes=tuple(notes),
    )


def rebuild_next_observations(obs: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, int]:
    """next_obs[t] = obs[t+1] within an episode; at an episode end (and the last row) obs[t] itself.

    Returns the array and how many rows had to use the stand-in.
    """
    nxt = np.empty_like(obs)
    nxt[:-1] = obs[1:]
    stand_in = ends.copy()
    stand_in[-1] = True
    nxt[stand_in] = obs[stand_in]
    return nxt, int(stand_in.sum())


def derive_timeouts(terminals: np.ndarray, max_steps: int) -> np.ndarray:
    """Mark a timeout wherever an episode (delimited by terminals) reaches `max_steps` transitions."""
    timeouts = np.zeros_like(terminals, dtype=bool)
    count = 0
    for i, t in enumerate(terminals):
        count += 1
        if t:
            count = 0
        elif count >= max_steps:
            timeouts[i] = True
            count = 0
    return timeouts
