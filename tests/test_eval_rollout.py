import numpy as np
import pytest

from mdpt.data.registry import ENVS, normalized_score
from mdpt.errors import MDPTError
from mdpt.evaluation.rollout import EvalResult, evaluate

HOPPER = ENVS["hopper"]


def seeded_random(act_dim, per_policy=False):
    """Uniform random actions that depend only on the step index (and policy if per_policy)."""

    def act(obs, i):
        p, e, _ = obs.shape
        rng = np.random.default_rng(i)
        if per_policy:
            return rng.uniform(-1, 1, (p, e, act_dim))
        return np.broadcast_to(rng.uniform(-1, 1, (1, e, act_dim)), (p, e, act_dim))

    return act


def test_shapes_types_and_one_call_per_step():
    calls = []

    def act(obs, i):
        calls.append((obs.shape, obs.dtype, i))
        return np.zeros((2, 3, 3))

    r = evaluate(act, HOPPER, num_policies=2, episodes=3, seed=0, max_steps=50)
    assert isinstance(r, EvalResult)
    assert r.returns.shape == r.lengths.shape == r.terminated.shape == (2, 3)
    assert r.returns.dtype == np.float64 and r.lengths.dtype == np.int64
    assert len(calls) == r.steps <= 50
    assert [c[2] for c in calls] == list(range(r.steps))
    assert all(c[0] == (2, 3, 15) and c[1] == np.float32 for c in calls)
    assert np.all(r.lengths >= 1) and np.all(r.lengths <= 50) and r.lengths.max() == r.steps
    # terminated implies finished; episodes still running at the end ran every step
    assert np.all(r.finished[r.terminated])
    assert np.all(r.lengths[~r.finished] == r.steps)
    assert r.sim_seconds > 0 and r.policy_seconds >= 0 and r.setup_seconds > 0
    assert r.sim_seconds + r.policy_seconds + r.setup_seconds <= r.total_seconds + 1e-6
    assert 0 < r.sim_fraction <= 1
    np.testing.assert_allclose(r.scores("d4rl"), normalized_score(r.returns, HOPPER, "d4rl"))
    d = r.to_dict(reference="d4rl")
    assert d["scores"] == r.scores().tolist() and d["returns"] == r.returns.tolist()


def test_same_seed_same_returns_and_other_seed_differs():
    def act(obs, i):  # the same action in every episode at a given step
        return np.broadcast_to(np.random.default_rng(i).uniform(-1, 1, 3), obs.shape[:2] + (3,))

    a = evaluate(act, HOPPER, 1, 3, seed=7, max_steps=40)
    b = evaluate(act, HOPPER, 1, 3, seed=7, max_steps=40)
    c = evaluate(act, HOPPER, 1, 3, seed=8, max_steps=40)
    np.testing.assert_array_equal(a.returns, b.returns)
    np.testing.assert_array_equal(a.lengths, b.lengths)
    assert not np.array_equal(a.returns, c.returns)
    # seeds are seed + e: episode 1 of seed 7 is episode 0 of seed 8 (same actions at each step)
    np.testing.assert_array_equal(a.returns[0, 1:], c.returns[0, :2])


def test_policies_share_start_states():
    first = {}

    def act(obs, i):
        if i == 0:
            first["obs"] = obs.copy()
        return seeded_random(3, per_policy=True)(obs, i)

    r = evaluate(act, HOPPER, 3, 2, seed=0, max_steps=30)
    obs = first["obs"]
    np.testing.assert_array_equal(obs[0], obs[1])
    np.testing.assert_array_equal(obs[0], obs[2])
    assert not np.array_equal(obs[0, 0], obs[0, 1])  # different episodes start differently
    assert not np.array_equal(r.returns[0], r.returns[1])  # different actions -> different returns

    same = evaluate(seeded_random(3), HOPPER, 3, 2, seed=0, max_steps=30)
    np.testing.assert_array_equal(same.returns[0], same.returns[1])
    np.testing.assert_array_equal(same.returns[0], same.returns[2])


def test_actions_are_clipped_and_jax_arrays_accepted():
    jnp = pytest.importorskip("jax.numpy")
    big = evaluate(lambda o, i: np.full((1, 2, 3), 50.0), HOPPER, 1, 2, max_steps=25)
    one = evaluate(lambda o, i: jnp.ones((1, 2, 3)), HOPPER, 1, 2, max_steps=25)
    np.testing.assert_array_equal(big.returns, one.returns)


def test_nonfinite_actions_are_zeroed_and_counted():
    nan = evaluate(lambda o, i: np.full((1, 2, 3), np.nan), HOPPER, 1, 2, max_steps=10)
    zero = evaluate(lambda o, i: np.zeros((1, 2, 3)), HOPPER, 1, 2, max_steps=10)
    np.testing.assert_array_equal(nan.returns, zero.returns)
    assert nan.nonfinite_actions == 3 * nan.lengths.sum() and zero.nonfinite_actions == 0


def test_episode_ends_are_respected():
    """After an env is done its rewards are ignored and its observation stays frozen."""
    seen = []

    def act(obs, i):
        seen.append(obs.copy())
        return np.ones((1, 4, 3))  # full torque: hopper falls within a few dozen steps

    r = evaluate(act, HOPPER, 1, 4, seed=0)
    assert r.finished.all() and r.terminated.all()
    assert r.steps == r.lengths.max() < HOPPER.max_episode_steps
    for e in range(4):
        n = r.lengths[0, e]
        for later in seen[n:]:  # obs passed after the end equals the last live one
            np.testing.assert_array_equal(later[0, e], seen[n - 1][0, e])
    # each episode alone gives the same return as inside the batch
    solo = evaluate(lambda o, i: np.ones((1, 1, 3)), HOPPER, 1, 1, seed=2)
    assert solo.returns[0, 0] == r.returns[0, 2] and solo.lengths[0, 0] == r.lengths[0, 2]


def test_random_actions_score_near_zero_with_d4rl_reference():
    # hopper random episodes are short (~10-30 steps); halfcheetah's run the full 1000 steps
    hop = evaluate(seeded_random(3, per_policy=True), HOPPER, 2, 8, seed=0)
    assert hop.finished.all()
    assert abs(hop.scores().mean()) < 2.0
    cheetah = evaluate(seeded_random(6, per_policy=True), "HalfCheetahBulletEnv-v0", 1, 3, seed=0)
    assert cheetah.finished.all() and np.all(cheetah.lengths <= 1000)
    assert abs(cheetah.scores().mean()) < 6.0


def test_async_matches_sync():
    act = seeded_random(3)
    a = evaluate(act, HOPPER, 1, 2, seed=3, max_steps=20, vector="sync")
    b = evaluate(act, HOPPER, 1, 2, seed=3, max_steps=20, vector="async")
    np.testing.assert_array_equal(a.returns, b.returns)
    assert b.vector == "async"


def test_user_errors_are_one_line():
    with pytest.raises(MDPTError, match="shape"):
        evaluate(lambda o, i: np.zeros((1, 2, 6)), HOPPER, 1, 2, max_steps=5)
    with pytest.raises(MDPTError, match="vector"):
        evaluate(lambda o, i: np.zeros((1, 1, 3)), HOPPER, 1, 1, vector="ray")
    with pytest.raises(MDPTError, match="episodes"):
        evaluate(lambda o, i: np.zeros((1, 0, 3)), HOPPER, 1, 0)
    with pytest.raises(MDPTError, match="unknown environment"):
        evaluate(lambda o, i: np.zeros((1, 1, 3)), "pong", 1, 1)
