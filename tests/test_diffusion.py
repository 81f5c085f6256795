"""The diffusion layer against known answers, and every diffusion setting of `PolicyConfig` in use.

For Gaussian data x0 ~ N(MU, S^2) the optimal denoiser is closed form:
E[x0 | x_t] = MU + a S^2 (x_t - a MU) / (a^2 S^2 + sigma^2)  (a = alpha_t, sigma = sigma_t),
so the samplers can be run with a perfect network and compared with exact results:
- the probability-flow ODE maps x_T to x_t affinely, x_t = m_t + sqrt(v_t / v_T) (x_T - m_T),
  (m_t, v_t) = (a MU, a^2 S^2 + sigma^2): DDIM and DPM-Solver++ discretize it;
- the DDPM chain is affine with Gaussian noise: its output law follows from a scalar recursion.
Every sampler ends with x0 = E[x0 | x at t=0], which shrinks the data's spread by
S a_0 / sqrt(v_0): 2% for T=50 cosine, 60% for T=5 VP (sigma_0 = 0.44 against S = 0.2); that is
the best law any sampler on that schedule can reach.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdpt.diffusion import ddpm
from mdpt.errors import MDPTError
from mdpt.policies.module import DiffusionPolicy, PolicyConfig

MU, S = 0.3, 0.2
N = 100_000


def exact_model(tab: dict, prediction: str, mu: float = MU):
    """The optimal network for N(mu, S^2) data, predicting x0 or the noise."""

    def fn(x, t):
        a, sg = tab["sqrt_ab"][t][..., None], tab["sqrt_1m_ab"][t][..., None]
        x0 = mu + a * S**2 * (x - a * mu) / (a**2 * S**2 + sg**2)
        return x0 if prediction == "x0" else (x - a * x0) / sg

    return fn


def f64(tab: dict) -> dict:
    return {k: np.asarray(v, np.float64) for k, v in tab.items()}


def reachable_std(tab: dict) -> float:
    """Std of E[x0 | x_0] with x_0 from the true marginal at t = 0 (the final step's shrinkage)."""
    t = f64(tab)
    return S**2 * t["sqrt_ab"][0] / np.sqrt(t["ab"][0] * S**2 + 1 - t["ab"][0])


def flow_reference(tab: dict, x_T: np.ndarray) -> np.ndarray:
    """Exact probability flow from t = T-1 to t = 0, then the final x0 step."""
    t = f64(tab)
    m = t["sqrt_ab"] * MU
    v = t["ab"] * S**2 + 1 - t["ab"]
    x_0 = m[0] + np.sqrt(v[0] / v[-1]) * (x_T - m[-1])
    return MU + t["sqrt_ab"][0] * S**2 * (x_0 - m[0]) / v[0]


def initial_noise(key, shape) -> np.ndarray:
    """The x_T every sampler draws from `key` (at temperature 1)."""
    return np.asarray(jax.random.normal(jax.random.split(key)[0], shape), np.float64)


def ddpm_law(tab: dict, temperature: float, mode: str) -> tuple[float, float]:
    """Mean and std of DDPM's output with the exact model: x <- A x + B + noise at every step."""
    t = f64(tab)
    init, per_step = (1.0, temperature) if mode == "per-step" else (temperature, 1.0)
    m, v = 0.0, init**2
    for i in reversed(range(len(t["ab"]))):
        k = t["sqrt_ab"][i] * S**2 / (t["ab"][i] * S**2 + 1 - t["ab"][i])  # E[x0|x] = MU + k (x - a MU)
        A = t["post_coef_x0"][i] * k + t["post_coef_xt"][i]
        B = t["post_coef_x0"][i] * MU * (1 - k * t["sqrt_ab"][i])
        m, v = A * m + B, A**2 * v + (per_step**2 * np.exp(t["post_log_var"][i]) if i > 0 else 0.0)
    return m, float(np.sqrt(v))


def run(sampler, tab, T, steps=15, n=N, prediction="eps", clip=None, temperature=1.0, mode="per-step", mu=MU):
    out = ddpm.sample(sampler, exact_model(tab, prediction, mu), tab, jax.random.PRNGKey(0), (n, 1), T, steps,
                      temperature, mode, prediction, clip)
    return np.asarray(out, np.float64)


# ----------------------------- schedules -----------------------------


def test_cosine_schedule_follows_nichol_dhariwal():
    T = 50
    ab = f64(ddpm.cosine_schedule(T).table())["ab"]
    f = lambda t: np.cos((t / T + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    assert np.all(np.diff(ab) < 0)
    np.testing.assert_allclose(ab[0], f(1) / f(0), rtol=1e-6)
    np.testing.assert_allclose(ab[T - 2], f(T - 1) / f(0), rtol=1e-5)
    # the last beta, 1 - f(T)/f(T-1) = 1, is clipped at 0.999
    np.testing.assert_allclose(ab[T - 1], f(T - 1) / f(0) * 1e-3, rtol=1e-4)
    assert ddpm.cosine_schedule(T).betas.max() == pytest.approx(0.999)


def test_linear_and_vp_schedules_and_the_table():
    np.testing.assert_allclose(ddpm.linear_schedule(1000).betas[[0, -1]], [1e-4, 2e-2])
    np.testing.assert_allclose(ddpm.linear_schedule(50).betas[[0, -1]], [2e-3, 0.4])  # scaled by 1000 / T
    assert ddpm.linear_schedule(5).betas.max() == pytest.approx(0.999)
    # VP, T=5: alpha_t = exp(-beta_min/T - (beta_max - beta_min)(2t - 1) / (2 T^2))
    np.testing.assert_allclose(ddpm.vp_schedule(5).betas[0], 1 - np.exp(-0.02 - 9.9 / 50))
    for name in ddpm.NOISE_SCHEDULES:
        tab = ddpm.make_schedule(name, 50).table()
        assert all(v.dtype == jnp.float32 for v in tab.values())
        t = f64(tab)
        np.testing.assert_allclose(t["log_snr"], np.log(t["sqrt_ab"] / t["sqrt_1m_ab"]), rtol=1e-5, atol=1e-5)
        assert np.all(np.diff(t["log_snr"]) < 0)


def test_log_snr_grid_is_even_in_lambda_and_keeps_every_step():
    lam = f64(ddpm.vp_schedule(1000).table())["log_snr"]
    grid = ddpm.log_snr_timesteps(lam, 20)
    assert grid[0] == 999 and grid[-1] == 0 and len(set(grid)) == 20 and np.all(np.diff(grid) < 0)
    h = np.diff(lam[grid])
    np.testing.assert_allclose(h, h.mean(), rtol=0.15)  # equal lambda steps, up to the integer grid
    cosine = ddpm.log_snr_timesteps(ddpm.cosine_schedule(50).table()["log_snr"], 15)
    assert len(set(cosine)) == 15 and cosine[0] == 49 and cosine[-1] == 0
    assert list(ddpm.log_snr_timesteps(lam[:5], 15)) == [4, 3, 2, 1, 0]


# ----------------------------- samplers with the exact denoiser -----------------------------

CASES = [("cosine", 50), ("vp", 5)]
# 15 steps on narrow data: DDPM's small-variance chain and first-order DDIM lose spread;
# the second-order DPM-Solver++ stays within a few percent.
STD_TOLERANCE = {"ddpm": 0.12, "ddim": 0.2, "dpm-solver++": 0.03}


@pytest.mark.parametrize("name,T", CASES)
@pytest.mark.parametrize("sampler", ddpm.SAMPLERS)
def test_samplers_reproduce_gaussian_data(sampler, name, T):
    tab = ddpm.make_schedule(name, T).table()
    x = run(sampler, tab, T)
    target = reachable_std(tab)
    if T == 50:
        assert target == pytest.approx(S, rel=0.025)  # so here the target is N(MU, S^2), nearly
    assert abs(x.mean() - MU) < 0.01
    assert abs(x.std() / target - 1) < STD_TOLERANCE[sampler], (x.std(), target)


@pytest.mark.parametrize("name,T", CASES)
@pytest.mark.parametrize("temperature", [0.5, 1.0])
def test_ddpm_output_law_and_temperature_modes(name, T, temperature):
    tab = ddpm.make_schedule(name, T).table()
    stds = {}
    for mode in ddpm.TEMPERATURE_MODES:
        x = run("ddpm", tab, T, temperature=temperature, mode=mode)
        m, stds[mode] = ddpm_law(tab, temperature, mode)
        assert abs(x.mean() - m) < 0.002 and x.std() == pytest.approx(stds[mode], rel=0.01), (mode, x.std())
    if temperature == 1.0:
        assert stds["per-step"] == stds["initial-noise"]
    else:
        # per-step: every step's noise halves, so does the spread; initial-noise: only x_T shrinks,
        # and the chain's own (unscaled) noise all but forgets it
        assert stds["per-step"] < 0.55 * stds["initial-noise"]
        assert stds["initial-noise"] == pytest.approx(ddpm_law(tab, 1.0, "per-step")[1], rel=0.01)


@pytest.mark.parametrize("sampler", ["ddim", "dpm-solver++"])
def test_deterministic_samplers_scale_the_initial_noise_in_both_modes(sampler):
    tab = ddpm.cosine_schedule(50).table()
    per_step = run(sampler, tab, 50, temperature=0.5, mode="per-step")
    initial = run(sampler, tab, 50, temperature=0.5, mode="initial-noise")
    np.testing.assert_array_equal(per_step, initial)
    # the output is affine in x_T: temperature 0.5 lands halfway between x_T = 0 and temperature 1
    full, zero = run(sampler, tab, 50), run(sampler, tab, 50, temperature=0.0)
    np.testing.assert_allclose(initial, 0.5 * (full + zero), atol=1e-5)


@pytest.mark.parametrize("clip", [None, 1.0])
@pytest.mark.parametrize("sampler", ddpm.SAMPLERS)
def test_x0_and_eps_parameterizations_give_the_same_samples(sampler, clip):
    tab = ddpm.cosine_schedule(50).table()
    eps = run(sampler, tab, 50, prediction="eps", clip=clip, temperature=0.7, mode="per-step")
    x0 = run(sampler, tab, 50, prediction="x0", clip=clip, temperature=0.7, mode="per-step")
    np.testing.assert_allclose(eps, x0, atol=2e-4)


def test_dpm_solver_is_second_order_and_beats_ddim():
    # T=50 cosine, 15 steps (EDP's setting): much closer to the exact flow than DDIM
    tab = ddpm.cosine_schedule(50).table()
    ref = flow_reference(tab, initial_noise(jax.random.PRNGKey(0), (N, 1)))
    err = {s: np.abs(run(s, tab, 50) - ref).max() for s in ("ddim", "dpm-solver++")}
    assert err["dpm-solver++"] < err["ddim"] / 10, err
    # on a fine schedule, doubling the steps divides DPM-Solver++'s error by about 4, DDIM's by 2
    tab = ddpm.vp_schedule(1000).table()
    ref = flow_reference(tab, initial_noise(jax.random.PRNGKey(0), (N, 1)))
    for sampler, (lo, hi) in {"ddim": (0.8, 1.2), "dpm-solver++": (1.6, 2.4)}.items():
        errs = [np.abs(run(sampler, tab, 1000, steps) - ref).max() for steps in (10, 20, 40)]
        order = np.log2(errs[0] / errs[-1]) / 2
        assert lo < order < hi, (sampler, errs)


@pytest.mark.parametrize("sampler", ddpm.SAMPLERS)
def test_clip_denoised_keeps_x0_predictions_in_the_box(sampler):
    tab = ddpm.cosine_schedule(50).table()
    free = run(sampler, tab, 50, clip=None, mu=0.9)  # data against the box edge
    boxed = run(sampler, tab, 50, clip=1.0, mu=0.9)
    assert free.max() > 1.1 and np.abs(boxed).max() <= 1.0
    assert boxed.mean() < np.clip(free, -1, 1).mean() + 1e-6
    if sampler == "ddpm":  # clipping acts along the chain, not only on the result
        assert np.abs(np.clip(free, -1, 1) - boxed).max() > 0.01


def test_one_step_x0_recovers_the_action_and_clips_only_when_asked():
    tab = ddpm.cosine_schedule(50).table()
    x0 = jnp.full((8, 2), 0.99)
    perfect = lambda x, t: jnp.full(x.shape, 1.5)  # noqa: E731  an x0 network overshooting the box
    assert np.allclose(ddpm.one_step_x0(perfect, tab, x0, jax.random.PRNGKey(0), 50, "x0", None), 1.5)
    assert np.allclose(ddpm.one_step_x0(perfect, tab, x0, jax.random.PRNGKey(0), 50, "x0", 1.0), 1.0)


# ----------------------------- PolicyConfig settings -----------------------------

TINY = dict(hidden=16, depth=1, T=10, sample_steps=4, ema_start=0)


def policy(algo="edp", **kw) -> DiffusionPolicy:
    return DiffusionPolicy(PolicyConfig(algo=algo, net="mlp", **{**TINY, **kw}), 3, 2)


def outputs(pol: DiffusionPolicy):
    """Samples at temperature 0.5 and the Q term's action, from fixed parameters and keys."""
    params = pol.init(jax.random.PRNGKey(0))["params"]
    obs = jax.random.normal(jax.random.PRNGKey(1), (256, 3))
    act = jnp.clip(0.8 * jax.random.normal(jax.random.PRNGKey(2), (256, 2)), -1, 1)
    samples = pol.sample(params, obs, jax.random.PRNGKey(3), temperature=0.5)
    return np.asarray(samples), np.asarray(pol.q_action(pol.model_fn(params, obs), act, jax.random.PRNGKey(4)))


# (setting, two values, which output must change: 0 samples, 1 the Q term's action, base config);
# the BC loss's use of `prediction` is checked by test_x0_policy_learns_a_constant_action
SETTINGS = [
    ("prediction", "eps", "x0", (0, 1), {}),
    ("noise_schedule", "vp", "cosine", (0, 1), {}),
    ("sampler", "ddim", "dpm-solver++", (0,), {}),
    ("temperature_mode", "per-step", "initial-noise", (0,), {"sampler": "ddpm"}),
    ("clip_denoised", True, False, (0,), {"prediction": "eps", "noise_schedule": "vp"}),
    ("clip_one_step", True, False, (1,), {"prediction": "eps", "noise_schedule": "vp"}),
]


@pytest.mark.parametrize("setting,a,b,changed,base", SETTINGS, ids=[s[0] for s in SETTINGS])
def test_every_diffusion_setting_is_used(setting, a, b, changed, base):
    out_a = outputs(policy(**base, **{setting: a}))
    out_b = outputs(policy(**base, **{setting: b}))
    for i in changed:
        assert not np.allclose(out_a[i], out_b[i], atol=1e-4), (setting, i)


def test_policy_sample_is_the_configured_sampler():
    pol = policy(prediction="x0", noise_schedule="cosine", sampler="dpm-solver++", clip_denoised=False)
    params = pol.init(jax.random.PRNGKey(0))["params"]
    obs = jnp.zeros((64, 3))
    got = pol.sample(params, obs, jax.random.PRNGKey(1), temperature=0.5)
    want = ddpm.dpm_solver_pp_sample(pol.model_fn(params, obs), ddpm.cosine_schedule(10).table(),
                                     jax.random.PRNGKey(1), (64, 2), 10, 4, None, "x0", 0.5)
    np.testing.assert_allclose(got, jnp.clip(want, -1, 1), atol=1e-6)


def test_x0_policy_learns_a_constant_action():
    target = jnp.array([0.5, -0.3])
    pol = policy("idql", prediction="x0", noise_schedule="cosine", sampler="ddpm", lr=3e-3, lr_schedule="constant")
    state = pol.init(jax.random.PRNGKey(0))
    obs = jnp.zeros((256, 3))
    act = target + 0.01 * jax.random.normal(jax.random.PRNGKey(1), (256, 2))
    step = jax.jit(lambda s, k: pol.update(s, {"obs": obs, "act": act}, k))
    losses = []
    for k in jax.random.split(jax.random.PRNGKey(2), 200):
        state, aux = step(state, k)
        losses.append(float(aux["policy/bc_loss"]))
    assert np.mean(losses[-20:]) < 0.05 * np.mean(losses[:5])
    # an x0 network outputs the action itself, even from pure noise at t = T-1
    x = jax.random.normal(jax.random.PRNGKey(3), (256, 2))
    out = pol.model_fn(state["params"], obs)(x, jnp.full((256,), 9))
    assert float(jnp.abs(out - target).mean()) < 0.03  # an eps network would output about x here
    samples = pol.sample(state["params"], obs, jax.random.PRNGKey(4))
    np.testing.assert_allclose(np.asarray(samples).mean(0), target, atol=0.05)


def test_algo_defaults():
    edp = PolicyConfig(algo="edp").resolved()
    assert (edp.prediction, edp.noise_schedule, edp.T, edp.sampler, edp.sample_steps) == \
        ("x0", "cosine", 50, "dpm-solver++", 15)
    assert edp.clip_denoised and not edp.clip_one_step and edp.temperature_mode == "initial-noise"
    for algo in ("dql", "idql", "cfg"):
        c = PolicyConfig(algo=algo).resolved()
        assert (c.prediction, c.noise_schedule, c.T, c.sampler, c.clip_denoised, c.temperature_mode) == \
            ("eps", "vp", 5, "ddpm", True, "initial-noise")
    mine = PolicyConfig(algo="edp", prediction="eps", sampler="ddim", clip_one_step=True).resolved()
    assert (mine.prediction, mine.sampler, mine.clip_one_step) == ("eps", "ddim", True)



def _chain_loss(remat: str, hidden: int = 16, batch: int = 64):
    """(loss of DQL's Q-term chain as a function of the noise net's parameters, the parameters)."""
    pol = policy("dql", hidden=hidden, depth=3, T=5, chain_remat=remat)
    params = pol.init(jax.random.PRNGKey(0))["params"]
    obs = jax.random.normal(jax.random.PRNGKey(1), (batch, 3))
    act = jnp.zeros((batch, 2))

    def loss(p):
        return jnp.sum(pol.q_action(pol.model_fn(p, obs), act, jax.random.PRNGKey(2)) ** 2)

    return loss, params


@pytest.mark.parametrize("remat", ["matmuls", "all"])
def test_a_rematerialized_chain_gives_the_same_actions_and_gradients(remat):
    loss_none, params = _chain_loss("none")
    loss_remat, _ = _chain_loss(remat)
    value_none, grad_none = jax.value_and_grad(loss_none)(params)
    value, grad = jax.value_and_grad(loss_remat)(params)
    np.testing.assert_allclose(value, value_none, rtol=1e-5)
    for g, g_none in zip(jax.tree.leaves(grad), jax.tree.leaves(grad_none), strict=True):
        np.testing.assert_allclose(g, g_none, rtol=1e-4, atol=1e-6)


def test_a_rematerialized_chain_keeps_less_for_the_backward_pass():
    def temporaries(remat):
        loss, params = _chain_loss(remat, hidden=64, batch=512)
        return jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis().temp_size_in_bytes

    keep_all, matmuls, inputs = (temporaries(r) for r in ddpm.REMAT)
    assert matmuls < 0.7 * keep_all and inputs < 0.7 * matmuls, (keep_all, matmuls, inputs)

@pytest.mark.parametrize("bad", [dict(prediction="v"), dict(noise_schedule="sqrt"), dict(sampler="dpm"),
                                 dict(temperature_mode="both"), dict(clip_denoised="yes"), dict(clip_one_step=1),
                                 dict(chain_remat="yes")])
def test_policy_config_refuses_unknown_diffusion_settings(bad):
    with pytest.raises(MDPTError):
        PolicyConfig(algo="edp", **bad).resolved()


# ----------------------------- artifacts saved before these settings -----------------------------

NEW_KEYS = ("prediction", "noise_schedule", "temperature_mode", "clip_denoised", "clip_one_step")


@pytest.mark.parametrize("algo,sampler", [("edp", "ddim"), ("dql", "ddpm")])
def test_artifacts_without_the_new_keys_load_with_their_old_behaviour(tmp_path, tiny_dataset, algo, sampler):
    import mdpt.artifacts as artifacts
    from mdpt.data.normalizer import Normalizer

    # what the code before these settings saved: a resolved config without the new keys
    module = DiffusionPolicy(PolicyConfig(algo=algo, hidden=16, depth=1, sampler=sampler), 15, 3)
    params = jax.device_get(jax.vmap(lambda k: module.init(k)["params"])(jax.random.split(jax.random.PRNGKey(0), 1)))
    d = artifacts.save_artifact(tmp_path / "old", "policy", module, params, Normalizer.fit(tiny_dataset),
                                artifacts.dataset_record(tiny_dataset), [0], 10)
    meta = json.loads((d / artifacts.META_FILE).read_text())
    for k in NEW_KEYS:
        del meta["config"][k]
    meta[artifacts.META_DIGEST] = artifacts.meta_digest(meta)
    (d / artifacts.META_FILE).write_text(json.dumps(meta))

    c = artifacts.load_policy(d).module.config
    assert (c.prediction, c.noise_schedule, c.temperature_mode, c.clip_denoised, c.clip_one_step) == \
        ("eps", "vp", "per-step", True, True)
    assert c.sampler == sampler and c.T == module.config.T  # as recorded
