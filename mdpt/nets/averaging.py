"""Parameter averaging shared by target networks and EMA policies."""

import jax


def polyak(target, online, tau: float):
    """target <- (1 - tau) target + tau online (tau is the online weight, e.g. 0.005)."""
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)
