"""Optimizers used by guidance and policies."""

from __future__ import annotations

import optax


def make_optimizer(lr: float, schedule: str = "constant", decay_steps: int | None = None,
                   grad_clip: float | None = None, weight_decay: float = 0.0) -> optax.GradientTransformation:
    """Adam, or AdamW with `weight_decay` > 0; an optional cosine decay of the learning rate to 0
    over `decay_steps` (then held at 0) and global gradient-norm clipping before the update."""
    if schedule == "cosine" and decay_steps:
        lr = optax.cosine_decay_schedule(lr, max(int(decay_steps), 1))
    opt = optax.adamw(lr, weight_decay=weight_decay) if weight_decay else optax.adam(lr)
    if grad_clip:
        # the clip norm lives in the optimizer state, so that runs with different clip norms
        # (Diffusion-QL's per-task values) can share one compiled program (experiments/group.py)
        opt = optax.chain(optax.inject_hyperparams(optax.clip_by_global_norm)(max_norm=float(grad_clip)), opt)
    return opt
