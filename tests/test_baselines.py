"""The baselines on analytic cases: BC recovers the data's mean action; IQL's advantage-weighted
regression recovers the advantage-weighted mean (a two-action bandit with a known answer)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdpt.errors import MDPTError
from mdpt.policies.gaussian import GaussianConfig, GaussianPolicy, gaussian_log_prob


def _train(policy, adv_fn, steps=1500):
    obs = jnp.zeros((256, 3))
    act = jnp.where(jnp.arange(256)[:, None] % 2 == 0, 0.5, -0.5) * jnp.ones((256, 2))
    state = policy.init(jax.random.PRNGKey(0))

    @jax.jit
    def run(state):
        def body(s, _):
            return policy.update(s, {"obs": obs, "act": act}, jax.random.PRNGKey(1), adv_fn=adv_fn)
        return jax.lax.scan(body, state, None, length=steps)

    state, metrics = run(state)
    return np.asarray(policy.sample(state["ema"], jnp.zeros((4, 3)), jax.random.PRNGKey(2))), metrics


def adv(obs, act):  # +1 for the action at +0.5, -1 for the one at -0.5
    return jnp.sign(act[:, 0])


def test_bc_recovers_the_mean_action():
    a, _ = _train(GaussianPolicy(GaussianConfig(algo="bc", hidden=32, lr_schedule="constant", lr=3e-3), 3, 2), None)
    np.testing.assert_allclose(a, 0.0, atol=0.03)


def test_awr_recovers_the_advantage_weighted_mean():
    p = GaussianPolicy(GaussianConfig(algo="awr", hidden=32, lr_schedule="constant", lr=3e-3, awr_temperature=1.0), 3, 2)
    a, m = _train(p, adv)
    expected = 0.5 * np.tanh(1.0)  # (0.5 e^1 - 0.5 e^-1) / (e^1 + e^-1)
    np.testing.assert_allclose(a, expected, atol=0.03)
    assert float(m["policy/weight_max"][-1]) == pytest.approx(np.e, rel=1e-5)


def test_awr_weights_are_clipped():
    p = GaussianPolicy(GaussianConfig(awr_temperature=10.0, awr_weight_max=100.0), 3, 2)
    w = p.weights(jnp.zeros((2, 3)), jnp.array([[0.5, 0.5], [-0.5, -0.5]]), adv)
    np.testing.assert_allclose(np.asarray(w), [100.0, np.exp(-10.0)], rtol=1e-5)
    with pytest.raises(MDPTError, match="--guidance"):
        p.weights(jnp.zeros((2, 3)), jnp.zeros((2, 2)), None)


def test_log_prob_is_the_normal_density():
    from scipy.stats import norm

    mean, log_std, act = jnp.array([0.1, -0.2]), jnp.array([-1.0, 0.5]), jnp.array([0.3, 0.4])
    expected = norm.logpdf(0.3, 0.1, np.exp(-1.0)) + norm.logpdf(0.4, -0.2, np.exp(0.5))
    assert float(gaussian_log_prob(mean, log_std, act)) == pytest.approx(expected, rel=1e-5)
