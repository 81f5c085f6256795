"""The baselines on analytic cases: BC recovers the data's mean action; IQL's advantage-weighted
regression recovers the advantage-weighted mean (a two-action bandit with a known answer)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdpt.errors import MDPTError
from mdpt.policies.gaussian import GaussianPolicy, gaussian_log_prob
from mdpt.policies.module import PolicyConfig, make_policy


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
    a, _ = _train(make_policy(PolicyConfig(algo="bc", hidden=32, lr_schedule="constant", lr=3e-3), 3, 2), None)
    np.testing.assert_allclose(a, 0.0, atol=0.03)


def test_awr_recovers_the_advantage_weighted_mean():
    p = make_policy(PolicyConfig(algo="awr", hidden=32, lr_schedule="constant", lr=3e-3, awr_temperature=1.0), 3, 2)
    assert isinstance(p, GaussianPolicy) and p.config.depth == 2  # the IQL actor's 2 x 256 by default
    a, m = _train(p, adv)
    expected = 0.5 * np.tanh(1.0)  # (0.5 e^1 - 0.5 e^-1) / (e^1 + e^-1)
    np.testing.assert_allclose(a, expected, atol=0.03)
    assert float(m["policy/weight_max"][-1]) == pytest.approx(np.e, rel=1e-5)


def test_awr_weights_are_clipped():
    p = make_policy(PolicyConfig(algo="awr", awr_temperature=10.0), 3, 2)
    w = p.weights(jnp.zeros((2, 3)), jnp.array([[0.5, 0.5], [-0.5, -0.5]]), adv)
    np.testing.assert_allclose(np.asarray(w), [100.0, np.exp(-10.0)], rtol=1e-5)
    with pytest.raises(MDPTError, match="--guidance"):
        p.weights(jnp.zeros((2, 3)), jnp.zeros((2, 2)), None)


def test_log_prob_is_the_normal_density():
    from scipy.stats import norm

    mean, log_std, act = jnp.array([0.1, -0.2]), jnp.array([-1.0, 0.5]), jnp.array([0.3, 0.4])
    expected = norm.logpdf(0.3, 0.1, np.exp(-1.0)) + norm.logpdf(0.4, -0.2, np.exp(0.5))
    assert float(gaussian_log_prob(mean, log_std, act)) == pytest.approx(expected, rel=1e-5)


def test_iql_awr_trains_against_a_frozen_guidance_and_evaluates(tiny_hopper_hdf5, tmp_path, run_cli):
    """The baseline runs through the same commands as a diffusion policy: the guidance-first run of
    `awr` against a trained IQL guidance, saved, and evaluated with any guidance (one candidate)."""
    g = tmp_path / "g"
    code, _, err = run_cli("train-guidance", "--kind", "iql", "--dataset", tiny_hopper_hdf5, "--steps", "4",
                           "--batch-size", "8", "--set", "guidance.hidden=8", "--out", g, "--no-progress")
    assert code == 0, err
    code, _, err = run_cli("train-policy", "--algo", "awr", "--mode", "guidance-first", "--guidance", g,
                           "--dataset", tiny_hopper_hdf5, "--steps", "4", "--batch-size", "8", "--set",
                           "policy.hidden=8", "--eval-episodes", "1", "--eval-max-steps", "3", "--out",
                           tmp_path / "awr", "--no-progress")
    assert code == 0, err
    from mdpt.artifacts import load_policy

    art = load_policy(tmp_path / "awr")
    assert isinstance(art.module, GaussianPolicy) and art.module.config.awr_temperature == 3.0


def test_awr_needs_a_guidance_with_a_value():
    from mdpt.experiments.config import RunConfig

    with pytest.raises(MDPTError, match="V\\(s\\)"):
        RunConfig.from_dict({"algo": "awr", "dataset": "bullet-hopper-medium-v0", "guidance": {"kind": "dql-critic"}})
    RunConfig.from_dict({"algo": "bc", "dataset": "bullet-hopper-medium-v0", "guidance": {"kind": "dql-critic"}})
