"""The datasets in ../shared/datasets (made by the D4RL recipe), read through the CLI."""

from __future__ import annotations

import json

import pytest


def test_info_hopper_medium(shared_datasets, monkeypatch, run_cli):
    monkeypatch.setenv("MDPT_DATA_DIR", str(shared_datasets))
    code, out, err = run_cli("data", "info", "bullet-hopper-medium-v0", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["transitions"] == 100_000 and info["episodes"] == 101
    assert info["obs_dim"] == 15 and info["act_dim"] == 3 and info["env_id"] == "HopperBulletEnv-v0"
    assert info["return"]["mean"] == pytest.approx(930.9, abs=0.05)
    assert info["return"]["min"] == pytest.approx(200.7, abs=0.05)
    assert info["return"]["max"] == pytest.approx(949.6, abs=0.05)
    assert info["normalized"]["reference"] == "d4rl" and info["normalized"]["mean"] == pytest.approx(64.1, abs=0.05)
    assert info["fingerprint"] == "5a356d478d7121e4"
    assert info["notes"] == []

    code, out, err = run_cli("data", "info", "bullet-hopper-medium-v0")
    assert code == 0 and "transitions  100000" in out and "mean 930.9" in out and "episodes     101" in out

    code, out, err = run_cli("data", "info", shared_datasets / "bullet-hopper-medium-v0.hdf5",
                             "--reference", "dataset", "--json")
    assert code == 0, err
    norm = json.loads(out)["normalized"]
    assert norm["reference"] == "dataset" and norm["max_score"] == pytest.approx(1716.734375)
