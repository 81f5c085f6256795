"""How strongly does each algorithm's inference-time selection pick among its candidates?

Usage: python results/selection-spread/selection_spread.py RUNS_DIR   (a reproduction's runs/<dataset>/)

Over 64 dataset states: 256 candidates from each joint run's final policy, scored by its own guidance
(target critic, min-Q); the selection softmax(beta * min-Q) at the preset's beta. The effective number
of candidates is exp(entropy) of that softmax: 256 means the guidance is inert (plain sampling).
"""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mdpt.artifacts import load_guidance, load_policy
from mdpt.data.load import load_dataset

CANDIDATES = 256
RUNS = (("idql-joint", 0.5), ("dql-joint", 100.0))  # the presets' beta: IQL's 0.5, DQL's hopper beta


def first_seed(tree):
    return jax.tree.map(lambda x: x[0], tree)


def main(runs_dir: Path) -> None:
    data = load_dataset(runs_dir.name)
    idx = np.random.default_rng(0).choice(len(data.observations), 64, replace=False)
    obs = jnp.asarray(data.observations[idx], jnp.float32)
    for run, beta in RUNS:
        policy, guidance = load_policy(runs_dir / run / "policy"), load_guidance(runs_dir / run / "guidance")
        p_obs = jnp.repeat(policy.normalizer.normalize_obs(obs), CANDIDATES, axis=0)
        cands = policy.module.sample(first_seed(policy.params), p_obs, jax.random.PRNGKey(0), 0.5, 1.0)
        g_obs = guidance.normalizer.normalize_obs(jnp.repeat(obs, CANDIDATES, axis=0))
        params = guidance.module.scoring_params(first_seed(guidance.params), "target")
        q = guidance.module.q_min(params, g_obs, cands).reshape(-1, CANDIDATES)
        p = jax.nn.softmax(beta * q, -1)
        effective = jnp.exp(-(p * jnp.log(p + 1e-30)).sum(-1))
        spread = cands.reshape(-1, CANDIDATES, cands.shape[-1]).std(1).mean()
        print(f"{run}: beta {beta:g}: min-Q range over {CANDIDATES} candidates (median over states) "
              f"{float(jnp.median(q.max(-1) - q.min(-1))):.3f}; effective candidates {float(jnp.median(effective)):.1f} "
              f"of {CANDIDATES}; top probability {float(jnp.median(p.max(-1))):.3f}; action std across candidates "
              f"{float(spread):.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
