"""State standardization and reward scaling; serializable so it travels with every saved module."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mdpt.data.dataset import Dataset
from mdpt.errors import MDPTError


@dataclass(frozen=True)
class Normalizer:
    obs_mean: np.ndarray
    obs_std: np.ndarray
    reward_scale: float

    @classmethod
    def fit(cls, data: Dataset, eps: float = 1e-3) -> Normalizer:
        """Per-dimension state mean/std; rewards scaled by 1000 / (max - min episode return)."""
        returns = data.episode_returns
        spread = float(returns.max() - returns.min())
        scale = 1000.0 / spread if spread > 1e-6 else 1.0
        return cls(
            obs_mean=data.observations.mean(0).astype(np.float32),
            obs_std=(data.observations.std(0) + eps).astype(np.float32),
            reward_scale=scale,
        )

    @classmethod
    def identity(cls, obs_dim: int) -> Normalizer:
        return cls(np.zeros(obs_dim, np.float32), np.ones(obs_dim, np.float32), 1.0)

    def normalize_obs(self, obs):
        return (obs - self.obs_mean) / self.obs_std

    def scale_reward(self, reward):
        return reward * self.reward_scale

    def to_json(self) -> dict:
        return {"obs_mean": self.obs_mean.tolist(), "obs_std": self.obs_std.tolist(),
                "reward_scale": float(self.reward_scale)}

    @classmethod
    def from_json(cls, d: dict) -> Normalizer:
        try:
            return cls(np.asarray(d["obs_mean"], np.float32), np.asarray(d["obs_std"], np.float32),
                       float(d["reward_scale"]))
        except (KeyError, TypeError, ValueError) as e:
            raise MDPTError(f"invalid normalizer in metadata ({e.__class__.__name__}: {e})") from None

    def same_as(self, other: Normalizer) -> bool:
        return (np.allclose(self.obs_mean, other.obs_mean) and np.allclose(self.obs_std, other.obs_std)
                and np.isclose(self.reward_scale, other.reward_scale))
