"""`mdpt data make` at tiny size: a loadable file, identical arrays for the same seed, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mdpt.data.dataset import ARRAY_KEYS
from mdpt.data.load import load_dataset
from mdpt.data.make import MakeConfig, make_dataset, select_checkpoints
from mdpt.data.sac_run import train_sac
from mdpt.errors import MDPTError

DID = "bullet-hopper-medium-v0"
TINY = {"sac_steps": 300, "transitions": 500, "eval_every": 150, "eval_episodes": 1, "learning_starts": 100}


def test_select_checkpoints():
    ckpts = [{"step": 10, "ret": 5.0}, {"step": 20, "ret": 40.0}, {"step": 30, "ret": 100.0},
             {"step": 40, "ret": 100.0}]
    medium, expert = select_checkpoints(ckpts)
    assert expert["step"] == 30 and medium["step"] == 20
    negative = [{"step": 1, "ret": -900.0}, {"step": 2, "ret": -300.0}]
    assert select_checkpoints(negative)[0]["step"] == 2
    with pytest.raises(MDPTError):
        select_checkpoints([])


def test_make_validates_arguments(tmp_path):
    with pytest.raises(MDPTError, match="--sac-steps must be in 1..100000000, got 0"):
        make_dataset(DID, tmp_path, sac_steps=0)
    with pytest.raises(MDPTError, match="unknown dataset id"):
        make_dataset("bullet-hopper-superb-v0", tmp_path)


@pytest.mark.slow
def test_tiny_make_same_seed_and_resume(tmp_path, run_cli):
    # run A: the command line, uninterrupted
    out_a = tmp_path / "a"
    code, out, err = run_cli("data", "make", DID, "--sac-steps", TINY["sac_steps"], "--transitions",
                             TINY["transitions"], "--eval-every", TINY["eval_every"], "--eval-episodes", 1,
                             "--learning-starts", TINY["learning_starts"], "--out", out_a, "--quiet")
    assert code == 0, err
    assert f"wrote {out_a / (DID + '.hdf5')}" in out
    data = load_dataset(out_a / f"{DID}.hdf5")
    assert len(data) == 500 and data.env.name == "hopper" and data.dataset_id == DID
    assert data.notes == ()
    attrs = data.attrs
    for key in ("recipe", "recipe_json", "versions", "seed", "ref_min_score", "ref_max_score",
                "medium_checkpoint", "expert_checkpoint", "checkpoints"):
        assert key in attrs, key
    assert [c["step"] for c in attrs["checkpoints"]] == [150, 300]
    assert attrs["recipe_json"]["sac_steps"] == 300 and attrs["versions"]["jax"]
    assert attrs["ref_min_score"] < 100  # uniform random actions on hopper score ~20
    log = json.loads((out_a / "hopper_log.json").read_text())
    assert log["expert"]["step"] in (150, 300)
    trained = log["checkpoints"][-1]["train"]  # SAC's own values at each checkpoint, to watch beside the returns
    assert set(trained) == {"critic_loss", "actor_loss", "alpha", "q", "entropy"} and 0 < trained["alpha"] <= 1
    work = next((out_a / ".mdpt-make").iterdir())
    assert not list(work.glob("*.pkl")) and list(work.glob("*.safetensors"))

    # run B: the API, interrupted after the first checkpoint, then resumed
    out_b = tmp_path / "b"
    first = make_dataset(DID, out_b, progress=False, stop_after=150, **TINY)
    assert not first.completed and first.written == []
    assert json.loads((first.work_dir / "run.json").read_text())["step"] == 150
    second = make_dataset(DID, out_b, progress=False, **TINY)
    assert second.completed and second.resumed_from == 150
    again = load_dataset(out_b / f"{DID}.hdf5")
    for key in ARRAY_KEYS:
        np.testing.assert_array_equal(getattr(again, key), getattr(data, key), err_msg=key)
    assert again.attrs == data.attrs
    assert (out_b / f"{DID}.hdf5").read_bytes() == (out_a / f"{DID}.hdf5").read_bytes()

    # other qualities reuse the finished SAC run: medium-replay is the buffer up to the medium checkpoint
    replay = make_dataset("bullet-hopper-medium-replay-v0", out_a, progress=False, **TINY)
    assert replay.resumed_from == 300
    mr = load_dataset(out_a / "bullet-hopper-medium-replay-v0.hdf5")
    assert len(mr) == attrs["medium_checkpoint"]["step"] and mr.episode_ends[-1] and (mr.timeouts[-1] or mr.terminals[-1])
    both = make_dataset("bullet-hopper-medium-expert-v0", out_a, progress=False, **TINY)
    assert [p.name for p in both.written] == [f"{DID}.hdf5", "bullet-hopper-expert-v0.hdf5"]
    me = load_dataset("bullet-hopper-medium-expert-v0", data_dir=out_a)
    assert len(me) == 1000

    code, out, err = run_cli("data", "info", out_a / f"{DID}.hdf5", "--reference", "dataset", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["normalized"]["reference"] == "dataset" and info["transitions"] == 500


@pytest.mark.slow
def test_damaged_work_file_starts_over(tmp_path):
    """A work file that fails its sha256 (io.load_arrays raises MDPTError) restarts SAC from step 0."""
    cfg = MakeConfig(env="hopper", sac_steps=200, transitions=10, eval_every=100, eval_episodes=1,
                     learning_starts=50)
    prog, resumed, done = train_sac(cfg, tmp_path, progress=False, stop_after=100)
    assert (prog["step"], resumed, done) == (100, 0, False)
    state = tmp_path / prog["state_file"]
    state.write_bytes(state.read_bytes()[:-8] + b"\0" * 8)
    prog, resumed, done = train_sac(cfg, tmp_path, progress=False, stop_after=100)
    assert (prog["step"], resumed, done) == (100, 0, False)  # started over, not resumed from 100
    prog, resumed, done = train_sac(cfg, tmp_path, progress=False)
    assert (prog["step"], resumed, done) == (200, 100, True) and len(prog["checkpoints"]) == 2
