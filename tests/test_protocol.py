"""The reproduction's protocol is a value: saved and read back whole, its command line rebuilt in one place
and parsed back to the same protocol, the command's defaults its fields', and the report's command line
printing `--out` as the user gave it."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from mdpt.cli.main import build_parser
from mdpt.cli.reproduce_cmd import protocol_from_args
from mdpt.reproduction.protocol import Protocol

RESULTS = Path(__file__).resolve().parents[1] / "results"
EVERY_FIELD = Protocol(datasets=("bullet-hopper-medium-v0", "bullet-walker2d-expert-v0"), algos=("dql", "edp"),
                       seeds=2, seed=3, steps=100, eval_every=50, curve_episodes=2, final_episodes=3,
                       curve_candidates=4, eval_max_steps=7, stage1="authors", unfreeze_at=60, ensemble_k=2,
                       transfer_points=1, swap_candidates=5, derive=False,
                       base={"batch_size": 16, "policy": {"hidden": 8}, "guidance": {"layer_norm": False}})


def _parse(command: str):
    words = shlex.split(command)
    assert words[:2] == ["mdpt", "reproduce"]
    return build_parser().parse_args(words[1:])


@pytest.mark.parametrize("p", [EVERY_FIELD, Protocol(datasets=("bullet-hopper-medium-v0",))], ids=["every", "defaults"])
def test_the_command_line_parses_back_to_the_same_protocol(p):
    assert protocol_from_args(_parse(p.command_line("out"))) == p


def test_the_command_takes_its_defaults_from_the_protocol_fields():
    args = build_parser().parse_args(["reproduce", "--datasets", "bullet-hopper-medium-v0", "--out", "o"])
    assert protocol_from_args(args) == Protocol(datasets=("bullet-hopper-medium-v0",))


def test_protocol_json_round_trips_and_older_files_read():
    assert Protocol.from_json(json.loads(json.dumps(EVERY_FIELD.to_json()))) == EVERY_FIELD
    for path in RESULTS.glob("*/protocol.json"):  # written before `derive` existed: its default
        p = Protocol.from_json(json.loads(path.read_text())["protocol"])
        assert p.derive and p.validate() is p


def test_the_report_prints_out_as_given_never_the_machines_absolute_path(tmp_path, monkeypatch):
    from reproduction_fixture import make_reproduction

    from mdpt.reproduction.render import write_report

    monkeypatch.chdir(tmp_path)
    out = make_reproduction(tmp_path / "repro")
    text = write_report(out.resolve()).read_text()  # an absolute --out inside the working directory
    assert "--transfer-points 2 --studies necessity,gfdt-vs-joint,transfer --out repro`" in text  # planned before arms
    assert str(tmp_path) not in text
