"""Device-resident training data and jittable batch sampling (no host round-trip per step)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mdpt.data.dataset import Dataset
from mdpt.data.normalizer import Normalizer

Batch = dict  # {'obs','act','rew','mask','next_obs','next_act','next_valid'} -> arrays with a leading batch axis


def device_arrays(data: Dataset, normalizer: Normalizer) -> Batch:
    """The whole dataset, normalized, as device arrays (the source every batch is drawn from)."""
    arrays = {
        "obs": normalizer.normalize_obs(data.observations),
        "act": data.actions,
        "rew": normalizer.scale_reward(data.rewards),
        "mask": data.masks,
        "next_obs": normalizer.normalize_obs(data.next_observations),
        "next_act": data.next_actions,
        "next_valid": data.next_action_valid,
    }
    return {k: jnp.asarray(np.asarray(v, np.float32)) for k, v in arrays.items()}


def stack_arrays(datasets: list[Batch]) -> Batch:
    """Device arrays of several datasets (one environment: equal sizes per row) stacked along a
    leading axis, each padded to the longest; `size` holds each one's true length, and batches
    are drawn from the first `size` rows only."""
    longest = max(int(a["rew"].shape[0]) for a in datasets)

    def pad(x):
        extra = longest - x.shape[0]
        return jnp.concatenate([x, jnp.broadcast_to(x[:1], (extra,) + x.shape[1:])]) if extra else x

    stacked = {k: jnp.stack([pad(a[k]) for a in datasets]) for k in datasets[0] if k != "size"}
    stacked["size"] = jnp.asarray([int(a["rew"].shape[0]) for a in datasets], jnp.int32)
    return stacked


def sample_batch(arrays: Batch, key: jax.Array, batch_size: int) -> Batch:
    """Uniform minibatch with replacement, drawn on device from a PRNG key."""
    n = arrays["size"] if "size" in arrays else arrays["rew"].shape[0]
    idx = jax.random.randint(key, (batch_size,), 0, n)
    return {k: v[idx] for k, v in arrays.items() if k != "size"}
