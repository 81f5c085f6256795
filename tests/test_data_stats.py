"""Dataset statistics (mdpt.data.stats): the numbers `mdpt data info` prints come from the data package."""

from __future__ import annotations

import json

import pytest
from conftest import d4rl_arrays

from mdpt.data import dataset_summary
from mdpt.data.checks import build_dataset
from mdpt.data.registry import ENVS


def test_summary_values():
    arrays = d4rl_arrays(lengths=(2, 3), terminal=(True, False))
    arrays["rewards"][:] = [1.0, 2.0, 10.0, 10.0, 10.0]
    data = build_dataset(arrays, ENVS["hopper"], dataset_id="bullet-hopper-medium-v0",
                         attrs={"ref_min_score": 0.0, "ref_max_score": 60.0, "recipe": "r", "other": 1})
    s = dataset_summary(data, reference="dataset")
    assert (s["transitions"], s["episodes"], s["terminals"], s["timeouts"]) == (5, 2, 1, 1)
    assert s["episode_length"] == {"mean": 2.5, "min": 2, "max": 3}
    assert s["return"] == {"mean": 16.5, "std": 13.5, "min": 3.0, "max": 30.0}
    assert s["normalized"]["mean"] == pytest.approx(27.5) and s["normalized"]["max"] == pytest.approx(50.0)
    assert s["attrs"] == {"recipe": "r", "ref_min_score": 0.0, "ref_max_score": 60.0}
    assert s["dataset_id"] == "bullet-hopper-medium-v0" and s["env_id"] == "HopperBulletEnv-v0"
    d4rl = dataset_summary(data)["normalized"]
    assert d4rl["reference"] == "d4rl" and d4rl["min_score"] != 0.0


def test_cli_info_prints_the_summary(tiny_hopper_hdf5, run_cli):
    from mdpt.data.load import load_dataset

    code, out, err = run_cli("data", "info", tiny_hopper_hdf5, "--json", "--reference", "dataset")
    assert code == 0, err
    assert json.loads(out) == json.loads(json.dumps(dataset_summary(load_dataset(tiny_hopper_hdf5), "dataset")))
