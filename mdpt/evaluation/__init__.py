"""Evaluation: vectorized PyBullet rollouts (`rollout.evaluate`, pipelined with `groups`;
`rollout.evaluate_agent`) and score statistics (`stats`). A study's evaluation plan (cheaper curve points,
full-protocol final points) is run configuration: `eval.episodes`, `eval.final_episodes`, `eval.curve_candidates`."""
