"""Runs trained on another machine travel as float16 packs with an index written last; a pack that
is missing or cut short is never loaded: its runs are named for fetching again or retraining."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from mdpt.artifacts import load_guidance, load_policy
from mdpt.experiments.config import RunConfig
from mdpt.experiments.runner import Run
from mdpt.io import flatten_tree

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = {"batch_size": 8, "steps": 2, "chunk": 2, "seeds": 2, "eval_variants": [],
        "guidance": {"hidden": 8, "depth": 1}, "policy": {"hidden": 8, "depth": 1}}


@pytest.fixture(scope="module")
def tools():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("gpu"), importlib.import_module("gpu_unpack")
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture
def packed(tmp_path, tiny_dataset, tools):
    gpu, _ = tools
    work, out = tmp_path / "work", tmp_path / "files"
    out.mkdir()
    names = []
    for name, extra in (("iql-guidance", {"guidance_kind": "iql"}), ("dql-joint", {"algo": "dql"})):
        run = f"bullet-hopper-medium-v0/{name}"
        config = RunConfig.from_dict({"dataset": "bullet-hopper-medium-v0", **TINY, **extra})
        Run(work / run, config, progress=False, log=lambda *a: None, dataset=tiny_dataset).execute()
        names.append(run)
    gpu.pack(work, out, names)
    return work, out


def test_packs_round_trip_within_float16(packed, tools, tmp_path):
    _, unpack = tools
    work, files = packed
    done, skipped = unpack.unpack(files, tmp_path / "here")
    assert len(done) == 2 and skipped == {}
    original = flatten_tree(load_policy(work / "bullet-hopper-medium-v0/dql-joint").params)
    here = load_policy(tmp_path / "here/bullet-hopper-medium-v0/dql-joint")
    for k, v in flatten_tree(here.params).items():
        np.testing.assert_allclose(v, original[k], rtol=1e-3, atol=1e-3)
    assert "float16" in here.meta["transport"]
    critic = load_guidance(tmp_path / "here/bullet-hopper-medium-v0/dql-joint")  # target only travelled
    assert "target critic only" in critic.meta["transport"]
    np.testing.assert_array_equal(flatten_tree(critic.params["q"])[next(iter(flatten_tree(critic.params["q"])))],
                                  flatten_tree(critic.params["target_q"])[next(iter(flatten_tree(critic.params["q"])))])


def test_a_cut_pack_is_never_loaded(packed, tools, tmp_path):
    _, unpack = tools
    _, files = packed
    victim = files / "pack-hopper-critic.safetensors"
    victim.write_bytes(victim.read_bytes()[:-100])  # a transfer cut short
    done, skipped = unpack.unpack(files, tmp_path / "here")
    assert [p.name for p in done] == ["iql-guidance"]
    assert set(skipped) == {"bullet-hopper-medium-v0/dql-joint"}
    assert "checksum mismatch" in skipped["bullet-hopper-medium-v0/dql-joint"]
    assert not (tmp_path / "here/bullet-hopper-medium-v0/dql-joint").exists()
    (files / "pack-hopper-iql.safetensors").unlink()
    done, skipped = unpack.unpack(files, tmp_path / "again")
    assert done == [] and "missing" in skipped["bullet-hopper-medium-v0/iql-guidance"]
