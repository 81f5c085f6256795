"""Evaluation: vectorized PyBullet rollouts (`rollout.evaluate`, pipelined with `groups`;
`rollout.evaluate_agent`), score statistics (`stats`) and study evaluation plans (`plan.EvalPlan`)."""
