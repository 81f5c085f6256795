"""Every number a user can give is checked, wherever it comes from: each numeric flag of each
subcommand (found by walking the parsers), each numeric setting of the settings tree, each
environment variable MDPT reads (found by a grep of the package) and the numeric arguments of the
Python API get NaN, infinity, negative, zero, huge and wrong-type values, and answer with one line
and exit code 2 (command line) or an `MDPTError` (API), before anything is compiled or trained.
A value that is valid (zero for a flag whose range holds it) is skipped."""

from __future__ import annotations

import argparse
import re
import typing
from pathlib import Path

import numpy as np
import pytest

from mdpt.cli.flags import Checked
from mdpt.cli.main import build_parser
from mdpt.errors import MDPTError
from mdpt.experiments.config import FLOAT_LIMITS, INT_LIMITS, RunConfig, resolve_config
from mdpt.settings import leaves, set_dotted

BAD = ("nan", "NaN", "inf", "-inf", "1e999", "-1", "0", "1e30", "99999999999999999999999", "1" + "0" * 400, "abc", "",
       "1.5", "0x10")


def numeric_flags() -> list[tuple[tuple[str, ...], str, argparse.Action]]:
    """(subcommand path, flag, action) of every flag whose value is a number, in every subparser."""
    out = []

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*path, name))
            elif action.option_strings and (isinstance(action.type, Checked) or action.type in (int, float)):
                out.append((path, action.option_strings[-1], action))

    walk(build_parser(), ())
    return out


FLAGS = numeric_flags()


def test_every_numeric_flag_is_checked_and_the_list_is_derived_from_the_parsers():
    unchecked = [f"{' '.join(p)} {flag}" for p, flag, a in FLAGS if not isinstance(a.type, Checked)]
    assert not unchecked, f"numeric flags without a checked type (mdpt.cli.flags.count/number): {unchecked}"
    commands = {p for p, _, _ in FLAGS}
    assert {("evaluate",), ("reproduce",), ("data", "make"), ("study",), ("sweep",), ("quickstart",)} <= commands
    assert len(FLAGS) >= 40, len(FLAGS)


@pytest.mark.parametrize("path,flag,action", FLAGS, ids=[f"{' '.join(p)} {f}" for p, f, _ in FLAGS])
def test_every_numeric_flag_refuses_bad_values_in_one_line(path, flag, action, run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kind: Checked = action.type
    for raw in BAD:
        try:
            value = float(raw)
        except ValueError:
            value = None
        valid = (value is not None and np.isfinite(value) and kind.lo <= value <= kind.hi
                 and (kind.kind is float or value == int(value)) and raw not in ("1e999",))
        if valid:
            continue  # e.g. --seed 0: a valid value would start the command
        code, out, err = run_cli(*path, f"{flag}={raw}")
        assert code == 2 and err.count("\n") == 1 and f"argument {flag}" in err, (raw, err)
    assert list(tmp_path.iterdir()) == []  # nothing written
    # the ends of the range are values the parser takes
    assert kind(str(kind.hi if kind.kind is float else int(kind.hi))) == kind.hi
    assert kind(str(kind.lo if kind.kind is float else int(kind.lo))) == kind.lo


# ----------------------------------------------------------------------------- the settings tree

def _types(hint) -> set:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        return _types(args[0])
    return {a for a in args if a is not type(None)} or {hint}


NUMERIC_LEAVES = [(name, hint) for name, _, hint in leaves(RunConfig) if _types(hint) & {int, float}]
ALWAYS_BAD = (float("nan"), float("inf"), -float("inf"), 1e300, -1e300, 10**30, -(10**30), 10**400, -(10**400), "abc",
              "1", True,
              [1.0, [2]], {"a": 1})


def test_every_float_setting_has_a_limit():
    floats = sorted(name for name, hint in NUMERIC_LEAVES if float in _types(hint))
    assert floats == sorted(FLOAT_LIMITS)


@pytest.mark.parametrize("name,hint", NUMERIC_LEAVES, ids=[n for n, _ in NUMERIC_LEAVES])
def test_every_numeric_setting_refuses_bad_values(name, hint):
    """Each numeric leaf alone, for each algorithm (settings of cfg policies only apply there): NaN,
    infinity, huge, strings, booleans, lists and mappings are refused with one line; -1 and 0 are
    refused or make a valid config."""
    for algo in ("dql", "cfg"):
        for value in (*ALWAYS_BAD, -1, 0, -1.0, 0.0):
            d = {"dataset": "bullet-hopper-medium-v0", "algo": algo, "mode": "guidance-first"}
            if typing.get_origin(hint) is tuple and not isinstance(value, list):
                value = [value]
            set_dotted(d, name, value, "test")
            try:
                config = resolve_config(d)
            except MDPTError as e:
                assert "\n" not in str(e) and len(str(e)) < 400, str(e)
                continue
            assert value in (-1, 0, [-1], [0]), f"{name}={value!r} was accepted"
            config.policy_config()
            config.guidance_config()


def test_a_huge_float_setting_is_refused_with_its_limit(run_cli, tmp_path):
    code, _, err = run_cli("train-policy", "--dataset", "bullet-hopper-medium-v0", "--algo", "dql",
                           "--set", "policy.lr=1.0e+30", "--out", tmp_path / "run")
    assert code == 2 and "policy.lr 1e+30 is beyond its limit +-10" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_the_integer_and_float_limit_tables_name_only_settings():
    names = {name for name, _ in NUMERIC_LEAVES}
    assert set(INT_LIMITS) | set(FLOAT_LIMITS) == names


# ----------------------------------------------------------------------------- environment variables

def _env_readers(tmp_path) -> dict:
    """Each environment variable MDPT reads (name -> the call that reads it), for the grep below."""
    from mdpt.compile_cache import enable_compile_cache
    from mdpt.data.load import check_source, dataset_url, download_timeout, offline
    from mdpt.training.checkpoint import save_checkpoint
    from mdpt.training.profiling import available_memory
    from mdpt.training.xla_options import training_compiler_options

    return {
        "MDPT_MEMORY_LIMIT_BYTES": available_memory,
        "MDPT_DOWNLOAD_TIMEOUT": download_timeout,
        "MDPT_TEST_SLOW_CHECKPOINT": lambda: save_checkpoint(tmp_path / "ckpt", {"x": np.zeros(2)}, 1),
        "MDPT_COMPILE_CACHE": enable_compile_cache,
        "MDPT_DATA_DIR": lambda: check_source("bullet-hopper-medium-v0", download=False),
        "MDPT_OFFLINE": offline,
        "MDPT_D4RL_URL": lambda: dataset_url("bullet-hopper-medium-v0"),
        "MDPT_XLA_CPU_OPTIONS": training_compiler_options,
    }


def environment_variables() -> set[str]:
    """Every MDPT_* name the package's code mentions."""
    root = Path(__file__).resolve().parents[1] / "mdpt"
    names = set()
    for path in root.rglob("*.py"):
        names |= set(re.findall(r"\bMDPT_[A-Z0-9_]+\b", path.read_text()))
    return names


def test_every_environment_variable_is_fuzzed(tmp_path):
    assert environment_variables() == set(_env_readers(tmp_path))


@pytest.mark.parametrize("name", sorted(environment_variables()))
def test_every_environment_variable_refuses_bad_values_in_one_line(name, tmp_path, monkeypatch):
    """Read with NaN, infinity, negative, zero, huge and non-numeric values: the reader works, or raises one
    line that names the variable; never another exception."""
    import jax

    monkeypatch.chdir(tmp_path)  # relative folders the values name are made here
    kept = jax.config.jax_compilation_cache_dir
    read = _env_readers(tmp_path)[name]
    for raw in ("nan", "inf", "-1", "0", "1e999", "-1e999", "abc", "", " ", "\x01", "9" * 400):
        monkeypatch.setenv(name, raw)
        try:
            read()
        except MDPTError as e:
            assert "\n" not in str(e) and len(str(e)) < 600, str(e)
    jax.config.update("jax_compilation_cache_dir", kept)


@pytest.mark.parametrize("name,raw", [("MDPT_MEMORY_LIMIT_BYTES", "1e999"), ("MDPT_MEMORY_LIMIT_BYTES", "nan"),
                                      ("MDPT_DOWNLOAD_TIMEOUT", "nan"), ("MDPT_DOWNLOAD_TIMEOUT", "-1"),
                                      ("MDPT_DOWNLOAD_TIMEOUT", "inf"), ("MDPT_TEST_SLOW_CHECKPOINT", "-1")])
def test_a_bad_number_in_the_environment_is_refused(name, raw, tmp_path, monkeypatch):
    monkeypatch.setenv(name, raw)
    with pytest.raises(MDPTError, match=re.escape(f"{name}={raw!r}")):
        _env_readers(tmp_path)[name]()


def test_an_unwritable_compile_cache_is_checked_once_and_left_off(tmp_path, monkeypatch):
    """A folder that exists but takes no files: one warning, the cache stays off (JAX would warn once per
    compiled program)."""
    import tempfile

    from mdpt import compile_cache

    folder = tmp_path / "xla"
    folder.mkdir()

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    warnings = []
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    monkeypatch.setattr(compile_cache.LOG, "warning", lambda *a: warnings.append(a[0] % a[1:]))
    assert compile_cache.enable_compile_cache(folder) is None
    assert len(warnings) == 1 and "cannot write to" in warnings[0] and "running without it" in warnings[0]
    assert list(folder.iterdir()) == []


# ----------------------------------------------------------------------------- the Python API

@pytest.mark.parametrize("argument", ["episodes", "seed", "max_steps"])
def test_evaluate_refuses_bad_numbers_before_loading_anything(argument, tmp_path):
    import mdpt

    for value in (1.5, float("nan"), float("inf"), -1, 10**30, "3", None, True):
        if argument == "max_steps" and value is None:
            continue  # None: the env's own limit
        with pytest.raises(MDPTError, match=argument) as e:
            mdpt.evaluate(tmp_path / "no-policy", episodes=value if argument == "episodes" else 2,
                          seed=value if argument == "seed" else 0,
                          max_steps=value if argument == "max_steps" else None)
        assert "\n" not in str(e.value)
    with pytest.raises(MDPTError, match="seed must be in 0..2147483637"):
        mdpt.evaluate(tmp_path / "no-policy", episodes=10, seed=2**31 - 5)


def test_agent_act_refuses_observations_of_the_wrong_size():
    import jax
    from test_preflight import tiny_artifacts

    from mdpt.agent import Agent, SelectorConfig

    policy, guidance = tiny_artifacts(seeds=2)
    agent = Agent(policy, guidance, SelectorConfig(candidates=2))
    for obs in (np.zeros((2, 3, 14)), np.zeros((3, 3, 15)), np.zeros((2, 15)), np.zeros((2, 0, 15)), "x",
                [[["a"]]]):
        with pytest.raises(MDPTError, match="observations must") as e:
            agent.act(obs, jax.random.PRNGKey(0))
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("argument", ["sac_steps", "transitions", "seed", "eval_every", "eval_episodes",
                                      "learning_starts", "train_freq"])
def test_data_make_refuses_bad_numbers_and_leaves_no_work_folder(argument, tmp_path):
    from mdpt.data.make import make_dataset

    for value in (-1, 1.5, float("nan"), 10**30, "5"):
        with pytest.raises(MDPTError, match=argument.replace("_", "-")):
            make_dataset("bullet-hopper-medium-v0", out_dir=tmp_path / "out", **{argument: value})
    assert not (tmp_path / "out").exists()


def test_data_make_seed_minus_one_is_one_line_and_leaves_nothing(tmp_path, run_cli):
    code, _, err = run_cli("data", "make", "bullet-hopper-medium-v0", "--seed", "-1", "--out", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1 and "--seed" in err
    assert not (tmp_path / "out").exists()


API_BAD = (float("nan"), float("inf"), -float("inf"), 10**30, 10**400, 1e300, "3", True, [1], None, -1, 1.5, 0)


def test_agent_and_loaders_refuse_bad_numbers():
    """The Agent's selection numbers and a loader's seed index, from Python: MDPTError, one line."""
    from test_preflight import tiny_artifacts

    from mdpt.agent import Agent, SelectorConfig

    policy, guidance = tiny_artifacts(seeds=2)
    valid = {"candidates": (None,), "beta": (None, 0, 1.5), "temperature": (None, 0, 1.5),
             "cfg_weight": (0, 1.5, -1)}  # None: the module's own preset
    for name, ok in valid.items():
        for value in API_BAD:
            if any(value is v or (type(value) is type(v) and value == v) for v in ok):
                continue
            with pytest.raises(MDPTError, match=name) as e:
                Agent(policy, guidance, SelectorConfig(**{"candidates": 2, name: value}))
            assert "\n" not in str(e.value)
    for args in (("runs/x", guidance, SelectorConfig()), (policy, ["runs/g"], SelectorConfig()), (policy, None, {})):
        with pytest.raises(MDPTError, match="must be an artifact|must be a SelectorConfig"):
            Agent(*args)
    for value in (*API_BAD, 2):  # 2: the policy holds seeds 0 and 1
        if value is None or (type(value) is int and value == 0):
            continue
        with pytest.raises(MDPTError, match="seed index") as e:
            policy.select(value)
        assert "\n" not in str(e.value)
    import dataclasses

    with_seeds = dataclasses.replace(policy, meta={**policy.meta, "seeds": [0, 1]})
    assert with_seeds.select(np.int64(1)).meta["seeds"] == [1]


def test_train_refuses_a_config_made_directly_with_bad_values(tmp_path):
    import dataclasses

    import mdpt

    config = RunConfig.from_dict({"dataset": "bullet-hopper-medium-v0", "algo": "dql"})
    for change in ({"steps": 1.5}, {"seeds": float("nan")}, {"batch_size": "8"}, {"seed": -1},
                   {"policy": dataclasses.replace(config.policy, lr=float("inf"))},
                   {"selector": dataclasses.replace(config.selector, beta=1e300)}):
        with pytest.raises(MDPTError) as e:
            mdpt.train(dataclasses.replace(config, **change), tmp_path / "run")
        assert "\n" not in str(e.value)
    with pytest.raises(MDPTError, match="expected a mapping of settings"):
        mdpt.train([1, 2], tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("field", ["seeds", "seed", "steps", "eval_every", "curve_episodes", "final_episodes",
                                   "transfer_points", "ensemble_k", "curve_candidates", "eval_max_steps",
                                   "unfreeze_at", "swap_candidates"])
def test_a_reproduction_protocol_from_python_refuses_bad_numbers(field):
    from mdpt.reproduction.protocol import Protocol

    for value in (1.5, float("nan"), float("inf"), -1, "3", True, 10**30):
        with pytest.raises(MDPTError, match=f"--{field.replace('_', '-')}") as e:
            Protocol(datasets=("bullet-hopper-medium-v0",), **{field: value}).validate()
        assert "\n" not in str(e.value)
