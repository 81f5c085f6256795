"""Environments and dataset ids, as families.

- **bullet**: D4RL's PyBullet ids `bullet-{env}-{quality}-v0` on `*BulletEnv-v0` (pybullet-envs-gymnasium);
- **d4rl-mujoco**: D4RL's MuJoCo v2 ids `{env}-{quality}-v2`, collected on gym's `*-v3` MuJoCo envs with
  mujoco-py and evaluated here on Gymnasium's `*-v5` envs (same observations and actions for hopper,
  halfcheetah and walker2d; ant differs and is refused, see `d4rl_mismatch`);
- **gymnasium**: any registered Gymnasium env with flat Box spaces that a dataset names (Minari
  datasets name theirs in their metadata, D4RL files in their `env_id` attribute): sizes and episode
  length are read from the env itself, so a new env needs no code change. Gymnasium's MuJoCo `*-v5`
  envs (`Hopper-v5`, ...) are of this family, with D4RL's MuJoCo reference scores attached.

Reference scores are D4RL's `d4rl/infos.py` (Farama-Foundation/D4RL, commit 89141a6), cited per value.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from mdpt.errors import MDPTError


@dataclass(frozen=True)
class EnvSpec:
    name: str  # short name: hopper, halfcheetah, ... (the Gymnasium id for other envs)
    env_id: str  # Gymnasium id
    obs_dim: int
    act_dim: int
    max_episode_steps: int
    # D4RL infos.py constants (min = random policy, max = expert); None: D4RL has none for this env.
    d4rl_min: float | None = None
    d4rl_max: float | None = None
    family: str = "bullet"  # bullet | gymnasium


# D4RL infos.py REF_MIN_SCORE / REF_MAX_SCORE for the bullet family: lines 170/260 (halfcheetah),
# 175/265 (hopper), 180/270 (ant), 185/275 (walker2d); the same constants for every quality.
ENVS: dict[str, EnvSpec] = {
    "hopper": EnvSpec("hopper", "HopperBulletEnv-v0", 15, 3, 1000, 20.058972, 1441.8059623430963),
    "halfcheetah": EnvSpec("halfcheetah", "HalfCheetahBulletEnv-v0", 26, 6, 1000, -1275.766996, 2381.6725),
    "walker2d": EnvSpec("walker2d", "Walker2DBulletEnv-v0", 22, 6, 1000, 16.523877, 1623.6476303317536),
    "ant": EnvSpec("ant", "AntBulletEnv-v0", 28, 8, 1000, 373.705955, 2650.495),
}
# Gymnasium's MuJoCo envs (package `mujoco`) with D4RL's MuJoCo constants, which infos.py gives every
# v2 id (lines 297-302: the `{env}-random-v0` values): REF_MIN_SCORE lines 129 (halfcheetah), 134
# (walker2d), 139 (hopper), 144 (ant); REF_MAX_SCORE lines 219, 224, 229, 234.
MUJOCO_ENVS: dict[str, EnvSpec] = {
    "hopper": EnvSpec("hopper", "Hopper-v5", 11, 3, 1000, -20.272305, 3234.3, "gymnasium"),
    "halfcheetah": EnvSpec("halfcheetah", "HalfCheetah-v5", 17, 6, 1000, -280.178953, 12135.0, "gymnasium"),
    "walker2d": EnvSpec("walker2d", "Walker2d-v5", 17, 6, 1000, 1.629008, 4592.3, "gymnasium"),
    "ant": EnvSpec("ant", "Ant-v5", 105, 8, 1000, -325.6, 3879.7, "gymnasium"),
}
QUALITIES = ("random", "medium", "expert", "medium-replay", "medium-expert")
REFERENCES = ("d4rl", "dataset", "raw")

BULLET_IDS: tuple[str, ...] = tuple(f"bullet-{e}-{q}-v0" for e in ENVS for q in QUALITIES)
MUJOCO_V2_IDS: tuple[str, ...] = tuple(f"{e}-{q}-v2" for e in MUJOCO_ENVS for q in QUALITIES)
DATASET_IDS: tuple[str, ...] = BULLET_IDS + MUJOCO_V2_IDS  # the D4RL ids MDPT resolves (data dir, download)

# D4RL's download locations (infos.py DATASET_URLS: bullet lines 79-98, e.g. bullet-hopper_medium.hdf5;
# MuJoCo v2 line 300, e.g. gym_mujoco_v2/hopper_medium_expert-v2.hdf5).
D4RL_BULLET_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/bullet/bullet-{env}_{quality}.hdf5"
D4RL_MUJOCO_V2_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/{env}_{quality}-v2.hdf5"

# A Minari id: `namespace/.../name-vN` (https://minari.farama.org: mujoco/hopper/medium-v0).
MINARI_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*/[A-Za-z0-9_.-]+-v\d+$")


@dataclass(frozen=True)
class DatasetInfo:
    dataset_id: str
    env: EnvSpec
    quality: str
    family: str = "bullet"  # bullet | d4rl-mujoco

    @property
    def url(self) -> str:
        template = D4RL_BULLET_URL if self.family == "bullet" else D4RL_MUJOCO_V2_URL
        return template.format(env=self.env.name, quality=self.quality.replace("-", "_"))


def parse_dataset_id(dataset_id: str) -> DatasetInfo:
    if dataset_id in BULLET_IDS:
        _, env_name, rest = dataset_id.split("-", 2)
        return DatasetInfo(dataset_id, ENVS[env_name], rest[: -len("-v0")], "bullet")
    if dataset_id in MUJOCO_V2_IDS:
        env_name, rest = dataset_id.split("-", 1)
        return DatasetInfo(dataset_id, MUJOCO_ENVS[env_name], rest[: -len("-v2")], "d4rl-mujoco")
    raise MDPTError(f"unknown dataset id {dataset_id!r}; known ids: bullet-{{env}}-{{quality}}-v0, "
                    f"{{env}}-{{quality}}-v2 (env: {', '.join(ENVS)}; quality: {', '.join(QUALITIES)}), or a "
                    f"Minari id such as mujoco/hopper/medium-v0")


def is_minari_id(text: str) -> bool:
    return bool(MINARI_ID.match(text)) and not text.startswith((".", "/"))


def d4rl_mismatch(info: DatasetInfo) -> str | None:
    """Why D4RL's v2 data cannot be evaluated on today's Gymnasium env, or None when it can."""
    if info.family == "d4rl-mujoco" and info.env.name == "ant":
        return (f"{info.dataset_id}: D4RL's ant data has 111 observation features (gym Ant-v3 under mujoco-py: "
                f"27 positions and velocities + 84 contact forces), Gymnasium's Ant-v5 has 105 and computes contact "
                f"forces differently; MDPT does not map one onto the other: use Minari's mujoco/ant/*-v0 datasets "
                f"(collected on Ant-v5)")
    return None


def env_spec_for(env: str) -> EnvSpec:
    """A bullet short name ('hopper') or id ('HopperBulletEnv-v0'), or any registered Gymnasium id with
    flat Box spaces ('Hopper-v5', ...), read from the env itself."""
    for spec in ENVS.values():
        if env in (spec.name, spec.env_id):
            return spec
    for spec in MUJOCO_ENVS.values():
        if env == spec.env_id:
            return spec
    return gymnasium_spec(env)


@functools.lru_cache(maxsize=64)
def gymnasium_spec(env_id: str) -> EnvSpec:
    """Sizes and episode length of a registered Gymnasium env with flat Box spaces, read from one
    instance; actions must lie in [-1, 1] (the diffusion policies sample in that box)."""
    import gymnasium as gym
    import numpy as np

    known = ", ".join([s.env_id for s in ENVS.values()] + [s.env_id for s in MUJOCO_ENVS.values()])
    try:
        gym.spec(env_id)
    except Exception:
        raise MDPTError(f"unknown environment {env_id!r}: not a registered Gymnasium id (known families: {known}, "
                        f"or any installed Gymnasium env with Box spaces); install its package or pass --env") from None
    try:
        env = gym.make(env_id, disable_env_checker=True)
    except Exception as e:
        raise MDPTError(f"cannot create {env_id} ({e.__class__.__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
                        f"install what it needs (MuJoCo envs: pip install mujoco)") from None
    try:
        obs, act, limit = env.observation_space, env.action_space, env.spec.max_episode_steps if env.spec else None
    finally:
        env.close()
    for what, space in (("observation", obs), ("action", act)):
        if type(space).__name__ != "Box" or len(space.shape) != 1:
            raise MDPTError(f"{env_id}: its {what} space is {space}; MDPT needs flat Box observations and actions")
    if not (np.allclose(act.low, -1.0) and np.allclose(act.high, 1.0)):
        raise MDPTError(f"{env_id}: actions lie in [{act.low.min():g}, {act.high.max():g}], not [-1, 1]; wrap the env "
                        f"to rescale its actions to [-1, 1] and register the wrapped id")
    if not limit:
        raise MDPTError(f"{env_id}: no time limit (max_episode_steps); register it with one to evaluate on it")
    return EnvSpec(env_id, env_id, int(obs.shape[0]), int(act.shape[0]), int(limit), family="gymnasium")


def normalized_score(ret, env: EnvSpec, reference: str = "d4rl", attrs: dict | None = None):
    """100 * (R - min) / (max - min) with an explicit reference ('d4rl', 'dataset'); 'raw' is R itself."""
    lo, hi = reference_bounds(env, reference, attrs)
    return 100.0 * (ret - lo) / (hi - lo)


def available_reference(env: EnvSpec, reference: str, attrs: dict | None = None) -> str:
    """`reference` when the env and data have it, else what stands in (and is then recorded): D4RL's
    constants -> the data's own reference -> raw returns; the data's own -> raw returns."""
    if reference not in REFERENCES:
        raise MDPTError(f"unknown score reference {reference!r}; use one of: {', '.join(REFERENCES)}")
    has_own = bool(attrs) and "ref_min_score" in attrs and "ref_max_score" in attrs
    if reference == "d4rl" and env.d4rl_min is None:
        return "dataset" if has_own else "raw"
    if reference == "dataset" and not has_own:
        return "raw"
    return reference


def reference_bounds(env: EnvSpec, reference: str, attrs: dict | None = None) -> tuple[float, float]:
    if reference == "d4rl":
        if env.d4rl_min is None or env.d4rl_max is None:
            raise MDPTError(f"D4RL has no reference scores for {env.env_id}; use --reference dataset (the data's own "
                            f"ref_min_score/ref_max_score) or raw")
        return env.d4rl_min, env.d4rl_max
    if reference == "dataset":
        attrs = attrs or {}
        if "ref_min_score" not in attrs or "ref_max_score" not in attrs:
            raise MDPTError("reference 'dataset' needs ref_min_score/ref_max_score in the file's attrs "
                            "(files made by `mdpt data make` have them); use --reference d4rl or raw")
        return float(attrs["ref_min_score"]), float(attrs["ref_max_score"])
    if reference == "raw":
        return 0.0, 100.0  # 100 * (R - 0) / 100 = R: the return itself
    raise MDPTError(f"unknown score reference {reference!r}; use one of: {', '.join(REFERENCES)}")
