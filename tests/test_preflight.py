"""Issue 13, "refuse up front what cannot run": sizes whose compiled step cannot fit in memory,
counters past their limits, non-finite floats anywhere in the settings, and the exit codes of a
stopped run (3) and a failed sweep (4). Each refusal is one line, before any training or rollout.

Memory: `MDPT_MEMORY_LIMIT_BYTES` stands in for the memory available, so a refusal needs no large
allocation: XLA's memory analysis of the compiled program is compared with it.
"""

from __future__ import annotations

import re
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from conftest import d4rl_arrays

import mdpt.evaluation.rollout
from mdpt.agent import MAX_CANDIDATES, Agent, SelectorConfig
from mdpt.artifacts import Artifact, save_artifact
from mdpt.data.dataset import Dataset
from mdpt.data.normalizer import Normalizer
from mdpt.data.registry import env_spec_for
from mdpt.errors import MDPTError, RunStopped, SweepFailed
from mdpt.evaluation.api import MAX_EPISODES, evaluate, evaluate_agent
from mdpt.experiments.config import INT_LIMITS, RunConfig
from mdpt.experiments.group import GroupRun
from mdpt.experiments.run_checks import ValueCheck
from mdpt.experiments.runner import Run
from mdpt.guidance.module import GuidanceConfig, GuidanceModule
from mdpt.policies.module import DiffusionPolicy, PolicyConfig
from mdpt.settings import leaves, set_dotted
from mdpt.training import profiling
from mdpt.training.trainer import Trainer

LIMIT = profiling.MEMORY_LIMIT_ENV
HOPPER = env_spec_for("HopperBulletEnv-v0")


def one_line(err: str) -> str:
    assert err.startswith("mdpt: error: ") and err.count("\n") == 1, err
    return err


def numbers(message: str) -> tuple[int, int]:
    """(needed, available) bytes of a memory refusal."""
    m = re.search(r"needs (\d+) bytes .* but (\d+) bytes .* is available", message)
    assert m, message
    return int(m.group(1)), int(m.group(2))


@pytest.fixture(autouse=True)
def _real_memory(monkeypatch):
    """Tests set the override themselves; none comes from the caller's environment."""
    monkeypatch.delenv(LIMIT, raising=False)


@pytest.fixture
def no_training(monkeypatch):
    """Any chunk that starts fails the test: refusals come before training."""
    def refuse(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(Trainer, "run", refuse)


@pytest.fixture
def no_rollout(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a rollout started")

    monkeypatch.setattr(mdpt.evaluation.rollout, "evaluate", refuse)


# ----------------------------------------------------------------------------- 1. sizes vs memory

def test_memory_limit_override_and_host_memory(monkeypatch):
    for raw, value in (("1000", 1000), ("8G", 8 * 2**30), ("512MiB", 512 * 2**20), ("1.5k", 1536)):
        monkeypatch.setenv(LIMIT, raw)
        assert profiling.available_memory() == (value, LIMIT)
    monkeypatch.setenv(LIMIT, "off")
    assert profiling.available_memory()[0] is None
    for bad in ("0", "-5", "lots", "8X"):
        monkeypatch.setenv(LIMIT, bad)
        with pytest.raises(MDPTError, match=LIMIT) as e:
            profiling.available_memory()
        assert "\n" not in str(e.value)
    monkeypatch.delenv(LIMIT)
    available, source = profiling.available_memory()
    if available is None:
        pytest.skip("no /proc/meminfo here")
    assert available > 2**27 and "host memory" in source


def guidance_argv(data, out, batch=16, extra=()):
    """A tiny IQL guidance run (the one test_reliability_faults compiles)."""
    return ["train-guidance", "--kind", "iql", "--dataset", str(data), "--steps", "20", "--chunk", "5",
            "--checkpoint-every", "5", "--batch-size", str(batch), "--set", "guidance.hidden=16",
            "--set", "guidance.depth=1", "--out", str(out), "--no-progress", *extra]


def test_tiny_limit_refuses_a_run_before_its_first_chunk(tiny_hopper_hdf5, tmp_path, monkeypatch, run_cli,
                                                         no_training):
    monkeypatch.setenv(LIMIT, "1000")
    out = tmp_path / "run"
    code, _, err = run_cli(*guidance_argv(tiny_hopper_hdf5, out))
    assert code == 2
    need, have = numbers(one_line(err))
    assert have == 1000 < need and LIMIT in err and "lower batch_size, seeds" in err
    assert not (out / "checkpoints" / "checkpoint.json").exists()
    assert not (out / "metrics.jsonl").exists() or (out / "metrics.jsonl").read_text() == ""
    assert not (out / "config.json").exists()  # the smaller run the message suggests may use the same --out


def test_a_batch_xla_says_is_huge_is_refused_with_both_numbers(tiny_dataset, tmp_path, monkeypatch, no_training):
    """batch_size 2^20 through a 16-wide IQL guidance: XLA's analysis of the real step says it
    needs well over the 512 MiB allowed (B x 16 floats per activation, several activations)."""
    monkeypatch.setenv(LIMIT, "512M")
    config = RunConfig.from_dict({"dataset": "tiny", "guidance_kind": "iql", "steps": 20, "chunk": 5,
                                  "batch_size": 2**20, "guidance": {"hidden": 16, "depth": 1}, "eval_variants": []})
    with pytest.raises(MDPTError) as e:
        Run(tmp_path / "run", config, progress=False, log=lambda *a: None, dataset=tiny_dataset).execute()
    need, have = numbers(str(e.value))
    assert have == 2**29 and need > have and need > 2**20 * 16 * 4 * 4  # at least four (B, 16) float arrays
    assert "the training step (1 seeds x batch 1048576)" in str(e.value) and "\n" not in str(e.value)


def _group_datasets():
    out = {}
    for name, lengths, seed in (("bullet-hopper-medium-v0", (6, 4, 5), 1),
                                ("bullet-hopper-medium-replay-v0", (3, 7, 2, 9), 2)):
        a = d4rl_arrays(lengths=lengths, seed=seed)
        out[name] = Dataset(a["observations"], a["actions"], a["rewards"], a["terminals"], a["timeouts"],
                            a["next_observations"], env=HOPPER, dataset_id=name)
    return out


def test_group_refuses_a_program_that_cannot_fit(tmp_path, monkeypatch, no_training):
    monkeypatch.setenv(LIMIT, "1000")
    datasets = _group_datasets()
    common = {"guidance_kind": "iql", "steps": 6, "chunk": 3, "seeds": 2, "batch_size": 8, "eval_variants": [],
              "guidance": {"hidden": 16, "depth": 1}, "policy": {"hidden": 16, "depth": 1}}
    items = [(tmp_path / ds, RunConfig.from_dict({"dataset": ds, **common})) for ds in datasets]
    with pytest.raises(MDPTError) as e:
        GroupRun(items, log=lambda *a: None, datasets=datasets).execute()
    need, have = numbers(str(e.value))
    assert have == 1000 < need and "2 datasets x 2 seeds" in str(e.value) and "group fewer runs" in str(e.value)
    assert not any((d / "checkpoints" / "checkpoint.json").exists() for d, _ in items)


def _allocate_a_petabyte(*a, **k):
    """A real XLA allocation failure (2^50 bytes: beyond any address space, so nothing is taken)."""
    jnp.ones((1 << 48,), jnp.float32).block_until_ready()


def test_out_of_memory_at_run_time_is_one_line(tiny_hopper_hdf5, tmp_path, monkeypatch, run_cli):
    monkeypatch.setattr(Trainer, "run", _allocate_a_petabyte)
    code, _, err = run_cli(*guidance_argv(tiny_hopper_hdf5, tmp_path / "run"))
    assert code == 2
    one_line(err)
    assert "ran out of memory (RESOURCE_EXHAUSTED: Out of memory allocating 1125899906842624 bytes" in err
    assert "is available" in err and "lower batch_size" in err
    # anywhere else (here inside `mdpt sweep`): the same one line from the command line itself
    monkeypatch.setattr("mdpt.experiments.sweep.run_sweep", _allocate_a_petabyte)
    code, _, err = run_cli("sweep", "spec.yaml", "--out", tmp_path / "sweep")
    assert code == 2 and "mdpt sweep ran out of memory (RESOURCE_EXHAUSTED" in one_line(err)


# ----- evaluation: the act step for (seeds x envs x candidates) is checked before any env starts

def zeros(shapes):
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def tiny_artifacts(seeds: int = 2) -> tuple[Artifact, Artifact]:
    """A policy (idql, 8 wide) and an IQL guidance for hopper sizes, in memory, with zero
    parameters (their values play no part in a memory check)."""
    meta = {"dataset": {"id": "tiny", "env_id": HOPPER.env_id, "fingerprint": "f"},
            "sampling": {"candidates": 4, "temperature": 1.0}, "selection": {"selector": "softmax", "beta": 1.0}}
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    policy = DiffusionPolicy(PolicyConfig(algo="idql", net="mlp", hidden=8, depth=1, T=3), 15, 3)
    guidance = GuidanceModule(GuidanceConfig(kind="iql", hidden=8, depth=1).resolved(), 15, 3)
    norm = Normalizer.identity(15)
    policy_params = zeros(jax.eval_shape(jax.vmap(lambda k: policy.init(k)["params"]), keys))
    guidance_params = zeros(jax.eval_shape(jax.vmap(lambda k: GuidanceModule.saved_params(guidance.init(k))), keys))
    return Artifact(policy, policy_params, norm, meta), Artifact(guidance, guidance_params, norm, meta)


@pytest.fixture(scope="module")
def artifacts():
    return tiny_artifacts()


def test_evaluation_is_refused_before_any_rollout(artifacts, monkeypatch, no_rollout):
    policy, guidance = artifacts
    agent = Agent(policy, guidance, SelectorConfig())
    monkeypatch.setenv(LIMIT, "1000")
    with pytest.raises(MDPTError) as e:
        evaluate_agent(agent, HOPPER, episodes=3)
    need, have = numbers(str(e.value))
    assert have == 1000 < need and "(2 seeds x 3 episodes x 4 candidates)" in str(e.value)
    # a real case: XLA says 10000 candidates x 500 episodes x 2 seeds need more than 256 MiB
    monkeypatch.setenv(LIMIT, "256M")
    small = profiling.compiled_memory_bytes(agent.compiled(3))["peak"]
    assert small < 2**20  # the preset's 4 candidates for 3 episodes fit easily
    with pytest.raises(MDPTError) as e:
        evaluate(policy, guidance, selector=SelectorConfig(candidates=MAX_CANDIDATES), episodes=500)
    need, have = numbers(str(e.value))
    assert have == 2**28 < need and "x 500 episodes x 10000 candidates" in str(e.value) and "\n" not in str(e.value)
    for episodes in (0, MAX_EPISODES + 1):
        with pytest.raises(MDPTError, match=f"episodes must be in 1..{MAX_EPISODES}"):
            evaluate(policy, guidance, episodes=episodes)


def test_evaluate_command_refuses_sizes(artifacts, tmp_path, monkeypatch, run_cli, no_rollout):
    policy, guidance = artifacts
    rec = {"id": "tiny", "env_id": HOPPER.env_id, "fingerprint": "f", "source": "x", "transitions": 1}
    save_artifact(tmp_path / "policy", "policy", policy.module, policy.params, policy.normalizer, rec, [0, 1], 1,
                  {"sampling": policy.meta["sampling"]})
    save_artifact(tmp_path / "guidance", "guidance", guidance.module, guidance.params, guidance.normalizer, rec,
                  [0, 1], 1, {"selection": guidance.meta["selection"]})
    argv = ["evaluate", "--policy", tmp_path / "policy", "--guidance", tmp_path / "guidance"]
    code, _, err = run_cli(*argv, "--candidates", MAX_CANDIDATES + 1)
    assert code == 2 and f"--candidates: must be in 1..{MAX_CANDIDATES}" in err and err.count("\n") == 1
    code, _, err = run_cli(*argv, "--episodes", MAX_EPISODES + 1)
    assert code == 2 and f"--episodes: must be in 1..{MAX_EPISODES}" in err and err.count("\n") == 1
    monkeypatch.setenv(LIMIT, "1000")
    code, _, err = run_cli(*argv, "--episodes", 3)
    assert code == 2 and numbers(one_line(err))[1] == 1000


def test_the_runs_evaluation_is_checked_before_training(tiny_dataset, tmp_path, monkeypatch, no_training,
                                                        no_rollout):
    """A run that would train but cannot evaluate is refused before its first chunk (the act
    step is checked first: the cheaper program to compile)."""
    config = RunConfig.from_dict({
        "dataset": "tiny", "algo": "idql", "steps": 4, "chunk": 2, "batch_size": 8, "seeds": 2,
        "policy": {"net": "mlp", "hidden": 8, "depth": 1, "T": 3}, "guidance": {"hidden": 8, "depth": 1},
        "candidates": MAX_CANDIDATES, "eval_episodes": 500, "eval_variants": ["guided"]})
    monkeypatch.setenv(LIMIT, "256M")
    with pytest.raises(MDPTError) as e:
        Run(tmp_path / "run", config, progress=False, log=lambda *a: None, dataset=tiny_dataset).execute()
    need, have = numbers(str(e.value))
    assert have == 2**28 < need and "evaluation's act step (2 seeds x 500 episodes x 10000 candidates)" in str(e.value)
    assert not (tmp_path / "run").exists()  # (tmp_path holds the dataset file: not a run directory)


# ----------------------------------------------------------------------------- 2. counters

def _types(hint) -> set:
    """A type hint and every type inside it (int | None -> {int | None, int, NoneType})."""
    return {hint}.union(*(_types(a) for a in typing.get_args(hint)))


INT_LEAVES = [name for name, _, hint in leaves(RunConfig) if int in _types(hint)]


def test_every_integer_setting_has_a_limit():
    assert sorted(INT_LEAVES) == sorted(INT_LIMITS)
    assert len(INT_LEAVES) == 29


@pytest.mark.parametrize("name", INT_LEAVES)
def test_counter_past_its_limit_is_refused(name, tmp_path, run_cli, monkeypatch):
    monkeypatch.setattr(Run, "execute", lambda self: pytest.fail("a run started"))
    limit = INT_LIMITS[name][0]
    for value in (limit + 1, 2**31, 2**63):
        d = {"dataset": "bullet-hopper-medium-v0", "algo": "dql"}
        set_dotted(d, name, value, "test")
        with pytest.raises(MDPTError) as e:
            RunConfig.from_dict(d)
        assert str(e.value) == f"{name} {value} is beyond its limit {limit} ({INT_LIMITS[name][1]})"
    code, _, err = run_cli("train-policy", "--dataset", "bullet-hopper-medium-v0", "--algo", "dql",
                           "--set", f"{name}={limit + 1}", "--out", tmp_path / "run")
    assert code == 2 and f"{name} {limit + 1} is beyond its limit {limit}" in one_line(err)


# ----------------------------------------------------------------------------- 3. non-finite floats

FLOAT_LEAVES = [(name, typing.get_origin(hint) is tuple) for name, _, hint in leaves(RunConfig)
                if float in _types(hint)]
# flag values are YAML scalars: .nan / .inf are floats, `nan` a string, 1.0e+999 overflows to inf
AS_FLAG = (".nan", "-.inf", "1.0e+999")
AS_SET = (".inf", "nan")


def test_float_leaves_are_all_found():
    names = [n for n, _ in FLOAT_LEAVES]
    assert len(names) == 22 and "policy.cond_bins" in names and "divergence.margin" in names


@pytest.mark.parametrize("name,is_tuple", FLOAT_LEAVES)
def test_non_finite_float_setting_is_refused(name, is_tuple, tmp_path, run_cli, monkeypatch):
    """Every float leaf of RunConfig, as a flag, a --set item, in a YAML file and in a sweep
    grid: NaN and infinity end in exit code 2 and one line that names the setting."""
    monkeypatch.setattr(Run, "execute", lambda self: pytest.fail("a run started"))
    base = ["train-policy", "--dataset", "bullet-hopper-medium-v0", "--algo", "dql", "--out", tmp_path / "run"]
    flag = "--" + name.replace("_", "-")
    items = [f"{flag}={v}" for v in AS_FLAG] + [("--set", f"{name}={v}") for v in AS_SET]
    for item in items:
        extra = [item] if isinstance(item, str) else list(item)
        if is_tuple:
            extra[-1] = extra[-1].replace("=", "=[", 1) + "]"
        code, _, err = run_cli(*base, *extra)
        assert code == 2 and name in one_line(err), (extra, err)
    for value in (float("nan"), float("inf")):
        config_file = tmp_path / "config.yaml"
        d: dict = {}
        set_dotted(d, name, [value] if is_tuple else value, "test")
        config_file.write_text(yaml.safe_dump(d))
        code, _, err = run_cli(*base, "--config", config_file)
        assert code == 2 and f"{name}: expected a finite number" in one_line(err), err
        spec = tmp_path / "sweep.yaml"
        spec.write_text(yaml.safe_dump({"base": {"dataset": "bullet-hopper-medium-v0", "algo": "dql"},
                                        "grid": {name: [[value] if is_tuple else value]}}))
        code, _, err = run_cli("sweep", spec, "--out", tmp_path / "sweep")
        assert code == 2 and f"{name}: expected a finite number" in one_line(err) and "no trial was started" in err
        assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("flag", ["--beta", "--temperature", "--cfg-weight"])
def test_evaluate_refuses_non_finite_selection(flag, tmp_path, run_cli):
    for raw in ("nan", "NaN", "inf", "-inf", "infinity", "1e999"):
        code, _, err = run_cli("evaluate", "--policy", tmp_path / "none", f"{flag}={raw}")
        assert code == 2 and flag in err and "finite" in err and err.count("\n") == 1, (raw, err)


# ----------------------------------------------------------------------------- 4. exit codes 3 and 4

def test_a_stopped_run_exits_3(tmp_path, monkeypatch, run_cli):
    config = RunConfig.from_dict({"dataset": "tiny", "guidance_kind": "iql", "divergence": {"patience": 1}})
    run = Run(tmp_path, config, log=lambda *a: None)
    run.value_check = ValueCheck(bound=1.0, margin=1.5, patience=1)
    monkeypatch.setattr(Run, "_write_stopped_summary", lambda self, status, message: None)
    assert run._check_values({"guidance/q_abs_max": np.array([1.0])}, 5)
    with pytest.raises(RunStopped) as e:
        run._check_values({"guidance/q_abs_max": np.array([9.0])}, 10)
    assert e.value.exit_code == 3 and "diverging" in str(e.value)
    stopped = e.value

    def stop(self):
        raise stopped

    monkeypatch.setattr(Run, "execute", stop)
    code, _, err = run_cli("train-guidance", "--kind", "iql", "--dataset", "tiny", "--out", tmp_path / "x")
    assert code == 3 and "critic is diverging" in one_line(err)
    # a NaN stop through the real loop: tests/test_reliability_faults.py (exit code 3)


def test_a_failed_sweep_exits_4(tmp_path, run_cli):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"base": {"algo": "idql", "steps": 2, "chunk": 2, "eval_variants": []},
                                    "grid": {"dataset": [str(tmp_path / "missing-a.hdf5"),
                                                         str(tmp_path / "missing-b.hdf5")]}}))
    code, _, err = run_cli("sweep", spec, "--out", tmp_path / "out")
    assert code == 4 and "2 of 2 trial(s) failed" in one_line(err) and "missing-a" in err
    assert issubclass(SweepFailed, MDPTError) and SweepFailed.exit_code == 4
