"""Dataset ids of the D4RL bullet family, their environments and reference scores."""

from __future__ import annotations

from dataclasses import dataclass

from mdpt.errors import MDPTError


@dataclass(frozen=True)
class EnvSpec:
    name: str  # short name: hopper, halfcheetah, ...
    env_id: str  # Gymnasium id registered by pybullet-envs-gymnasium
    obs_dim: int
    act_dim: int
    max_episode_steps: int
    # D4RL infos.py constants for the bullet family (min = random policy, max = expert).
    d4rl_min: float
    d4rl_max: float


ENVS: dict[str, EnvSpec] = {
    "hopper": EnvSpec("hopper", "HopperBulletEnv-v0", 15, 3, 1000, 20.058972, 1441.8059623430963),
    "halfcheetah": EnvSpec("halfcheetah", "HalfCheetahBulletEnv-v0", 26, 6, 1000, -1275.766996, 2381.6725),
    "walker2d": EnvSpec("walker2d", "Walker2DBulletEnv-v0", 22, 6, 1000, 16.523877, 1623.6476303317536),
    "ant": EnvSpec("ant", "AntBulletEnv-v0", 28, 8, 1000, 373.705955, 2650.495),
}
QUALITIES = ("random", "medium", "expert", "medium-replay", "medium-expert")
REFERENCES = ("d4rl", "dataset")

DATASET_IDS: tuple[str, ...] = tuple(f"bullet-{e}-{q}-v0" for e in ENVS for q in QUALITIES)

# D4RL's download location for the bullet family (takuseno's d4rl-pybullet mirror layout).
D4RL_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/bullet/{dataset_id}.hdf5"


@dataclass(frozen=True)
class DatasetInfo:
    dataset_id: str
    env: EnvSpec
    quality: str


def parse_dataset_id(dataset_id: str) -> DatasetInfo:
    if dataset_id not in DATASET_IDS:
        raise MDPTError(f"unknown dataset id {dataset_id!r}; known ids: {', '.join(DATASET_IDS)}")
    _, env_name, rest = dataset_id.split("-", 2)
    return DatasetInfo(dataset_id, ENVS[env_name], rest[: -len("-v0")])


def env_spec_for(env: str) -> EnvSpec:
    """Accept a short name ('hopper') or a Gymnasium id ('HopperBulletEnv-v0')."""
    for spec in ENVS.values():
        if env in (spec.name, spec.env_id):
            return spec
    known = ", ".join(s.env_id for s in ENVS.values())
    raise MDPTError(f"unknown environment {env!r}; known environments: {known}")


def normalized_score(ret, env: EnvSpec, reference: str = "d4rl", attrs: dict | None = None):
    """100 * (R - min) / (max - min) with an explicit reference ('d4rl' or 'dataset')."""
    lo, hi = reference_bounds(env, reference, attrs)
    return 100.0 * (ret - lo) / (hi - lo)


def reference_bounds(env: EnvSpec, reference: str, attrs: dict | None = None) -> tuple[float, float]:
    if reference == "d4rl":
        return env.d4rl_min, env.d4rl_max
    if reference == "dataset":
        attrs = attrs or {}
        if "ref_min_score" not in attrs or "ref_max_score" not in attrs:
            raise MDPTError("reference 'dataset' needs ref_min_score/ref_max_score in the file's attrs "
                            "(files made by `mdpt data make` have them); use --reference d4rl")
        return float(attrs["ref_min_score"]), float(attrs["ref_max_score"])
    raise MDPTError(f"unknown score reference {reference!r}; use one of: {', '.join(REFERENCES)}")
