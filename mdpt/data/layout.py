"""Array layouts of D4RL-style data: the modern D4RL layout, and the legacy d4rl-pybullet one converted to it.

`normalize_layout` brings raw arrays (from any reader) to the D4RL layout and says what it did:
files without `timeouts` get them derived from episode lengths, and d4rl-pybullet files (rewards
shifted by one step, a zero-action row closing each episode) are converted.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mdpt.data.checks import (
    REQUIRED_KEYS,
    as_flags,
    as_numeric,
    as_vector,
    derive_timeouts,
    missing_keys_error,
)
from mdpt.data.registry import EnvSpec
from mdpt.errors import MDPTError


def is_legacy_layout(arrays: Mapping[str, np.ndarray]) -> bool:
    """The d4rl-pybullet layout: no `timeouts`, and every terminal row has an all-zero action."""
    if "timeouts" in arrays or not all(k in arrays for k in ("observations", "actions", "rewards", "terminals")):
        return False
    try:
        _, act, _, term = _core_arrays("<arrays>", arrays)
    except MDPTError:
        return False
    return bool(term.any()) and bool(np.all(act[term] == 0))


def _core_arrays(source: str, arrays: Mapping[str, np.ndarray]):
    obs = as_numeric(source, "observations", arrays["observations"], (2,))
    act = as_numeric(source, "actions", arrays["actions"], (2,))
    rew = as_vector(source, "rewards", arrays["rewards"])
    term = as_flags(source, "terminals", arrays["terminals"])
    lengths = {"observations": len(obs), "actions": len(act), "rewards": len(rew), "terminals": len(term)}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k} {v}" for k, v in lengths.items())
        raise MDPTError(f"{source}: arrays have different lengths ({listed}); the file is inconsistent: "
                        "fix the file or remake it (`mdpt data make ID`)")
    return obs, act, rew, term


def normalize_layout(source: str, arrays: dict[str, np.ndarray], env: EnvSpec) -> tuple[dict, list[str]]:
    """Bring the arrays to the modern D4RL layout; return them with notes on what was done."""
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if "timeouts" in arrays or len(missing) > 1:
        if missing:
            raise missing_keys_error(source, missing)
        return arrays, []
    obs, act, rew, term = _core_arrays(source, arrays)
    core = {"observations": obs, "actions": act, "rewards": rew, "terminals": term}
    if term.any() and np.all(act[term] == 0):
        return convert_legacy_pybullet(core, env.max_episode_steps)
    out = dict(arrays, **core)
    out["timeouts"] = derive_timeouts(term, env.max_episode_steps)
    return out, [f"no 'timeouts' in the file: episodes end at terminals or after {env.max_episode_steps} "
                 f"steps ({int(out['timeouts'].sum())} timeout(s) derived)"]


def convert_legacy_pybullet(arrays: Mapping[str, np.ndarray], max_steps: int = 1000) -> tuple[dict, list[str]]:
    """Convert the d4rl-pybullet layout to D4RL's.

    There, an episode with transitions (o_t, a_t, r_t, o_{t+1}), t < T, is stored as T + 1 rows:
    row t holds o_t, a_t and the reward r_{t-1} of the transition *into* o_t (0 at t = 0); row T
    holds o_T, a zero action, r_{T-1} and terminal = 1. Converted: rewards shifted back one row,
    the closing rows dropped (their observation becomes the last next_observation), and the
    episode end marked as a timeout if the episode ran `max_steps` transitions, else a terminal.
    Rows after the last closing row (a cut episode) keep all but their last row, ending in a timeout.
    """
    obs = np.asarray(arrays["observations"])
    act = np.asarray(arrays["actions"])
    rew = np.asarray(arrays["rewards"])
    if rew.ndim == 2:
        rew = rew[:, 0]
    term = np.asarray(arrays["terminals"]).astype(bool)
    n = len(obs)
    closing = np.flatnonzero(term)
    starts = np.concatenate([[0], closing + 1])
    stops = np.concatenate([closing, [n - 1]])  # exclusive of the closing row; a cut tail drops its last row
    keep_idx, ends_term, ends_tout = [], [], []
    episodes = timeouts = terminals = 0
    cut = False
    for k, (s, e) in enumerate(zip(starts, stops, strict=True)):
        if e <= s:
            continue
        idx = np.arange(s, e)
        keep_idx.append(idx)
        length = e - s
        episodes += 1
        t = np.zeros(length, bool)
        o = np.zeros(length, bool)
        if k == len(closing):  # rows after the last closing row: cut by the end of the file
            o[-1] = True
            cut = True
        elif length >= max_steps:
            o[-1] = True
            timeouts += 1
        else:
            t[-1] = True
            terminals += 1
        ends_term.append(t)
        ends_tout.append(o)
    if not keep_idx:
        empty = {k: np.asarray(arrays[k])[:0] for k in ("observations", "actions", "rewards", "terminals")}
        empty["timeouts"] = np.zeros(0, bool)
        return empty, ["legacy d4rl-pybullet layout: no complete transition"]
    idx = np.concatenate(keep_idx)
    out = {
        "observations": obs[idx],
        "actions": act[idx],
        "rewards": rew[idx + 1],
        "next_observations": obs[idx + 1],
        "terminals": np.concatenate(ends_term),
        "timeouts": np.concatenate(ends_tout),
    }
    dropped = n - len(idx)
    note = (f"converted the legacy d4rl-pybullet layout: rewards shifted back one step, {dropped} "
            f"episode-closing row(s) dropped, next_observations taken from the following rows, "
            f"{terminals} terminal(s) and {timeouts} timeout(s) derived from {max_steps}-step episode lengths")
    if cut:
        note += "; the final cut episode ends in a timeout"
    return out, [note]
