"""Behaviour of the algorithms on tiny problems with known answers.

- a 2-D bandit whose reward has a high mode at (+0.5, +0.5) and a low mode at (-0.5, -0.5):
  BC reproduces both modes; DQL, EDP, CFG and the IDQL selector put most mass on the high mode.
- a 5-state chain MDP whose expectile values are computed exactly: sarsa and iql (tau 0.5, 0.9)
  approach them.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdpt.agent import Agent, SelectorConfig
from mdpt.artifacts import Artifact
from mdpt.data.batches import device_arrays
from mdpt.data.dataset import Dataset
from mdpt.data.normalizer import Normalizer
from mdpt.data.registry import EnvSpec
from mdpt.guidance.module import GuidanceConfig, GuidanceModule
from mdpt.policies.module import DiffusionPolicy, PolicyConfig
from mdpt.training.trainer import Trainer

HIGH, LOW = np.array([0.5, 0.5]), np.array([-0.5, -0.5])
BANDIT_ENV = EnvSpec("bandit", "Bandit-v0", 1, 2, 1, 0.0, 1.0)
SMALL_POLICY = dict(hidden=64, depth=2, ema_decay=0.9, ema_every=1, ema_start=0, lr=1e-3, lr_schedule="constant")
SMALL_GUIDANCE = dict(hidden=64, depth=2, lr=1e-3)


def bandit_dataset(n: int = 2000, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    high = rng.random(n) < 0.5
    centers = np.where(high[:, None], HIGH, LOW)
    act = np.clip(centers + 0.05 * rng.normal(size=(n, 2)), -1, 1).astype(np.float32)
    obs = np.zeros((n, 1), np.float32)
    done = np.ones(n, bool)
    return Dataset(obs, act, high.astype(np.float32), done, np.zeros(n, bool), obs, BANDIT_ENV,
                   dataset_id="bandit")


def high_fraction(actions: np.ndarray) -> float:
    a = np.asarray(actions).reshape(-1, 2)
    return float(np.mean(np.linalg.norm(a - HIGH, axis=-1) < np.linalg.norm(a - LOW, axis=-1)))


def near_a_mode(actions: np.ndarray, radius: float = 0.25) -> float:
    a = np.asarray(actions).reshape(-1, 2)
    d = np.minimum(np.linalg.norm(a - HIGH, axis=-1), np.linalg.norm(a - LOW, axis=-1))
    return float(np.mean(d < radius))


@pytest.fixture(scope="module")
def bandit():
    data = bandit_dataset()
    norm = Normalizer.identity(1)
    return data, norm, device_arrays(data, norm)


@pytest.fixture(scope="module")
def iql_guidance(bandit):
    _, _, arrays = bandit
    g = GuidanceModule(GuidanceConfig(kind="iql", **SMALL_GUIDANCE), 1, 2)
    trainer = Trainer(arrays, None, g, None, "train", batch_size=128)
    state, _ = trainer.run(trainer.init([0]), 1500)
    return g, state["guidance"]["params"]


def train_policy(arrays, algo: str, guidance=None, steps: int = 1500, **overrides):
    policy = DiffusionPolicy(PolicyConfig(algo=algo, net="mlp", **{**SMALL_POLICY, **overrides}), 1, 2)
    if guidance is None:
        trainer = Trainer(arrays, policy, None, "train", None, batch_size=128)
    else:
        g, params = guidance
        trainer = Trainer(arrays, policy, g, "train", "frozen", batch_size=128, frozen={"guidance": params})
    state, _ = trainer.run(trainer.init([0]), steps)
    return policy, jax.tree.map(lambda x: x[0], state["policy"]["ema"])


def sample(policy, params, n=1000, seed=1, **kw):
    obs = jnp.zeros((n, 1))
    return np.asarray(policy.sample(params, obs, jax.random.PRNGKey(seed), **kw))


@pytest.fixture(scope="module")
def bc_policy(bandit):
    return train_policy(bandit[2], "idql", steps=3000, lr=3e-3)


def test_bc_policy_reproduces_both_modes(bc_policy):
    actions = sample(*bc_policy, temperature=1.0)
    # T = 5 diffusion leaves a little mass between the modes; most of it sits on them, evenly split
    assert near_a_mode(actions, radius=0.35) > 0.65
    assert 0.35 < high_fraction(actions) < 0.65


def test_iql_guidance_ranks_high_mode_above_low(iql_guidance):
    g, params = iql_guidance
    p = jax.tree.map(lambda x: x[0], params)
    q = g.q_min(p, jnp.zeros((2, 1)), jnp.asarray(np.stack([HIGH, LOW]), jnp.float32))
    assert float(q[0]) > 0.8 and abs(float(q[1])) < 0.2
    labels = g.label(p, jnp.zeros((2, 1)), jnp.asarray(np.stack([HIGH, LOW]), jnp.float32))
    assert labels.tolist() == [1, 0]


@pytest.mark.parametrize("algo", ["dql", "edp"])
def test_q_guided_policies_prefer_high_mode(bandit, iql_guidance, algo):
    extra = {"T": 5, "sampler": "ddpm"} if algo == "edp" else {}
    policy, params = train_policy(bandit[2], algo, iql_guidance, eta=2.0, **extra)
    assert high_fraction(sample(policy, params)) > 0.8


def test_cfg_policy_prefers_high_mode_and_unconditional_keeps_both(bandit, iql_guidance):
    policy, params = train_policy(bandit[2], "cfg", iql_guidance, cond_dropout=0.2)
    assert high_fraction(sample(policy, params, cfg_weight=1.5)) > 0.8
    # the unconditional model (w = 0) is plain behaviour cloning: both modes remain
    assert 0.25 < high_fraction(sample(policy, params, cfg_weight=0.0)) < 0.75


def test_idql_selector_picks_high_mode(bandit, bc_policy, iql_guidance):
    data, norm, _ = bandit
    policy, params = bc_policy
    g, gparams = iql_guidance
    meta = {"dataset": {"fingerprint": data.fingerprint}, "seeds": [0]}
    pol_art = Artifact(policy, jax.tree.map(lambda x: x[None], params), norm, meta)
    gui_art = Artifact(g, gparams, norm, meta)
    obs = np.zeros((1, 200, 1), np.float32)
    plain = Agent(pol_art, None, SelectorConfig("none", temperature=1.0)).act(obs, jax.random.PRNGKey(0))
    picked = Agent(pol_art, gui_art, SelectorConfig("argmax", candidates=16, temperature=1.0)).act(obs, jax.random.PRNGKey(0))
    soft = Agent(pol_art, gui_art, SelectorConfig("softmax", beta=10.0, candidates=16)).act(obs, jax.random.PRNGKey(0))
    assert high_fraction(picked) > 0.95 and high_fraction(soft) > 0.9
    assert 0.3 < high_fraction(plain) < 0.7


# ----------------------------- chain MDP -----------------------------

N_STATES, P_RIGHT, GAMMA, HORIZON = 5, 0.7, 0.9, 12
ACTIONS = {0: -0.5, 1: 0.5}  # left, right


def chain_step(s: int, a: int) -> tuple[int, float, bool]:
    s2 = min(s + 1, N_STATES - 1) if a == 1 else max(s - 1, 0)
    done = s2 == N_STATES - 1
    return s2, float(done), done


def chain_dataset(episodes: int = 600, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in ("obs", "act", "rew", "term", "tout", "next")}
    eye = np.eye(N_STATES, dtype=np.float32)
    for _ in range(episodes):
        s = int(rng.integers(0, N_STATES - 1))
        for t in range(HORIZON):
            a = int(rng.random() < P_RIGHT)
            s2, r, done = chain_step(s, a)
            for k, v in zip(rows, (eye[s], [ACTIONS[a]], r, done, not done and t == HORIZON - 1, eye[s2]),
                            strict=True):
                rows[k].append(v)
            s = s2
            if done:
                break
    env = EnvSpec("chain", "Chain-v0", N_STATES, 1, HORIZON, 0.0, 1.0)
    f32 = lambda k: np.asarray(rows[k], np.float32)  # noqa: E731
    return Dataset(f32("obs"), f32("act"), f32("rew"), np.asarray(rows["term"]), np.asarray(rows["tout"]),
                   f32("next"), env, dataset_id="chain")


def exact_values(expectile: float) -> np.ndarray:
    """Q(s, a) at the fixed point of Q = r + gamma (1 - d) V(s'), V(s) = expectile of Q(s, .) under beta."""
    q = np.zeros((N_STATES, 2))
    probs = np.array([1 - P_RIGHT, P_RIGHT])
    for _ in range(500):
        v = np.array([two_point_expectile(q[s], probs, expectile) for s in range(N_STATES)])
        for s in range(N_STATES - 1):
            for a in (0, 1):
                s2, r, done = chain_step(s, a)
                q[s, a] = r + GAMMA * (0.0 if done else v[s2])
    return q[: N_STATES - 1]


def two_point_expectile(values: np.ndarray, probs: np.ndarray, tau: float) -> float:
    lo, hi = np.argsort(values)
    w_hi, w_lo = tau * probs[hi], (1 - tau) * probs[lo]
    return float((w_hi * values[hi] + w_lo * values[lo]) / (w_hi + w_lo))


def learned_values(kind: str, expectile: float = 0.7) -> np.ndarray:
    data = chain_dataset()
    arrays = device_arrays(data, Normalizer.identity(N_STATES))
    cfg = GuidanceConfig(kind=kind, expectile=expectile, discount=GAMMA, tau=0.05, **SMALL_GUIDANCE)
    g = GuidanceModule(cfg, N_STATES, 1)
    trainer = Trainer(arrays, None, g, None, "train", batch_size=256)
    state, _ = trainer.run(trainer.init([0]), 3000)
    params = jax.tree.map(lambda x: x[0], state["guidance"]["params"])
    obs = jnp.repeat(jnp.eye(N_STATES)[: N_STATES - 1], 2, axis=0)
    act = jnp.tile(jnp.asarray([[ACTIONS[0]], [ACTIONS[1]]]), (N_STATES - 1, 1))
    return np.asarray(g.q_min(params, obs, act)).reshape(N_STATES - 1, 2)


@pytest.mark.parametrize("kind,expectile", [("sarsa", 0.5), ("iql", 0.5), ("iql", 0.9)])
def test_chain_values_match_exact_expectile_fixed_point(kind, expectile):
    exact = exact_values(expectile)
    learned = learned_values(kind, expectile)
    assert np.max(np.abs(learned - exact)) < 0.06, (learned, exact)


def test_chain_expectile_ordering_is_real():
    """The reference itself: higher expectiles give higher values (towards the optimal Q)."""
    q5, q9, q99 = exact_values(0.5), exact_values(0.9), exact_values(0.99)
    assert np.all(q9 >= q5) and np.all(q99 >= q9)
    # every value except the one-step reward Q(3, right) = 1 strictly increases
    assert (q9 > q5 + 1e-3).sum() == q5.size - 1 and (q99 > q9 + 1e-3).sum() == q5.size - 1


# ----------------------------- training mechanics -----------------------------


@pytest.fixture(scope="module")
def tiny_setup(bandit):
    _, _, arrays = bandit
    policy = DiffusionPolicy(PolicyConfig(algo="dql", hidden=16, depth=1, ema_start=0), 1, 2)
    guidance = GuidanceModule(GuidanceConfig(kind="dql-critic", hidden=16, depth=1), 1, 2)
    return arrays, policy, guidance


def test_frozen_guidance_is_bit_identical_after_guidance_first_training(tiny_setup, iql_guidance):
    arrays, policy, _ = tiny_setup
    g, params = iql_guidance
    before = jax.tree.map(np.array, params)
    trainer = Trainer(arrays, policy, g, "train", "frozen", batch_size=32, frozen={"guidance": params})
    state, _ = trainer.run(trainer.init([0, 1]), 20)
    assert "guidance" not in state  # no optimizer state, no target copy
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(trainer.frozen["guidance"]), strict=True):
        assert np.array_equal(a, np.asarray(b))



def test_an_idql_policy_trains_bit_identically_in_both_modes(tiny_setup, iql_guidance):
    """IDQL's policy loss never reads a critic, so its guidance-first policy is the joint run's policy,
    bit for bit: one training could serve both (the modes differ only in the guidance they select with)."""
    arrays, _, _ = tiny_setup
    g, params = iql_guidance
    policy = DiffusionPolicy(PolicyConfig(algo="idql", hidden=16, depth=1, ema_start=0), 1, 2)
    joint = Trainer(arrays, policy, g, "train", "train", batch_size=32)
    guidance_first = Trainer(arrays, policy, g, "train", "frozen", batch_size=32, frozen={"guidance": params})
    a, _ = joint.run(joint.init([0, 1]), 10)
    b, _ = guidance_first.run(guidance_first.init([0, 1]), 10)
    for x, y in zip(jax.tree.leaves(a["policy"]), jax.tree.leaves(b["policy"]), strict=True):
        assert np.array_equal(np.asarray(x), np.asarray(y))

def test_same_seed_same_result_and_vmapped_seeds_equal_separate_runs(tiny_setup):
    arrays, policy, guidance = tiny_setup
    trainer = Trainer(arrays, policy, guidance, "train", "train", batch_size=32)
    both, _ = trainer.run(trainer.init([3, 4]), 10)
    again, _ = trainer.run(trainer.init([3, 4]), 10)
    for a, b in zip(jax.tree.leaves(both), jax.tree.leaves(again), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    for i, seed in enumerate([3, 4]):
        alone, _ = trainer.run(trainer.init([seed]), 10)
        for a, b in zip(jax.tree.leaves(both), jax.tree.leaves(alone), strict=True):
            np.testing.assert_allclose(np.asarray(a)[i], np.asarray(b)[0], rtol=2e-5, atol=2e-6)
    different, _ = trainer.run(trainer.init([5]), 10)
    assert not all(np.array_equal(np.asarray(a), np.asarray(b)[:1])
                   for a, b in zip(jax.tree.leaves(different), jax.tree.leaves(both), strict=True))


def test_guidance_first_step_does_less_work_than_joint(tiny_setup):
    arrays, policy, critic = tiny_setup
    params = jax.vmap(lambda k: critic.init(k)["params"])(jax.random.split(jax.random.PRNGKey(0), 1))
    joint = Trainer(arrays, policy, critic, "train", "train", batch_size=32)
    first = Trainer(arrays, policy, critic, "train", "frozen", batch_size=32, frozen={"guidance": params})

    def flops(trainer):
        state = trainer.init([0])
        cost = trainer.compiled(state, 1).cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return cost["flops"]

    assert flops(first) < flops(joint)


def test_policy_config_rejects_impossible_values():
    from mdpt.errors import MDPTError

    for bad in [dict(algo="nope"), dict(T=0), dict(eta=-1.0), dict(cond_dropout=1.0), dict(net="cnn")]:
        with pytest.raises(MDPTError):
            PolicyConfig(**bad).resolved()
    assert dataclasses.replace(PolicyConfig(), algo="idql").resolved().net == "lnresnet"


def test_fast_mish_equals_textbook_mish_and_its_gradient():
    from mdpt.nets.modules import mish

    x = jnp.linspace(-60.0, 60.0, 20001)
    reference = x * jnp.tanh(jax.nn.softplus(x))
    np.testing.assert_allclose(mish(x), reference, atol=1e-5, rtol=1e-5)
    grad = jax.vmap(jax.grad(mish))(x)
    grad_ref = jax.vmap(jax.grad(lambda v: v * jnp.tanh(jax.nn.softplus(v))))(x)
    np.testing.assert_allclose(grad, grad_ref, atol=1e-4)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_mish_backward_pass_keeps_less_than_a_derivative_that_shares_the_forward_exp():
    """The derivative recomputes e^x (see `mish`); one that reuses the forward's exp keeps e^x too."""
    from mdpt.nets.modules import mish
    from mdpt.training.xla_options import training_compiler_options

    @jax.custom_jvp
    def shared_exp_mish(x):
        return mish(x)

    @shared_exp_mish.defjvp
    def _jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        e = jnp.exp(jnp.minimum(x, 20.0))
        n = e * (e + 2.0)
        d = n + 2.0
        slope = jnp.where(x > 20.0, 1.0, n / d + x * 4.0 * e * (e + 1.0) / (d * d))
        return jnp.where(x > 20.0, x, x * n / d), slope * t

    def arrays_kept(act, layers=6, width=256):
        def loss(weights, x):
            for w in weights:
                x = act(x @ w)
            return x.sum()

        weights, x = [jnp.ones((width, width))] * layers, jnp.ones((width, width))
        grad = jax.jit(jax.grad(loss), compiler_options=training_compiler_options()).lower(weights, x).compile()
        return grad.memory_analysis().temp_size_in_bytes / x.nbytes

    assert arrays_kept(mish) <= 0.75 * arrays_kept(shared_exp_mish)


def test_a_guidance_first_step_keeps_every_dataset_array_as_an_argument(tiny_setup):
    """Peak memory less `dataset_bytes` is a step's own memory only if the arrays a mode never reads (a
    guidance-first step reads no rewards or next observations) stay arguments of its executable."""
    from mdpt.training.profiling import compiled_memory_bytes

    arrays, policy, critic = tiny_setup
    params = jax.vmap(lambda k: critic.init(k)["params"])(jax.random.split(jax.random.PRNGKey(0), 1))
    first = Trainer(arrays, policy, critic, "train", "frozen", batch_size=32, frozen={"guidance": params})
    state = first.init([0])
    resident = sum(np.asarray(x).nbytes for x in jax.tree.leaves((state, first.frozen)))
    assert compiled_memory_bytes(first.compiled(state, 1))["argument"] >= first.dataset_bytes + resident


def test_time_embedding_width_is_a_setting():
    """policy.time_dim: Diffusion-QL's 16 by default, the paper authors' 64 on request; a config saved
    before the setting existed means 16."""
    from mdpt.policies.module import DiffusionPolicy, PolicyConfig

    for width in (16, 64):
        pol = DiffusionPolicy(PolicyConfig(algo="dql", hidden=8, depth=1, time_dim=width), 3, 2)
        shapes = [x.shape for x in jax.tree.leaves(pol.init(jax.random.PRNGKey(0))["params"])]
        assert (width, 2 * width) in shapes and (2 * width, width) in shapes
    old = {k: v for k, v in PolicyConfig(algo="dql").resolved().to_json().items() if k != "time_dim"}
    assert PolicyConfig.from_json(old).time_dim == 16
