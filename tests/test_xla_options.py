"""The XLA options training programs compile with on CPU: applied, equivalent, and optional."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest

from mdpt.guidance.module import GuidanceConfig, GuidanceModule
from mdpt.policies.module import DiffusionPolicy, PolicyConfig
from mdpt.training import xla_options
from mdpt.training.trainer import Trainer

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the options are CPU options")


@pytest.fixture
def options_from_env(monkeypatch):
    """Sets MDPT_XLA_CPU_OPTIONS for one test; the cached answer is recomputed before and after."""
    def set_to(value):
        monkeypatch.setenv("MDPT_XLA_CPU_OPTIONS", value)
        xla_options.training_compiler_options.cache_clear()
    yield set_to
    monkeypatch.delenv("MDPT_XLA_CPU_OPTIONS", raising=False)
    xla_options.training_compiler_options.cache_clear()


def joint_dql_trainer(**options) -> Trainer:
    rng = np.random.default_rng(0)
    n = 512
    arrays = {"obs": rng.normal(size=(n, 4)), "act": rng.uniform(-1, 1, (n, 2)), "rew": rng.normal(size=n),
              "mask": np.ones(n), "next_obs": rng.normal(size=(n, 4)), "next_act": rng.uniform(-1, 1, (n, 2)),
              "next_valid": np.ones(n)}
    arrays = {k: jax.numpy.asarray(v, jax.numpy.float32) for k, v in arrays.items()}
    policy = DiffusionPolicy(PolicyConfig(algo="dql", hidden=64, depth=2, ema_start=0), 4, 2)
    critic = GuidanceModule(GuidanceConfig(kind="dql-critic", hidden=64, depth=2), 4, 2)
    return Trainer(arrays, policy, critic, "train", "train", batch_size=64, **options)


def ops_in_ynn_fusions(hlo: str) -> set[str]:
    """The HLO ops inside the computations that XLA hands to YNNPACK."""
    bodies = dict(re.findall(r"^%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}", hlo, re.S | re.M))
    called = re.findall(r"calls=%?([\w.\-]+), [^\n]*__ynn_fusion", hlo)
    return {op for c in called for op in re.findall(r"= \S+ ([\w-]+)\(", bodies[c])}


def train(trainer: Trainer) -> tuple[dict, str]:
    state = trainer.init([0, 1])
    hlo = trainer.compiled(state, 5).as_text()
    state, _ = trainer.run(state, 5)
    return state, hlo


def test_training_compiles_with_ynnpack_on_matmuls_alone_and_computes_the_same_step(options_from_env):
    options_from_env("")
    if not xla_options.training_compiler_options():
        pytest.skip("this JAX's CPU compiler lacks the option (the fallback is tested below)")
    with_options, hlo = train(joint_dql_trainer())
    assert ops_in_ynn_fusions(hlo) == {"dot", "parameter"}

    defaults, hlo_default = train(joint_dql_trainer(compiler_options={}))
    assert ops_in_ynn_fusions(hlo_default) - {"dot", "parameter", "bitcast"}  # XLA's default fuses more
    for a, b in zip(jax.tree.leaves(with_options), jax.tree.leaves(defaults), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_an_option_this_jax_does_not_know_falls_back_to_xla_defaults(options_from_env, monkeypatch):
    monkeypatch.setattr(xla_options, "CPU_TRAINING_OPTIONS", {"xla_cpu_no_such_option": "1"})
    options_from_env("")
    assert xla_options.training_compiler_options() == {}


def test_the_options_can_be_turned_off(options_from_env):
    options_from_env("off")
    assert xla_options.training_compiler_options() == {}
