"""Random keys per training seed. Seed `s` draws from ``fold_in(PRNGKey(stream), s)`` whatever seeds
run beside it in the same vmapped program, so seeds trained and evaluated in separate runs (the
shards of a reproduction, `mdpt reproduce --merge`) draw exactly what they draw in one run."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

EVAL_ENV_SEED = 1000  # evaluation episode e starts from env seed EVAL_ENV_SEED + e, for every policy seed


def seed_keys(stream: int | jax.Array, seeds: Sequence[int]) -> jax.Array:
    """One key per seed (shape (S, 2)): `stream` (an int, or a key) folded with each seed's number."""
    base = jax.random.PRNGKey(stream) if isinstance(stream, int) else stream
    return jax.vmap(lambda s: jax.random.fold_in(base, s))(jnp.asarray(list(seeds), jnp.uint32))
