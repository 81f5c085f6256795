"""Property-based: RunConfig.from_dict on random input ends in a valid config or a one-line
MDPTError, never another exception."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from mdpt.errors import MDPTError
from mdpt.experiments.config import RunConfig
from mdpt.guidance.module import GuidanceConfig
from mdpt.policies.module import PolicyConfig

COUNTS = {"cases": 0, "valid": 0, "refused": 0}
RUN_KEYS = [f.name for f in dataclasses.fields(RunConfig)]
POLICY_KEYS = [f.name for f in dataclasses.fields(PolicyConfig)]
GUIDANCE_KEYS = [f.name for f in dataclasses.fields(GuidanceConfig)]
WORDS = ["dql", "idql", "edp", "cfg", "iql", "sarsa", "dql-critic", "joint", "guidance-first", "guided", "unguided",
         "random-guidance", "argmax", "softmax", "none", "d4rl", "dataset", "mlp", "resnet", "ddpm", "ddim",
         "cosine", "constant", "relu", "mish", "x", ""]
SCALARS = (st.none() | st.booleans() | st.integers(-3, 300) | st.integers(-(2**64), 2**64)
           | st.floats(allow_nan=True, allow_infinity=True) | st.floats(-2, 2) | st.sampled_from(WORDS)
           | st.text(max_size=5))
VALUES = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                      max_leaves=6)


def sub_dict(keys):
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=4), VALUES, max_size=4)


CONFIGS = st.fixed_dictionaries(
    {"dataset": st.sampled_from(["bullet-hopper-medium-v0", "x.hdf5"]) | VALUES},
    optional={**{k: VALUES for k in RUN_KEYS if k not in ("dataset", "policy", "guidance")},
              "policy": sub_dict(POLICY_KEYS) | VALUES, "guidance": sub_dict(GUIDANCE_KEYS) | VALUES,
              "unknown_key": VALUES},
)


def check(d) -> None:
    COUNTS["cases"] += 1
    try:
        config = RunConfig.from_dict(d)
    except MDPTError as e:
        COUNTS["refused"] += 1
        assert "\n" not in str(e), str(e)
        return
    COUNTS["valid"] += 1
    assert isinstance(config, RunConfig)
    config.policy_config() if config.algo else None  # a valid config builds its parts without error
    config.guidance_config()


@settings(max_examples=400, deadline=None, derandomize=True)
@given(CONFIGS)
def test_random_configs_are_valid_or_refused(d):
    check(d)


@settings(max_examples=250, deadline=None, derandomize=True)
@given(st.sampled_from(RUN_KEYS), VALUES,
       st.fixed_dictionaries({}, optional={"algo": st.sampled_from(["dql", "idql", "edp", "cfg"]),
                                           "mode": st.sampled_from(["joint", "guidance-first"])}))
def test_one_wrong_value_for_a_known_key(key, value, base):
    check({"dataset": "bullet-hopper-medium-v0", **base, key: value})


@settings(max_examples=250, deadline=None, derandomize=True)
@given(st.sampled_from(["policy", "guidance"]), st.data(), st.sampled_from(["dql", "idql", "edp", "cfg"]))
def test_one_wrong_value_inside_policy_or_guidance(section, data, algo):
    keys = POLICY_KEYS if section == "policy" else GUIDANCE_KEYS
    key = data.draw(st.sampled_from(keys))
    check({"dataset": "d", "algo": algo, section: {key: data.draw(VALUES)}})


@given(st.one_of(st.none(), st.integers(), st.text(), st.lists(SCALARS)))
@settings(max_examples=100, deadline=None, derandomize=True)
def test_not_a_mapping(d):
    check(d)


def test_fuzz_count():
    print(f"\nconfig fuzz cases run: {COUNTS}")
    assert COUNTS["cases"] >= 1000 and COUNTS["valid"] > 0 and COUNTS["refused"] > 0
