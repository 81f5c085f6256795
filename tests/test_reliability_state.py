"""A refused command changes nothing; damaged state gets one line and a way forward (or is rebuilt);
configuration files and sweep grids are bounded and unambiguous. Reproduction directories here are
made without training (each planned run's config.json, as a first call leaves them), so each case
takes a fraction of a second."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_reliability_ownership import snapshot

from mdpt.errors import MDPTError

TINY = ["--set", "policy.hidden=8", "--set", "policy.depth=1", "--set", "guidance.hidden=8", "--set",
        "guidance.depth=1", "--set", "batch_size=8", "--set", "chunk=2"]


def reproduce_argv(data, out, *extra) -> list:
    return ["reproduce", "--datasets", data, "--algos", "dql", "--seeds", "2", "--steps", "4", "--eval-every", "2",
            "--episodes", "1", "--curve-episodes", "1", "--eval-max-steps", "3", "--ensemble-k", "2",
            "--no-progress", *TINY, *extra, "--out", out]


def started_reproduction(data, out) -> Path:
    """A reproduction directory as a first call leaves it once its plan is written: protocol.json and
    each planned run's config.json (what a run writes before its first step)."""
    from mdpt.cli.main import build_parser
    from mdpt.cli.reproduce_cmd import protocol_from_args
    from mdpt.experiments.config import RunConfig
    from mdpt.io import versions, write_json_atomic
    from mdpt.reproduction.execute import Reproduction

    args = build_parser().parse_args([str(a) for a in reproduce_argv(data, out)])
    repro = Reproduction(protocol_from_args(args), out)
    items = repro.planned()
    for it in items:
        config = RunConfig.from_dict(it.settings).to_json()
        write_json_atomic(repro.runs_dir / it.key / "config.json", {**config, "versions": versions()})
    write_json_atomic(out / "protocol.json", {"protocol": repro.p.to_json(), "runs": [it.key for it in items],
                                              "root": str(out.resolve())})
    return out


def one_line(code: int, err: str) -> str:
    assert code == 2 and err.startswith("mdpt: error: ") and err.count("\n") == 1, (code, err)
    return err


# ----------------------------------------------------------------------------- a refused command changes nothing

def test_a_misspelled_dataset_is_refused_before_anything_is_written(tiny_hopper_hdf5, tmp_path, run_cli):
    out = tmp_path / "new" / "repro"
    code, _, err = run_cli(*reproduce_argv(f"{tiny_hopper_hdf5},bullet-hoper-medium-v0", out))
    assert "'bullet-hoper-medium-v0' is neither a file nor a known dataset id" in one_line(code, err)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("change, named", [
    (["--steps", "6", "--eval-every", "3"], "steps 6 (here: 4)"),
    (["--seeds", "3"], "seeds 3 (here: 2)"),
    (["--set", "policy.hidden=16"], "base"),
])
def test_other_options_than_the_directory_s_change_nothing_and_the_report_still_reads_it(
        tiny_hopper_hdf5, tmp_path, run_cli, change, named):
    out = started_reproduction(tiny_hopper_hdf5, tmp_path / "repro")
    before = snapshot(out)
    code, _, err = run_cli(*reproduce_argv(tiny_hopper_hdf5, out, *change))
    msg = one_line(code, err)
    assert "made with other options than this call's" in msg and named in msg and "choose another --out" in msg
    assert snapshot(out) == before  # protocol.json and every run folder as they were
    code, _, err = run_cli("reproduce", "--report-only", "--out", out)
    assert code == 0, err
    report = (out / "report" / "report.md").read_text()
    assert "--seeds 2 --seed 0 --steps 4 --eval-every 2" in report and "--set policy.hidden=8 " in report  # its plan


def test_a_misspelled_dataset_added_to_a_reproduction_changes_nothing(tiny_hopper_hdf5, tmp_path, run_cli):
    out = started_reproduction(tiny_hopper_hdf5, tmp_path / "repro")
    before = snapshot(out)
    code, _, err = run_cli(*reproduce_argv(f"{tiny_hopper_hdf5},bullet-walker2d-mediun-v0", out))
    assert "bullet-walker2d-mediun-v0" in one_line(code, err)
    assert snapshot(out) == before


def test_a_plan_over_budget_leaves_no_folder_behind(tiny_hopper_hdf5, tmp_path, run_cli):
    out = tmp_path / "repro"
    code, _, err = run_cli(*reproduce_argv(tiny_hopper_hdf5, out, "--budget-hours", "0.0000001"))
    assert "more than --budget-hours" in one_line(code, err)
    assert not out.exists()


@pytest.mark.parametrize("item", ["steps=4", "seeds=5", "seed=3", "eval.every=1", "eval_every=1", "algo=idql",
                                  "eval.final_episodes=2"])
def test_a_set_key_the_plan_would_override_is_an_error(item, tiny_hopper_hdf5, tmp_path, run_cli):
    out = tmp_path / "repro"
    code, _, err = run_cli(*reproduce_argv(tiny_hopper_hdf5, out, "--steps", "6", "--eval-every", "2",
                                           "--set", item))
    key = {"eval_every=1": "eval.every"}.get(item, item.split("=")[0])
    assert f"{key} (--set/--config): every policy run of the plan sets its own {key}" in one_line(code, err)
    assert not out.exists()


def test_a_set_key_the_plan_uses_is_used(tiny_hopper_hdf5, tmp_path):
    from mdpt.cli.main import build_parser
    from mdpt.cli.reproduce_cmd import protocol_from_args
    from mdpt.experiments.config import RunConfig
    from mdpt.reproduction.execute import Reproduction

    argv = reproduce_argv(tiny_hopper_hdf5, tmp_path / "r", "--set", "policy.eta=0.5", "--set", "eval.reference=dataset")
    repro = Reproduction(protocol_from_args(build_parser().parse_args([str(a) for a in argv])), tmp_path / "r")
    configs = {it.name: RunConfig.from_dict(it.settings) for it in repro.planned()}
    assert configs["dql-joint"].policy_config().eta == 0.5 and configs["dql-bc"].policy_config().eta == 0.0
    assert {c.eval.reference for c in configs.values()} == {"dataset"}


def test_study_names_its_own_flag_and_refuses_set_steps(tiny_hopper_hdf5, tmp_path, run_cli):
    from mdpt.reproduction.studies import StudyOptions, run_study

    base = ["study", "gfdt-vs-joint", "--dataset", tiny_hopper_hdf5, "--out", tmp_path / "s"]
    code, _, err = run_cli(*base, "--eval-episodes", "0")
    assert code == 2 and "--eval-episodes" in err and "--curve-episodes" not in err and err.count("\n") == 1
    with pytest.raises(MDPTError, match="--eval-episodes must be in 1..1000, got 0"):
        run_study("gfdt-vs-joint", StudyOptions(str(tiny_hopper_hdf5), tmp_path / "s", ["dql"], eval_episodes=0))
    code, _, err = run_cli(*base, "--steps", "4", "--set", "steps=8")
    assert "steps (--set/--config): every policy run of the plan sets its own steps" in one_line(code, err)
    assert not (tmp_path / "s").exists()


def test_reproduce_help_prints_percent_signs_once(run_cli):
    code, out, _ = run_cli("reproduce", "--help")
    assert code == 0 and "90% of joint's final score" in out and "%%" not in out


# ----------------------------------------------------------------------------- damaged state

@pytest.mark.parametrize("content", ["[1, 2]", '"plan"', '{"protocol": 3, "runs": []}', '{"runs": "x"}', "{"])
def test_a_damaged_plan_is_one_line_that_says_what_to_do(content, tiny_hopper_hdf5, tmp_path, run_cli):
    out = started_reproduction(tiny_hopper_hdf5, tmp_path / "repro")
    (out / "protocol.json").write_text(content)
    code, _, err = run_cli("reproduce", "--report-only", "--out", out)
    msg = one_line(code, err)
    assert str(out / "protocol.json") in msg
    assert "run the mdpt reproduce command that made this directory again" in msg or "not valid JSON" in msg
    code, _, err = run_cli(*reproduce_argv(tiny_hopper_hdf5, out, "--budget-hours", "0.0000001"))
    assert "more than --budget-hours" in one_line(code, err)  # the plan's own command gets past it
    assert (out / "protocol.json").read_text() == content  # refused: changed nothing


@pytest.mark.parametrize("cache", [{"dataset": "x"}, {"cells": []}, {"cells": {"dql-joint@4|own": 3}}, [1]])
def test_a_transfer_cache_without_its_cells_is_one_line_naming_it(cache, tiny_hopper_hdf5, tmp_path, run_cli):
    out = started_reproduction(tiny_hopper_hdf5, tmp_path / "repro")
    path = out / "transfer" / f"{Path(tiny_hopper_hdf5).stem}.json"
    path.parent.mkdir()
    path.write_text(json.dumps(cache))
    code, _, err = run_cli("reproduce", "--report-only", "--out", out)
    msg = one_line(code, err)
    assert f"{path}: damaged transfer cache" in msg and "delete it and run the same command again" in msg
    before = snapshot(out)
    code, _, err = run_cli(*reproduce_argv(tiny_hopper_hdf5, out))
    assert f"{path}: damaged transfer cache" in one_line(code, err)
    assert snapshot(out) == before


def test_a_truncated_run_summary_is_rebuilt_by_the_same_command(tiny_hopper_hdf5, tmp_path, run_cli):
    """The reproduction's report says "the same command continues them" of a run whose summary.json is
    damaged: the run writes it again from its last checkpoint and metrics, the same as before."""
    out = tmp_path / "run"
    argv = ["train-guidance", "--kind", "iql", "--dataset", tiny_hopper_hdf5, "--steps", "4", "--chunk", "2",
            "--batch-size", "8", "--set", "guidance.hidden=8", "--set", "guidance.depth=1", "--out", out,
            "--no-progress"]
    code, _, err = run_cli(*argv)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    for damaged in ('{"name": "run", "sta', "[]"):
        (out / "summary.json").write_text(damaged)
        code, _, err = run_cli(*argv, "--resume")
        assert code == 0 and "summary.json: damaged" in err, err
        again = json.loads((out / "summary.json").read_text())
        volatile = ("seconds_per_step", "peak_memory_bytes")
        assert {k: v for k, v in again.items() if k not in volatile} == \
            {k: v for k, v in summary.items() if k not in volatile}


# ----------------------------------------------------------------------------- configuration files and grids

FLAT_AND_NESTED = "eval_every: 5\neval:\n  every: 10\n"


@pytest.mark.parametrize("command", ["train-policy", "reproduce", "config"])
def test_the_flat_and_nested_name_of_one_setting_in_one_file_is_a_conflict(command, tiny_hopper_hdf5, tmp_path,
                                                                             run_cli):
    config = tmp_path / "run.yaml"
    config.write_text(FLAT_AND_NESTED)
    argv = {"train-policy": ["train-policy", "--dataset", tiny_hopper_hdf5, "--algo", "dql", "--out", tmp_path / "o"],
            "reproduce": reproduce_argv(tiny_hopper_hdf5, tmp_path / "o"),
            "config": ["config", "show", "--algo", "dql"]}[command]
    code, _, err = run_cli(*argv, "--config", config)
    assert f"{config}: eval_every and eval.every both set eval.every; keep one of them" in one_line(code, err)
    assert not (tmp_path / "o").exists()


def test_two_names_of_one_setting_in_set_items_or_a_sweep_are_a_conflict(tmp_path, run_cli):
    from mdpt.experiments.sweep import expand

    code, _, err = run_cli("config", "show", "--algo", "dql", "--set", "eval_every=3", "--set", "eval.every=4")
    assert "--set: eval_every and eval.every both set eval.every" in one_line(code, err)
    with pytest.raises(MDPTError, match="sweep file base: eval_every and eval.every both set"):
        expand({"base": {"dataset": "d", "eval_every": 5, "eval": {"every": 10}}, "grid": {"algo": ["dql"]}})
    with pytest.raises(MDPTError, match="sweep grid: eval_every and eval.every set the same setting"):
        expand({"base": {"dataset": "d", "algo": "dql"}, "grid": {"eval_every": [1], "eval.every": [2]}})
    trial = expand({"base": {"dataset": "d", "algo": "dql", "eval": {"every": 10}}, "grid": {"eval_every": [3]}})
    assert trial[0]["config"]["eval"]["every"] == 3  # a grid key wins over base, whatever its spelling


BOMB = "\n".join([
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    *[f"{x}: &{x} [{','.join([f'*{p}'] * 9)}]" for p, x in zip("abcdefg", "bcdefgh", strict=True)],
    "policy: {eta: *h}"])


@pytest.mark.parametrize("command", ["config", "sweep"])
def test_a_yaml_alias_bomb_is_refused_at_once_in_one_short_line(command, tmp_path, run_cli):
    from mdpt.experiments.config import load_yaml

    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB if command == "config" else BOMB.replace("policy: {eta: *h}", "base: {policy: {eta: *h}}"))
    argv = ["config", "show", "--algo", "dql", "--config", path] if command == "config" else \
        ["sweep", path, "--out", tmp_path / "sw"]
    code, _, err = run_cli(*argv)
    assert "more than 100000 values once its aliases" in one_line(code, err) and len(err) < 300
    start = time.perf_counter()
    with pytest.raises(MDPTError, match="more than 100000 values"):
        load_yaml(path)
    assert time.perf_counter() - start < 5  # 9^8 strings once expanded: checked up to the limit only


def test_long_values_are_cut_in_messages(tmp_path, run_cli):
    path = tmp_path / "long.yaml"
    path.write_text(f"policy: {{eta: [[[[['{'x' * 100_000}']]]]]}}\n")
    code, _, err = run_cli("config", "show", "--algo", "dql", "--config", path)
    assert "config.policy.eta: expected a number" in one_line(code, err) and len(err) < 300
    code, _, err = run_cli("config", "show", "--algo", "dql", "--set", f"policy.net={'y' * 50_000}")
    assert "unknown net" in one_line(code, err) and len(err) < 400


@pytest.mark.parametrize("grid, match", [
    ("{1: [dql]}", "sweep grid key 1: expected a setting's name"),
    ("{[a, b]: [dql]}", "invalid YAML"),
    ("{null: [1]}", "sweep grid key None"),
])
def test_a_sweep_grid_key_that_is_not_a_name_is_one_line(grid, match, tmp_path, run_cli):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"base: {{dataset: bullet-hopper-medium-v0, algo: dql}}\ngrid: {grid}\n")
    code, _, err = run_cli("sweep", spec, "--out", tmp_path / "sw")
    assert match in one_line(code, err)
    assert not (tmp_path / "sw").exists()


def test_a_grid_over_the_trial_limit_is_refused_before_it_is_expanded(tmp_path, run_cli, monkeypatch):
    from mdpt.experiments import sweep

    spec = tmp_path / "sweep.yaml"
    grid = {f"k{i}": list(range(10)) for i in range(10)}  # 10^10 trials
    spec.write_text(json.dumps({"base": {"dataset": "bullet-hopper-medium-v0", "algo": "dql"}, "grid": grid}))
    monkeypatch.setattr(sweep.itertools, "product", lambda *a: pytest.fail("the grid was expanded"))
    code, _, err = run_cli("sweep", spec, "--out", tmp_path / "sw")
    assert f"10000000000 trials, more than {sweep.MAX_TRIALS} in one sweep" in one_line(code, err)


def test_a_ray_address_nothing_answers_is_one_line_within_its_time_limit(tmp_path, run_cli):
    import socket

    with socket.socket() as s:  # a localhost port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = tmp_path / "sweep.yaml"
    spec.write_text("base: {dataset: bullet-hopper-medium-v0, algo: dql}\ngrid: {seed: [1]}\n")
    start = time.perf_counter()
    code, _, err = run_cli("sweep", spec, "--launcher", "ray", "--address", f"127.0.0.1:{port}", "--out",
                           tmp_path / "sw")
    assert time.perf_counter() - start < 60  # Ray alone retries for minutes
    assert f"--address 127.0.0.1:{port}: nothing answers there" in one_line(code, err)
    assert not (tmp_path / "sw").exists()


def test_data_convert_to_minari_takes_a_relative_out(tiny_hopper_hdf5, tmp_path, run_cli, monkeypatch):
    pytest.importorskip("minari")
    from mdpt.data.minari_io import is_minari_dir

    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("data", "convert", tiny_hopper_hdf5, "exported", "--to", "minari")
    assert code == 0, err
    assert is_minari_dir(tmp_path / "exported")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported", "tiny-hopper.hdf5"]


# ----------------------------------------------------------------------------- data loss on other surfaces

@pytest.mark.parametrize("command", ["report", "quickstart", "sweep"])
def test_other_outputs_at_a_user_folder_are_refused_and_nothing_in_it_changes(command, tmp_path, run_cli):
    from test_reliability_ownership import user_folder

    folder = user_folder(tmp_path)
    (folder / "report.md").write_text("my notes")  # a name the report writes: kept, as a run's names are
    before = snapshot(folder)
    spec = tmp_path / "sweep.yaml"
    spec.write_text("base: {dataset: bullet-hopper-medium-v0, algo: dql}\ngrid: {seed: [1]}\n")
    argv = {"report": ["report", tmp_path / "no-run", "--out", folder],
            "quickstart": ["quickstart", "--tiny", "--no-progress", "--out", folder],
            "sweep": ["sweep", spec, "--out", folder]}[command]
    code, _, err = run_cli(*argv)
    assert "holds files that are not an mdpt" in one_line(code, err) and "choose a new or empty --out" in err
    assert snapshot(folder) == before


def test_data_make_never_replaces_a_dataset_it_did_not_make(tmp_path, run_cli):
    from conftest import d4rl_arrays, write_raw_hdf5

    folder = tmp_path / "data"
    write_raw_hdf5(folder / "bullet-hopper-expert-v0.hdf5", d4rl_arrays(), {"env_id": "HopperBulletEnv-v0"})
    before = snapshot(folder)
    code, _, err = run_cli("data", "make", "bullet-hopper-medium-expert-v0", "--out", folder)
    assert "bullet-hopper-expert-v0.hdf5: exists and was not made by mdpt data make" in one_line(code, err)
    assert snapshot(folder) == before  # no work folder either


@pytest.mark.parametrize("levels", [40, 3000])
def test_a_deeply_nested_value_is_one_line_from_a_file_a_set_item_or_a_flag(levels, tmp_path, run_cli):
    deep = "[" * levels + "]" * levels
    path = tmp_path / "deep.yaml"
    path.write_text(f"policy: {{eta: {deep}}}\n")
    for argv, match in ((["--config", path], "nested"), (["--set", f"policy.eta={deep}"], "nested"),
                        (["--policy.eta", deep], "expected a number")):
        code, _, err = run_cli("config", "show", "--algo", "dql", *argv)
        assert match in one_line(code, err) and len(err) < 300, err
