"""Environment families beside bullet: D4RL MuJoCo v2 ids, Minari ids, any Gymnasium Box env.

Tiny datasets are made in the tests (a D4RL-v2-layout HDF5 file with bare h5py; a Minari dataset with the
`minari` package, naming Gymnasium's Hopper-v5 in its env spec); nothing touches the network. Training and
evaluation on Hopper-v5 need the `mujoco` package (installed by `pip install -e ".[dev]"`).
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from conftest import write_raw_hdf5

from mdpt.errors import MDPTError

needs_minari = pytest.mark.skipif(importlib.util.find_spec("minari") is None, reason="minari not installed")
needs_mujoco = pytest.mark.skipif(importlib.util.find_spec("mujoco") is None, reason="mujoco not installed")

GUIDE = ["--steps", "2", "--seeds", "1", "--set", "chunk=2", "--set", "batch_size=8", "--set", "guidance.hidden=8",
         "--set", "guidance.depth=1", "--no-progress"]
TINY = [*GUIDE, "--eval-episodes", "1", "--eval-max-steps", "3", "--set", "policy.hidden=8", "--set", "policy.depth=1",
        "--set", "candidates=2"]


def hopper_v5_arrays(lengths=(6, 5), seed=0) -> dict[str, np.ndarray]:
    """D4RL arrays of Hopper-v5's sizes (obs 11, act 3): the first episode terminal, the rest timeouts."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts",
                                              "next_observations")}
    for i, n in enumerate(lengths):
        states = rng.normal(size=(n + 1, 11)).astype(np.float32)
        parts["observations"].append(states[:-1])
        parts["next_observations"].append(states[1:])
        parts["actions"].append(rng.uniform(-0.9, 0.9, (n, 3)).astype(np.float32))
        parts["rewards"].append(rng.uniform(1, 2, n).astype(np.float32))
        end = np.zeros(n, bool)
        end[-1] = True
        parts["terminals"].append(end if i == 0 else np.zeros(n, bool))
        parts["timeouts"].append(np.zeros(n, bool) if i == 0 else end)
    return {k: np.concatenate(v) for k, v in parts.items()}


def write_d4rl_v2(path, arrays):
    """A file laid out like D4RL's gym_mujoco_v2 files: the arrays, infos/ and metadata/ groups, no env_id."""
    import h5py

    write_raw_hdf5(path, arrays)
    with h5py.File(path, "a") as f:
        f.create_dataset("infos/qpos", data=np.zeros((len(arrays["rewards"]), 6), np.float32))
        f.create_dataset("metadata/algorithm", data="SAC")
    return path


def write_minari_hopper(root, arrays, dataset_id="mujoco/hopper/tiny-v0", refs=(0.0, 10.0)):
    """A Minari dataset written by `minari` (as Farama's are: env spec Hopper-v5, no mdpt block)."""
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    ends = np.flatnonzero(arrays["terminals"] | arrays["timeouts"]) + 1
    buffers = []
    for a, b in zip(np.r_[0, ends[:-1]], ends, strict=True):
        obs = np.concatenate([arrays["observations"][a:b], arrays["next_observations"][b - 1:b]]).astype(np.float64)
        buffers.append(EpisodeBuffer(observations=obs, actions=arrays["actions"][a:b],
                                     rewards=arrays["rewards"][a:b].astype(np.float64),
                                     terminations=arrays["terminals"][a:b], truncations=arrays["timeouts"][a:b]))
    (root / dataset_id).mkdir(parents=True)
    storage = MinariStorage.new(root / dataset_id / "data",
                                observation_space=gym.spaces.Box(-np.inf, np.inf, (11,), np.float64),
                                action_space=gym.spaces.Box(-1.0, 1.0, (3,), np.float32),
                                env_spec=gym.spec("Hopper-v5"), data_format="hdf5")
    meta = {"dataset_id": dataset_id, "minari_version": __import__("minari").__version__, "algorithm_name": "test"}
    if refs:
        meta.update(ref_min_score=refs[0], ref_max_score=refs[1])
    storage.update_metadata(meta)
    storage.update_episodes(buffers)
    return root / dataset_id


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


# ----------------------------------------------------------------------------- registry


def test_registry_families():
    from mdpt.data.registry import available_reference, env_spec_for, is_minari_id, parse_dataset_id

    v2 = parse_dataset_id("hopper-medium-expert-v2")
    assert (v2.env.env_id, v2.env.obs_dim, v2.quality, v2.family) == ("Hopper-v5", 11, "medium-expert", "d4rl-mujoco")
    assert v2.url.endswith("/gym_mujoco_v2/hopper_medium_expert-v2.hdf5")  # D4RL infos.py:300
    assert parse_dataset_id("bullet-hopper-medium-replay-v0").url.endswith("/bullet/bullet-hopper_medium_replay.hdf5")
    assert v2.env.d4rl_min == -20.272305 and v2.env.d4rl_max == 3234.3
    assert is_minari_id("mujoco/hopper/medium-v0") and not is_minari_id("./data/x-v0")
    assert not is_minari_id("hopper-medium-v2")
    # any registered Gymnasium env with flat Box spaces, its sizes read from the env itself
    car = env_spec_for("MountainCarContinuous-v0")
    assert (car.obs_dim, car.act_dim, car.max_episode_steps, car.d4rl_min) == (2, 1, 999, None)
    assert available_reference(car, "d4rl", {}) == "raw"
    assert available_reference(car, "d4rl", {"ref_min_score": 0, "ref_max_score": 1}) == "dataset"
    assert available_reference(v2.env, "d4rl", {}) == "d4rl"
    for env, why in (("Pendulum-v1", r"not \[-1, 1\]"), ("CartPole-v1", "Discrete"), ("Nope-v9", "not a registered")):
        with pytest.raises(MDPTError, match=why):
            env_spec_for(env)


# ----------------------------------------------------------------------------- D4RL MuJoCo v2 ids


def test_d4rl_v2_id_from_the_data_dir(tmp_path, monkeypatch, run_cli):
    d = tmp_path / "data"
    write_d4rl_v2(d / "hopper-medium-v2.hdf5", hopper_v5_arrays())
    monkeypatch.setenv("MDPT_DATA_DIR", str(d))
    code, out, err = run_cli("data", "info", "hopper-medium-v2", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["env_id"] == "Hopper-v5" and s["transitions"] == 11 and s["normalized"]["reference"] == "d4rl"
    assert s["normalized"]["min_score"] == -20.272305
    assert any("gym's Hopper-v3" in n for n in s["notes"])  # says which env stands in for D4RL's
    # missing and offline: one line naming how to get it
    code, _, err = run_cli("data", "info", "walker2d-medium-v2")
    assert code == 2 and "MDPT_OFFLINE is set" in err and len(err.strip().splitlines()) == 1


def test_d4rl_v2_ant_is_refused_in_one_line(tmp_path, monkeypatch, run_cli):
    d = tmp_path / "data"
    arrays = hopper_v5_arrays()
    arrays["observations"] = np.zeros((11, 111), np.float32)
    arrays["next_observations"] = np.zeros((11, 111), np.float32)
    write_d4rl_v2(d / "ant-medium-v2.hdf5", arrays)
    monkeypatch.setenv("MDPT_DATA_DIR", str(d))
    for target in ("ant-medium-v2", d / "ant-medium-v2.hdf5"):
        code, _, err = run_cli("data", "info", target)
        assert code == 2 and "111 observation features" in err and len(err.strip().splitlines()) == 1


def test_d4rl_v2_download_url(monkeypatch):
    from mdpt.data.load import dataset_url

    monkeypatch.delenv("MDPT_D4RL_URL", raising=False)
    assert dataset_url("walker2d-random-v2") == \
        "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/walker2d_random-v2.hdf5"


# ----------------------------------------------------------------------------- Minari ids


@needs_minari
def test_minari_id_resolves_from_the_minari_root(minari_root, run_cli):
    write_minari_hopper(minari_root, hopper_v5_arrays())
    code, out, err = run_cli("data", "info", "mujoco/hopper/tiny-v0", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["dataset_id"] == "mujoco/hopper/tiny-v0" and s["env_id"] == "Hopper-v5"  # from the env spec
    assert s["normalized"]["reference"] == "dataset" and s["normalized"]["max_score"] == 10.0
    # not there and offline: one line that says where it looked and how to get it
    code, _, err = run_cli("data", "info", "mujoco/walker2d/medium-v0")
    assert code == 2 and "minari download mujoco/walker2d/medium-v0" in err and str(minari_root) in err


@needs_minari
def test_minari_dataset_without_references_is_raw(minari_root, run_cli):
    write_minari_hopper(minari_root, hopper_v5_arrays(), dataset_id="mujoco/hopper/noref-v0", refs=None)
    from mdpt.data.load import load_dataset
    from mdpt.data.stats import dataset_summary

    data = load_dataset("mujoco/hopper/noref-v0")
    assert dataset_summary(data, "dataset")["normalized"]["reference"] == "raw"


@needs_minari
def test_presets_resolve_for_v2_and_minari_ids(run_cli):
    from mdpt.experiments.config import resolve_config

    for dataset in ("walker2d-medium-v2", "mujoco/walker2d/medium-v0"):
        c = resolve_config({"dataset": dataset, "algo": "dql"})
        assert c.policy.grad_clip == 1.0 and c.guidance.grad_clip == 1.0  # Diffusion-QL main.py:20
        assert f"task:{dataset}" in c.preset
    assert resolve_config({"dataset": "mujoco/hopper/medium-v0", "algo": "idql"}).eval.reference == "dataset"
    assert resolve_config({"dataset": "hopper-medium-v2", "algo": "idql"}).eval.reference == "d4rl"
    code, out, err = run_cli("config", "show", "--algo", "dql", "--dataset", "hopper-medium-replay-v2")
    assert code == 0 and "task:hopper-medium-replay-v2" in out and "4.0" in out


def test_reproduce_folder_of_a_minari_id():
    from mdpt.reproduction.protocol import dataset_dir

    assert dataset_dir("mujoco/hopper/medium-v0") == "mujoco-hopper-medium-v0"
    assert dataset_dir("mujoco/walker2d/medium-v0") != dataset_dir("mujoco/hopper/medium-v0")
    assert dataset_dir("hopper-medium-v2") == "hopper-medium-v2" and dataset_dir("d/x.hdf5") == "x"


@needs_minari
@needs_mujoco
def test_train_evaluate_and_refuse_other_data(tmp_path, minari_root, monkeypatch, run_cli):
    """A tiny train-guidance / train-policy / evaluate on a Minari id and a D4RL v2 id (Hopper-v5); a
    guidance from the other dataset is refused at recombination in one line."""
    write_minari_hopper(minari_root, hopper_v5_arrays(seed=1))
    d = tmp_path / "data"
    write_d4rl_v2(d / "hopper-medium-v2.hdf5", hopper_v5_arrays(seed=2))
    monkeypatch.setenv("MDPT_DATA_DIR", str(d))

    def guidance(dataset, out):
        return run_cli("train-guidance", "--dataset", dataset, "--kind", "iql", *GUIDE, "--out", tmp_path / out)

    def policy(guidance_dir, out):
        return run_cli("train-policy", "--dataset", "mujoco/hopper/tiny-v0", "--algo", "idql", "--mode",
                       "guidance-first", "--guidance", tmp_path / guidance_dir / "guidance", *TINY, "--out", tmp_path / out)

    def evaluate(guidance_dir, *extra):
        return run_cli("evaluate", "--policy", tmp_path / "p" / "policy", "--guidance", tmp_path / guidance_dir /
                       "guidance", "--episodes", "1", "--max-steps", "3", *extra)

    code, _, err = guidance("mujoco/hopper/tiny-v0", "g")
    assert code == 0, err
    code, out, err = policy("g", "p")
    assert code == 0, err
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["reference"] == "dataset" and summary["reference_bounds"] == [0.0, 10.0]
    code, out, err = evaluate("g", "--json")
    assert code == 0, err
    assert json.loads(out)["env"] == "Hopper-v5" and json.loads(out)["reference"] == "dataset"  # its preset
    # the D4RL v2 id trains too; its guidance is another dataset's for the Minari policy
    code, _, err = guidance("hopper-medium-v2", "g2")
    assert code == 0, err
    code, _, err = policy("g2", "p2")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "was trained on data" in err, err
    code, _, err = evaluate("g2")
    assert code == 2 and "allow-data-mismatch" in err


@pytest.mark.slow
@needs_minari
@needs_mujoco
def test_data_make_on_hopper_v5_writes_either_layout(tmp_path, monkeypatch, run_cli):
    """`mdpt data make hopper-medium-v2` runs the D4RL recipe on Gymnasium's Hopper-v5; the Minari layout
    loads back by its Minari id from MINARI_DATASETS_PATH, the same arrays as the HDF5 layout."""
    tiny = ["--sac-steps", "200", "--transitions", "120", "--eval-every", "100", "--eval-episodes", "1",
            "--learning-starts", "100", "--quiet"]
    code, out, err = run_cli("data", "make", "hopper-medium-v2", *tiny, "--out", tmp_path / "m")
    assert code == 0, err
    made = tmp_path / "m" / "hopper-medium-v2.hdf5"
    # the same recipe again, the other layout: the SAC run and rollouts are reused from the work dir
    code, out, err = run_cli("data", "make", "hopper-medium-v2", *tiny, "--layout", "minari", "--out", tmp_path / "m")
    assert code == 0, err
    assert f"wrote {tmp_path / 'm' / 'mdpt' / 'hopper-mujoco' / 'medium-v0'}" in out
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "m"))
    from mdpt.data.load import load_dataset

    hdf5, minari = load_dataset(made), load_dataset("mdpt/hopper-mujoco/medium-v0")
    assert hdf5.env.env_id == minari.env.env_id == "Hopper-v5" and len(hdf5) == 120
    assert hdf5.fingerprint == minari.fingerprint
    assert hdf5.attrs["env_id"] == "Hopper-v5" and minari.attrs["ref_max_score"] == hdf5.attrs["ref_max_score"]
    # made data names its env: no note about D4RL's gym-v3 collection
    assert not any("Hopper-v3" in n for n in hdf5.notes)


def test_reproduce_plans_v2_and_minari_ids_apart_from_bullet(tmp_path):
    """Grouped programs stack one environment's datasets: bullet hopper (obs 15) and D4RL v2 hopper
    (Hopper-v5, obs 11) share a short name but not an env; a Minari id (known only once loaded) trains
    alone, in its own folder."""
    from mdpt.experiments.config import RunConfig
    from mdpt.reproduction.execute import training_batches
    from mdpt.reproduction.plan import plan
    from mdpt.reproduction.protocol import Protocol

    datasets = ("bullet-hopper-medium-v0", "hopper-medium-v2", "hopper-expert-v2", "mujoco/hopper/medium-v0")
    p = Protocol(datasets=datasets, steps=10, eval_every=5, studies=("gfdt-vs-joint",))
    items = plan(p, tmp_path)
    assert {it.key.split("/")[0] for it in items} == {"bullet-hopper-medium-v0", "hopper-medium-v2",
                                                      "hopper-expert-v2", "mujoco-hopper-medium-v0"}
    configs = {it.key: RunConfig.from_dict(it.settings) for it in items}
    groups = [tuple(it.dataset for it in b) for b in training_batches(items, configs, tmp_path, group=True)
              if b[0].name == "iql-a"]
    assert sorted(groups) == [("bullet-hopper-medium-v0",), ("hopper-medium-v2", "hopper-expert-v2"),
                              ("mujoco/hopper/medium-v0",)]
