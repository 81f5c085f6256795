"""Pipelined evaluation (`evaluate(..., groups=G)`, `evaluate_agent`), quiet start-up."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mdpt.data.registry import ENVS
from mdpt.errors import MDPTError
from mdpt.evaluation.rollout import evaluate

REPO = Path(__file__).resolve().parents[1]
HOPPER = ENVS["hopper"]


def _baseline():
    """The evaluation as it was before pipelining (benchmarks/eval_baseline.py, a frozen copy)."""
    spec = importlib.util.spec_from_file_location("eval_baseline", REPO / "benchmarks" / "eval_baseline.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.evaluate


def policy(obs, t, group=None, xp=np):
    """Deterministic, elementwise (a row's action never depends on the batch shape), different per
    policy index; with seed 0 and 70 steps, hopper episodes end between steps 18 and 64, and two
    are still running at step 70."""
    p = xp.arange(obs.shape[0], dtype=np.float32)[:, None, None]
    return xp.tanh(0.8 * obs[..., 8:11] - 0.5 * obs[..., 2:5] + 0.2 * p - 0.1)


def assert_same_episodes(a, b):
    for name in ("returns", "lengths", "terminated", "finished"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.fixture(scope="module")
def reference():
    return _baseline()(policy, HOPPER, 2, 5, seed=0, max_steps=70)


def test_reference_episodes_end_at_different_times(reference):
    """Guards the fixture: the equivalence tests below must cover staggered ends and cut-offs."""
    lengths = reference.lengths
    assert len(np.unique(lengths)) >= 4 and lengths.min() < 30
    assert reference.terminated.sum() >= 5 and (~reference.finished).sum() >= 1
    assert np.all(lengths[~reference.finished] == 70)


@pytest.mark.parametrize("groups", [1, 2, 3, 5])
def test_same_returns_as_the_unpipelined_evaluation(reference, groups):
    r = evaluate(policy, HOPPER, 2, 5, seed=0, max_steps=70, groups=groups)
    assert_same_episodes(r, reference)
    assert r.steps == reference.steps == 70
    assert r.groups == groups and r.extra["group_width"] == -(-5 // groups)


def test_pipelined_calls_with_staggered_episode_ends():
    calls, seen = [], []

    def act(obs, t, g):
        calls.append((t, g, obs.shape))
        seen.append((t, g, obs.copy()))
        return policy(obs, t)

    r = evaluate(act, HOPPER, 2, 5, seed=0, max_steps=70, groups=2)
    # fixed shape (a width-3 group; the second group of 2 episodes is padded), step indices in order
    assert {c[2] for c in calls} == {(2, 3, 15)}
    for g, cols in ((0, [0, 1, 2]), (1, [3, 4])):
        steps = [t for t, h, _ in calls if h == g]
        assert steps == list(range(len(steps)))
        # a group is called until its last episode ends (or max_steps)
        assert len(steps) == r.lengths[:, cols].max()
        for t, h, obs in seen:
            if h != g:
                continue
            for j, e in enumerate(cols):
                for p in range(2):
                    n = r.lengths[p, e]
                    if t >= n:  # after its end, an episode's observation stays frozen
                        frozen = next(o for s, k, o in seen if k == g and s == n - 1)
                        np.testing.assert_array_equal(obs[p, j], frozen[p, j])
            if g == 1:  # the padding column repeats the group's last episode
                np.testing.assert_array_equal(obs[:, 2], obs[:, 1])
    # the groups alternate while both run: 0, 1, 0, 1, ...
    both = min(len([c for c in calls if c[1] == 0]), len([c for c in calls if c[1] == 1]))
    assert [c[1] for c in calls[:2 * both]] == [0, 1] * both
    assert r.extra["policy_calls"] == len(calls)


def test_groups_need_a_group_argument_and_shapes_are_checked():
    with pytest.raises(MDPTError, match="group"):
        evaluate(lambda o, t: np.zeros(o.shape[:2] + (3,)), HOPPER, 1, 4, max_steps=3, groups=2)
    with pytest.raises(MDPTError, match="group width"):
        evaluate(lambda o, t, g: np.zeros((1, 4, 3)), HOPPER, 1, 4, max_steps=3, groups=2)
    with pytest.raises(MDPTError, match="groups"):
        evaluate(policy, HOPPER, 1, 4, max_steps=3, groups=0)


def test_jitted_policy_compiles_once_and_overlaps():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    traces = []

    @jax.jit
    def act(obs):
        traces.append(obs.shape)
        return policy(obs, 0, xp=jnp)

    def jit_policy(obs, t, g):
        return act(jnp.asarray(obs))

    r = evaluate(jit_policy, HOPPER, 2, 5, seed=0, max_steps=70, groups=2)
    assert traces == [(2, 3, 15)]  # one trace (so one compilation) for both groups and all steps
    assert np.unique(r.lengths).size >= 4  # episodes ended at different times meanwhile
    np.testing.assert_allclose(r.returns, _baseline()(policy, HOPPER, 2, 5, seed=0, max_steps=70).returns,
                               rtol=1e-4)
    # timing: the main thread's intervals are disjoint; overlap is simulator time
    assert 0 < r.overlap_seconds <= r.sim_seconds
    assert r.setup_seconds + r.sim_seconds + r.policy_seconds <= r.total_seconds + 1e-6
    assert r.to_dict()["overlap_s"] == r.overlap_seconds and r.to_dict()["groups"] == 2


def test_numpy_policy_reports_no_overlap():
    r = evaluate(policy, HOPPER, 1, 4, seed=0, max_steps=10, groups=2)
    assert r.overlap_seconds == 0.0 and r.sim_seconds > 0


# ----------------------------------------------------------------------------- with an Agent
@pytest.fixture(scope="module")
def tiny_agent():
    """A 2-seed DQL agent with an IQL guidance module, tiny nets and random parameters (made from
    the modules' parameter shapes: running their init eagerly costs seconds)."""
    jax = pytest.importorskip("jax")
    from mdpt.agent import Agent, SelectorConfig
    from mdpt.artifacts import Artifact
    from mdpt.data.normalizer import Normalizer
    from mdpt.guidance.module import GuidanceConfig, GuidanceModule
    from mdpt.policies.module import DiffusionPolicy, PolicyConfig

    pol = DiffusionPolicy(PolicyConfig("dql", hidden=16, depth=1), 15, 3, 1000)
    gui = GuidanceModule(GuidanceConfig("iql", hidden=16), 15, 3, 1000)
    rng = np.random.default_rng(0)

    def random_params(init, seeds):
        shapes = jax.eval_shape(init, jax.random.PRNGKey(0))
        return jax.tree.map(lambda s: (0.5 * rng.normal(size=(seeds, *s.shape))).astype(s.dtype), shapes)

    meta = {"dataset": {"fingerprint": "x"}, "seeds": [0, 1]}
    norm = Normalizer.identity(15)
    return Agent(Artifact(pol, random_params(lambda k: pol.init(k)["ema"], 2), norm, meta),
                 Artifact(gui, random_params(lambda k: gui.init(k)["params"], 1), norm, meta),
                 SelectorConfig("softmax", candidates=4))


def test_evaluate_agent_is_reproducible_and_compiles_once(tiny_agent):
    from mdpt.evaluation.rollout import evaluate_agent

    a = evaluate_agent(tiny_agent, HOPPER, 4, seed=5, max_steps=40, groups=2)
    b = evaluate_agent(tiny_agent, HOPPER, 4, seed=5, max_steps=40, groups=2)
    assert_same_episodes(a, b)
    assert np.unique(a.lengths).size >= 2  # episodes ended at different times
    assert tiny_agent._act._cache_size() == 1  # one shape, (2 seeds, width 2, 15), for both groups
    c = evaluate_agent(tiny_agent, HOPPER, 4, seed=6, max_steps=40, groups=2)
    assert not np.array_equal(a.returns, c.returns)


def test_evaluate_agent_without_groups_matches_the_runner(tiny_agent):
    from mdpt.evaluation.rollout import evaluate_agent
    from mdpt.experiments.run_evaluation import evaluate_agent as runner_evaluate_agent

    a = evaluate_agent(tiny_agent, HOPPER, 2, seed=2, max_steps=30, groups=1)
    b = runner_evaluate_agent(tiny_agent, HOPPER, 2, seed=2, max_steps=30)
    assert_same_episodes(a, b)  # the same key sequence: fold_in(PRNGKey(seed), t)


# ----------------------------------------------------------------------------- quiet start-up
def test_an_evaluating_subprocess_prints_no_pybullet_noise():
    code = ("import numpy as np\n"
            "from mdpt.evaluation.rollout import evaluate\n"
            "if __name__ == '__main__':\n"
            "    for vec in ('sync', 'async'):\n"
            "        r = evaluate(lambda o, t: np.zeros((1, 1, 3)), 'hopper', 1, 1, max_steps=2, vector=vec)\n"
            "    print('returns', r.returns.tolist())\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "returns" in out.stdout  # it did evaluate
    text = out.stdout + out.stderr
    assert "pybullet build time" not in text and "argv[0]" not in text, text


def test_evaluation_does_not_import_experiments_or_cli():
    code = ("import sys\nimport mdpt.evaluation.rollout, mdpt.evaluation.stats\n"
            "print(sorted(m for m in sys.modules if m.startswith(('mdpt.experiments', 'mdpt.cli'))))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
