"""Evaluation: vectorized PyBullet rollouts (`rollout.evaluate`) and score statistics (`stats`)."""
