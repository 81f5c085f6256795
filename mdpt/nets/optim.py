"""Optimizers used by guidance and policies."""

from __future__ import annotations

import optax


def adam(lr: float, schedule: str = "constant", total_steps: int | None = None,
         grad_clip: float | None = None, weight_decay: float = 0.0) -> optax.GradientTransformation:
    """Adam(W) with an optional cosine decay of the learning rate to 0 over `total_steps`."""
    if schedule == "cosine" and total_steps:
        lr = optax.cosine_decay_schedule(lr, max(int(total_steps), 1))
    opt = optax.adamw(lr, weight_decay=weight_decay) if weight_decay else optax.adam(lr)
    if grad_clip:
        opt = optax.chain(optax.clip_by_global_norm(grad_clip), opt)
    return opt
