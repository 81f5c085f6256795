"""Matmul precision (mdpt.nets.precision): TF32 / bf16 rounding that a CPU computes as a GPU would."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mdpt.errors import MDPTError
from mdpt.guidance.module import GuidanceConfig, GuidanceModule
from mdpt.nets.precision import MANTISSA_BITS, round_mantissa, rounded_matmul
from mdpt.policies.module import DiffusionPolicy, PolicyConfig


def reference_round(x: np.ndarray, bits: int) -> np.ndarray:
    """Round to nearest-even to 1 + `bits` significant bits, in float64 (an independent computation)."""
    m, e = np.frexp(x.astype(np.float64))  # x = m 2^e, 0.5 <= |m| < 1: m carries 1 + bits significant bits
    return np.ldexp(np.round(m * 2.0 ** (bits + 1)) / 2.0 ** (bits + 1), e).astype(np.float32)


NORMAL_FLOATS = arrays(np.float32, st.integers(1, 64), elements=st.floats(
    -2.0**100, 2.0**100, width=32, allow_nan=False, allow_subnormal=False).filter(lambda v: v == 0 or abs(v) > 2.0**-100))


@settings(max_examples=60, deadline=None)
@given(NORMAL_FLOATS, st.sampled_from(sorted(MANTISSA_BITS)))
def test_rounding_is_round_to_nearest_even_at_the_format_width(x, fmt):
    bits = MANTISSA_BITS[fmt]
    np.testing.assert_array_equal(np.asarray(round_mantissa(jnp.asarray(x), bits)), reference_round(x, bits))


def test_bf16_rounding_is_jax_bfloat16_and_ties_go_to_even():
    x = jax.random.normal(jax.random.PRNGKey(0), (4096,)) * 1e3
    np.testing.assert_array_equal(np.asarray(round_mantissa(x, 7)), np.asarray(x.astype(jnp.bfloat16).astype(jnp.float32)))
    # 1 + 2^-11 lies halfway between the TF32 neighbours 1 and 1 + 2^-10: it goes to 1 (even)
    ties = jnp.asarray([1 + 2.0**-11, 1 + 3 * 2.0**-11, jnp.nan, jnp.inf], jnp.float32)
    got = np.asarray(round_mantissa(ties, 10))
    assert got[0] == 1.0 and got[1] == 1 + 2 * 2.0**-10 and np.isnan(got[2]) and got[3] == np.inf


@pytest.mark.parametrize("fmt", ["tf32", "bf16"])
def test_rounded_matmul_rounds_the_inputs_of_all_three_matmuls(fmt):
    bits = MANTISSA_BITS[fmt]
    kx, kw, kg = jax.random.split(jax.random.PRNGKey(1), 3)
    x, w = jax.random.normal(kx, (2, 8, 16)), jax.random.normal(kw, (16, 4))
    g = jax.random.normal(kg, (2, 8, 4))  # the incoming gradient: not representable in either format
    r = lambda a: reference_round(np.asarray(a), bits).astype(np.float64)  # noqa: E731

    y, pullback = jax.vjp(lambda a, b: rounded_matmul(a, b, fmt), x, w)
    dx, dw = pullback(g)
    np.testing.assert_allclose(np.asarray(y), r(x) @ r(w), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(dx), r(g) @ r(w).T, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(dw), np.einsum("bik,bin->kn", r(x), r(g)), rtol=1e-6, atol=1e-6)
    # the fp32 product differs from it by the rounding: this test would see a missing one
    assert not np.allclose(np.asarray(dx), np.asarray(g) @ np.asarray(w).T, rtol=1e-6, atol=1e-6)


def policy_outputs(precision: str):
    pol = DiffusionPolicy(PolicyConfig(algo="dql", hidden=32, depth=2, matmul_precision=precision), 5, 3)
    params = pol.init(jax.random.PRNGKey(0))["params"]
    obs = jax.random.normal(jax.random.PRNGKey(1), (64, 5))
    x = jax.random.normal(jax.random.PRNGKey(2), (64, 3))
    eps = pol.model_fn(params, obs)(x, jnp.full((64,), 3))
    grads = jax.grad(lambda p: jnp.sum(pol.model_fn(p, obs)(x, jnp.full((64,), 3)) ** 2))(params)
    return params, np.asarray(eps), grads


def test_networks_use_their_matmul_precision_and_keep_the_same_parameters():
    params, eps, grads = policy_outputs("default")
    for precision, closeness in (("highest", 0.0), ("tf32", 1e-2), ("bf16", 5e-2)):
        p_params, p_eps, p_grads = policy_outputs(precision)
        assert jax.tree.structure(p_params) == jax.tree.structure(params)  # artifacts interchangeable
        diff = np.abs(p_eps - eps).max() / np.abs(eps).max()
        assert diff <= closeness, (precision, diff)
        if closeness:  # the rounding reaches the outputs and the gradients
            assert diff > 0, precision
            assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(p_grads), jax.tree.leaves(grads),
                                                                strict=True))


def test_guidance_networks_use_their_matmul_precision():
    def q(precision):
        g = GuidanceModule(GuidanceConfig(kind="iql", hidden=32, depth=2, matmul_precision=precision), 5, 3)
        params = g.init(jax.random.PRNGKey(0))["params"]
        obs, act = jax.random.normal(jax.random.PRNGKey(1), (64, 5)), jax.random.normal(jax.random.PRNGKey(2), (64, 3))
        return np.asarray(g.q(params, obs, act)), np.asarray(g.v(params, obs))

    base = q("default")
    for got, want in zip(q("bf16"), base, strict=True):
        assert not np.array_equal(got, want)
        np.testing.assert_allclose(got, want, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("cls", [PolicyConfig, GuidanceConfig])
def test_an_unknown_matmul_precision_is_refused(cls):
    with pytest.raises(MDPTError, match="matmul_precision"):
        cls(matmul_precision="fp8").resolved()


def test_configs_saved_before_the_setting_load_as_default():
    old = PolicyConfig(algo="dql").resolved().to_json()
    del old["matmul_precision"]
    assert PolicyConfig.from_json(old).matmul_precision == "default"
    old = GuidanceConfig(kind="iql").resolved().to_json()
    del old["matmul_precision"]
    assert GuidanceConfig.from_json(old).matmul_precision == "default"
