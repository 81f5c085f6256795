"""Published presets and every training/selection option of the presets issue: each test fails
if its option is ignored."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mdpt import presets
from mdpt.agent import Agent, SelectorConfig, resolve_selector
from mdpt.artifacts import Artifact
from mdpt.data.batches import device_arrays
from mdpt.data.normalizer import Normalizer
from mdpt.experiments.config import resolve_config
from mdpt.guidance.module import GuidanceConfig, GuidanceModule
from mdpt.nets.optim import make_optimizer
from mdpt.policies.module import DiffusionPolicy, PolicyConfig
from mdpt.training.trainer import Trainer

TINY_G = dict(hidden=8, depth=1)


# ----------------------------------------------------------------------------- presets
def test_dql_on_hopper_medium_uses_the_authors_preset_without_any_flag():
    c = resolve_config({"dataset": "bullet-hopper-medium-v0", "algo": "dql"})
    assert (c.selector.selector, c.selector.beta, c.selector.candidates, c.selector.temperature) == \
        ("softmax", 100.0, 50, 0.5)
    assert c.selector.critic == "target"
    assert c.guidance.kind == "dql-critic" and c.guidance.layer_norm and c.guidance.first_activation == "tanh"
    assert c.policy.grad_clip == 9.0 and c.guidance.grad_clip == 9.0  # Diffusion-QL's hopper-medium clip
    assert c.policy.lr_decay_steps == 200_000 and c.policy.weight_decay == 0.01
    assert c.preset == ("guidance:dql-critic", "algo:dql", "task:bullet-hopper-medium-v0")


@pytest.mark.parametrize("dataset,beta,clip", [
    ("bullet-hopper-medium-expert-v0", 8.0, 5.0), ("bullet-hopper-expert-v0", 50.0, 5.0),
    ("bullet-walker2d-medium-v0", 300.0, 1.0), ("bullet-walker2d-expert-v0", 50.0, 5.0),
    ("bullet-halfcheetah-medium-replay-v0", 50.0, 2.0)])
def test_task_presets_follow_the_published_tables(dataset, beta, clip):
    c = resolve_config({"dataset": dataset, "algo": "dql"})
    assert c.selector.beta == beta and c.policy.grad_clip == clip
    edp = resolve_config({"dataset": dataset, "algo": "edp"})
    assert edp.selector.beta == beta and edp.policy.grad_clip is None  # EDP's code clips nothing


def test_idql_preset_and_an_unknown_dataset_gets_the_algorithm_default_with_a_note():
    c = resolve_config({"dataset": "bullet-hopper-medium-v0", "algo": "idql"})
    assert (c.selector.candidates, c.selector.beta, c.guidance.kind, c.guidance.update_every) == (256, 0.5, "iql", 2)
    assert c.policy.net == "lnresnet" and c.policy.ema_decay == 0.9999 and c.policy.ema_warmup
    assert not resolve_config({"dataset": "bullet-hopper-medium-v0", "algo": "dql"}).policy.ema_warmup
    other = resolve_config({"dataset": "my-data.hdf5", "algo": "dql"})
    assert other.selector.beta == presets.SELECTION["dql-critic"]["beta"] and other.policy.grad_clip is None
    assert "no published preset" in presets.task_note("dql", "dql-critic", "my-data.hdf5")
    assert "medium-expert value" in presets.task_note("dql", "dql-critic", "bullet-hopper-expert-v0")


def test_a_file_takes_the_presets_of_the_id_it_records(tmp_path):
    from conftest import d4rl_arrays, write_raw_hdf5

    made = tmp_path / "mine.hdf5"  # e.g. made by `mdpt data make bullet-hopper-expert-v0`
    write_raw_hdf5(made, d4rl_arrays(), {"env_id": "HopperBulletEnv-v0", "dataset_id": "bullet-hopper-expert-v0"})
    c = resolve_config({"dataset": str(made), "algo": "dql"})
    assert c.preset[-1] == "task:bullet-hopper-expert-v0" and (c.selector.beta, c.policy.grad_clip) == (50.0, 5.0)
    plain = tmp_path / "plain.hdf5"  # records no id: the algorithm's defaults, with the note
    write_raw_hdf5(plain, d4rl_arrays(), {"env_id": "HopperBulletEnv-v0"})
    assert resolve_config({"dataset": str(plain), "algo": "dql"}).preset == ("guidance:dql-critic", "algo:dql")
    damaged = tmp_path / "damaged.hdf5"
    damaged.write_bytes(b"not hdf5")  # loading it says what is wrong; choosing presets does not fail on it
    assert resolve_config({"dataset": str(damaged), "algo": "dql"}).preset == ("guidance:dql-critic", "algo:dql")


def test_user_settings_win_over_presets():
    c = resolve_config({"dataset": "bullet-hopper-medium-v0", "algo": "dql", "beta": 3.0,
                        "guidance": {"layer_norm": False}, "policy": {"grad_clip": 2.0}})
    assert c.selector.beta == 3.0 and not c.guidance.layer_norm and c.policy.grad_clip == 2.0


def test_per_task_config_files_are_generated_from_the_table(tmp_path):
    from pathlib import Path

    from mdpt.experiments.config_files import write_config_files

    repo = Path(__file__).resolve().parents[1] / "configs"
    write_config_files(tmp_path)
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.yaml"))
    assert made and made == sorted(p.relative_to(repo) for p in repo.rglob("*.yaml"))
    for rel in made:  # the committed files are exactly what the table gives
        assert (tmp_path / rel).read_text() == (repo / rel).read_text(), rel
    from mdpt.experiments.config import load_config

    c = load_config(repo / "dql" / "bullet-walker2d-medium-v0.yaml")
    assert c.selector.beta == 300.0 and c.policy.grad_clip == 1.0


# ----------------------------------------------------------------------------- optimizer options
def _updates(opt, grads):
    params = jnp.ones(3)
    state = opt.init(params)
    out = []
    for g in grads:
        u, state = opt.update(jnp.asarray(g, jnp.float32), state, params)
        params = optax.apply_updates(params, u)
        out.append(np.asarray(u))
    return out, params


def test_lr_decay_horizon_is_separate_from_the_run_length():
    grads = [np.ones(3)] * 50
    to_run_end, _ = _updates(make_optimizer(1e-2, "cosine", 50), grads)
    long_horizon, _ = _updates(make_optimizer(1e-2, "cosine", 200_000), grads)
    assert np.abs(to_run_end[-1]).max() < 1e-4  # decayed to ~0 at the run's end
    assert np.abs(long_horizon[-1]).max() > 0.99e-2  # barely decayed


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_warmup_lets_a_young_sampling_copy_follow_the_weights(warmup):
    policy = DiffusionPolicy(PolicyConfig(algo="idql", hidden=8, depth=1, ema_warmup=warmup), 3, 2)
    zeros = jax.tree.map(jnp.zeros_like, policy.init(jax.random.PRNGKey(0))["params"])
    ones = jax.tree.map(jnp.ones_like, zeros)

    def copy_after(n):  # the copy's weight on the new parameters at the n-th update
        return float(jax.tree.leaves(policy._ema(zeros, ones, jnp.int32(n)))[0].ravel()[0])

    assert copy_after(1) == pytest.approx(1 - 2 / 11 if warmup else 1e-4, rel=1e-4)
    assert copy_after(1000) == pytest.approx(1 - 1001 / 1010 if warmup else 1e-4, rel=1e-3)
    assert copy_after(10**6) == pytest.approx(1e-4, rel=1e-3)  # at the paper's length: the published 0.9999


def test_weight_decay_is_adamw():
    _, plain = _updates(make_optimizer(1e-2, weight_decay=0.0), [np.zeros(3)] * 10)
    _, decayed = _updates(make_optimizer(1e-2, weight_decay=0.5), [np.zeros(3)] * 10)
    assert np.allclose(plain, 1.0) and (np.asarray(decayed) < 0.99).all()


def test_gradient_clipping_changes_adams_moments():
    grads = [np.full(3, 100.0), np.full(3, 1.0)]
    free, _ = _updates(make_optimizer(1e-2), grads)
    clipped, _ = _updates(make_optimizer(1e-2, grad_clip=1.0), grads)
    assert not np.allclose(free[1], clipped[1])


# ----------------------------------------------------------------------------- critic options
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from conftest import d4rl_arrays

    from mdpt.data.dataset import Dataset
    from mdpt.data.registry import env_spec_for

    a = d4rl_arrays(lengths=(6, 4, 5), terminal=(True, False, False))
    data = Dataset(a["observations"], a["actions"], a["rewards"], a["terminals"], a["timeouts"],
                   a["next_observations"], env=env_spec_for("HopperBulletEnv-v0"), dataset_id="tiny")
    return data, device_arrays(data, Normalizer.fit(data))


def test_idql_critic_trains_every_second_step(tiny):
    data, arrays = tiny
    counts = {}
    for every in (1, 2):
        g = GuidanceModule(GuidanceConfig("iql", update_every=every, **TINY_G), 15, 3)
        p = DiffusionPolicy(PolicyConfig("idql", net="mlp", hidden=8, depth=1), 15, 3)
        t = Trainer(arrays, p, g, "train", "train", 4)
        state, _ = t.run(t.init([0]), 4)
        counts[every] = int(jax.tree.leaves(state["guidance"]["opt"]["q"])[0][0])  # Adam's step count
        assert int(state["policy"]["step"][0]) == 4
    assert counts == {1: 4, 2: 2}


def test_max_q_backup_takes_each_heads_max_over_sampled_next_actions(tiny):
    _, arrays = tiny
    g = GuidanceModule(GuidanceConfig("dql-critic", max_q_backup=True, backup_samples=4, **TINY_G), 15, 3)
    assert g.next_action_samples == 4
    state = g.init(jax.random.PRNGKey(0))
    batch = {k: v[:5] for k, v in arrays.items()}
    acts = jax.random.uniform(jax.random.PRNGKey(1), (4, 5, 3), minval=-1, maxval=1)
    qs = g.q_net.apply(state["target_q"], jnp.broadcast_to(batch["next_obs"], (4, 5, 15)), acts)
    np.testing.assert_allclose(g._next_value(state, batch, acts), qs.max(1).min(0), rtol=1e-6)
    one = g._next_value(state, batch, acts[0])
    assert (np.asarray(g._next_value(state, batch, acts)) >= np.asarray(one) - 1e-6).all()
    # and the trainer hands it K next actions from the policy
    p = DiffusionPolicy(PolicyConfig("dql", hidden=8, depth=1), 15, 3)
    t = Trainer(arrays, p, g, "train", "train", 4)
    state, m = t.run(t.init([0]), 2)
    assert np.isfinite(np.asarray(m["guidance/q_loss"])).all()


def test_sarsa_ignores_the_missing_next_action_at_a_time_limit_cut(tiny):
    data, arrays = tiny
    valid = np.asarray(arrays["next_valid"])
    cut = np.flatnonzero(valid == 0)
    assert len(cut) == 2 and not data.terminals[cut].any()  # the two timeouts, not the terminal
    g = GuidanceModule(GuidanceConfig("sarsa", **TINY_G), 15, 3)
    state = g.init(jax.random.PRNGKey(0))
    bent = {**arrays, "next_act": arrays["next_act"].at[cut].set(0.9)}  # garbage where no next action exists
    a, _ = g.update(state, arrays)
    b, _ = g.update(state, bent)
    for x, y in zip(jax.tree.leaves(a["params"]["q"]), jax.tree.leaves(b["params"]["q"]), strict=True):
        np.testing.assert_array_equal(x, y)
    moved = {**arrays, "next_act": arrays["next_act"].at[0].set(0.9)}  # a real next action does matter
    c, _ = g.update(state, moved)
    assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a["params"]["q"]),
                                                        jax.tree.leaves(c["params"]["q"]), strict=True))


def test_authors_critic_layout_tanh_first_then_mish_with_layer_norm():
    g = GuidanceModule(GuidanceConfig("dql-critic"), 15, 3)
    params = g.init(jax.random.PRNGKey(0))["params"]["q"]["params"]
    mlp = params[next(iter(params))]
    assert {k for k in mlp if k.startswith("LayerNorm")} == {"LayerNorm_0", "LayerNorm_1", "LayerNorm_2"}
    plain = GuidanceModule(GuidanceConfig("dql-critic", layer_norm=False, first_activation="same"), 15, 3)
    obs, act = jnp.ones((2, 15)), jnp.ones((2, 3))
    p2 = plain.init(jax.random.PRNGKey(0))["params"]
    tanh = dataclasses.replace(plain.q_net, first_act_name="tanh")
    assert not np.allclose(plain.q_net.apply(p2["q"], obs, act), tanh.apply(p2["q"], obs, act))


# ----------------------------------------------------------------------------- selection
def _artifacts(kind="iql", with_target=True, selection=None):
    norm = Normalizer.identity(15)
    pol = DiffusionPolicy(PolicyConfig("dql", hidden=8, depth=1), 15, 3)
    gui = GuidanceModule(GuidanceConfig(kind, **TINY_G), 15, 3)
    pp = jax.tree.map(lambda x: x[None], pol.init(jax.random.PRNGKey(0))["ema"])
    online = gui.init(jax.random.PRNGKey(1))["params"]
    target = gui.init(jax.random.PRNGKey(2))["params"]["q"]
    gp = {**online, "target_q": target} if with_target else online
    meta = {"dataset": {"fingerprint": "x", "id": "bullet-hopper-medium-v0"}, "seeds": [0]}
    gmeta = {**meta, **({"selection": selection} if selection else {})}
    return (Artifact(pol, pp, norm, meta, None),
            Artifact(gui, jax.tree.map(lambda x: x[None], gp), norm, gmeta, None))


def test_candidates_are_scored_with_the_target_critic_by_default():
    pol, gui = _artifacts()
    obs = np.random.default_rng(0).normal(size=(1, 64, 15)).astype(np.float32)
    key = jax.random.PRNGKey(3)
    target = Agent(pol, gui, SelectorConfig("argmax", candidates=16))
    online = Agent(pol, gui, SelectorConfig("argmax", candidates=16, critic="online"))
    assert target.critic_used == "target" and online.critic_used == "online"
    assert not np.allclose(target.act(obs, key), online.act(obs, key))
    old_pol, old = _artifacts(with_target=False)
    assert "predates" in Agent(old_pol, old, SelectorConfig("argmax", candidates=4)).critic_used


def test_a_guidance_module_carries_its_own_selection():
    pol, gui = _artifacts("iql", selection={"selector": "softmax", "beta": 0.5})
    sel, sources = resolve_selector(SelectorConfig(), pol, gui)
    assert (sel.selector, sel.beta, sel.candidates, sel.temperature) == ("softmax", 0.5, 50, 0.5)
    assert "own" in sources["beta"]
    _, critic = _artifacts("dql-critic")  # no saved selection: its kind's task preset (hopper-medium: 100)
    assert resolve_selector(SelectorConfig(), pol, critic)[0].beta == 100.0
    assert resolve_selector(SelectorConfig(beta=7.0), pol, critic)[0].beta == 7.0


def test_guidance_ensemble_mean_and_min_are_used():
    pol, a = _artifacts()
    _, b = _artifacts()
    b = dataclasses.replace(b, params=jax.tree.map(lambda x: -x, b.params))
    obs = np.random.default_rng(1).normal(size=(1, 64, 15)).astype(np.float32)
    key = jax.random.PRNGKey(4)
    mean = Agent(pol, [a, b], SelectorConfig("argmax", candidates=16, ensemble="mean")).act(obs, key)
    low = Agent(pol, [a, b], SelectorConfig("argmax", candidates=16, ensemble="min")).act(obs, key)
    single = Agent(pol, [a], SelectorConfig("argmax", candidates=16)).act(obs, key)
    assert not np.allclose(mean, low) and not np.allclose(mean, single)
    np.testing.assert_allclose(Agent(pol, [a, a], SelectorConfig("argmax", candidates=16, ensemble="min")).act(obs, key),
                               single)


def test_offline_model_selection_picks_the_lowest_bc_loss_per_seed(tmp_path):
    from mdpt.experiments.rundir import MetricsLog
    from mdpt.experiments.runner import Run

    run = Run.__new__(Run)
    run.metrics = MetricsLog(tmp_path / "metrics.jsonl")
    for step, loss in ((10, [0.5, 0.1]), (20, [0.2, 0.3])):
        run.metrics.append({"phase": "train", "step": step, "policy/bc_loss": loss})
    # curve evaluations may use fewer episodes than the last one (eval.final_episodes)
    evals = [{"phase": "eval", "step": 10, "variant": "guided", "scores": [[1.0], [2.0]]},
             {"phase": "eval", "step": 20, "variant": "guided", "scores": [[3.0, 5.0], [4.0, 6.0]]}]
    picked = run._selected_offline(evals, "guided")
    assert picked["steps"] == [20, 10] and picked["scores"] == [[3.0, 5.0], [2.0]]
    assert picked["mean"] == 3.0  # the mean of the seeds' means
