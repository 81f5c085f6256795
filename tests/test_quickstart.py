"""`mdpt quickstart`: finding its data offline (data dir, else the dataset shipped with mdpt), and the
whole pipeline at `--tiny` size on that shipped dataset."""

from __future__ import annotations

import json

import pytest
from conftest import d4rl_arrays, write_raw_hdf5

from mdpt.data.packaged import packaged_ids, packaged_path
from mdpt.errors import MDPTError
from mdpt.reproduction.quickstart import DATASET, TINY, find_dataset

ATTRS = {"env_id": "HopperBulletEnv-v0", "ref_min_score": 0.0, "ref_max_score": 10.0}


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """cwd in a temp dir with ../shared/datasets and ./shared/datasets holding hopper files, and an
    empty data dir: what the quickstart must not look at, and where it must look."""
    for shared in (tmp_path / "shared" / "datasets", tmp_path / "work" / "shared" / "datasets"):
        write_raw_hdf5(shared / f"{DATASET}.hdf5", d4rl_arrays(), ATTRS)
    (tmp_path / "work").mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("MDPT_DATA_DIR", str(tmp_path / "empty"))
    return tmp_path


def test_packaged_dataset_is_real():
    path = packaged_path(DATASET)
    assert path is not None and DATASET in packaged_ids()
    from mdpt.data.load import load_dataset

    data = load_dataset(path)
    assert data.dataset_id == DATASET and data.env.name == "hopper" and data.notes == ()
    assert len(data) >= 10_000 and data.attrs["made_by"] == "mdpt data make"
    # a policy that hops: far above uniform random actions (~20), the file's own random reference
    assert data.return_stats()["mean"] > 5 * data.attrs["ref_min_score"]


def test_find_dataset_never_looks_at_shared(elsewhere):
    lines = []
    data = find_dataset(elsewhere / "qs", TINY, log=lines.append)
    assert data.source == str(packaged_path(DATASET)) and "shared" not in data.source
    assert len(data) > 1000 and "shipped with mdpt" in lines[0]
    assert not (elsewhere / "qs").exists()  # nothing made


def test_find_dataset_prefers_the_data_dir(elsewhere, monkeypatch):
    data_dir = elsewhere / "data"
    write_raw_hdf5(data_dir / "bullet-hopper-expert-v0.hdf5", d4rl_arrays(seed=2), ATTRS)
    monkeypatch.setenv("MDPT_DATA_DIR", str(data_dir))
    lines = []
    data = find_dataset(elsewhere / "qs", TINY, log=lines.append)
    assert data.dataset_id == "bullet-hopper-expert-v0" and len(data) == 15
    assert lines == [f"dataset: bullet-hopper-expert-v0 from {data_dir} (15 transitions)"]
    (data_dir / f"{DATASET}.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(MDPTError, match="not a readable HDF5 file"):  # damaged: said, not skipped
        find_dataset(elsewhere / "qs", TINY, log=lines.append)


def test_find_dataset_takes_the_dataset_asked_for(elsewhere, monkeypatch):
    path = elsewhere / "mine.hdf5"
    write_raw_hdf5(path, d4rl_arrays(seed=4), ATTRS)
    lines = []
    data = find_dataset(elsewhere / "qs", TINY, log=lines.append, dataset=str(path))
    assert data.source == str(path) and lines == [f"dataset: {path} (15 transitions)"]
    shipped = find_dataset(elsewhere / "qs", TINY, log=lines.append, dataset=DATASET)  # a shipped one by its id
    assert shipped.source == str(packaged_path(DATASET)) and "shipped with mdpt" in lines[-1]
    mine = elsewhere / "data"  # a file of that id in the data dir wins over the shipped one
    write_raw_hdf5(mine / "bullet-hopper-medium-v0.hdf5", d4rl_arrays(seed=5), ATTRS)
    monkeypatch.setenv("MDPT_DATA_DIR", str(mine))
    assert len(find_dataset(elsewhere / "qs", TINY, log=lines.append, dataset="bullet-hopper-medium-v0")) == 15
    monkeypatch.setenv("MDPT_OFFLINE", "1")
    with pytest.raises(MDPTError):
        find_dataset(elsewhere / "qs", TINY, log=lines.append, dataset="bullet-walker2d-medium-v0")


def test_find_dataset_without_packaged_data_says_what_to_do(elsewhere, monkeypatch):
    import mdpt.data.packaged as packaged

    monkeypatch.setattr(packaged, "PACKAGED_DIR", elsewhere / "none")
    with pytest.raises(MDPTError, match=f"mdpt data make {DATASET}"):
        find_dataset(elsewhere / "qs", TINY, log=lambda *_: None)


def test_quickstart_tiny_offline_on_the_shipped_dataset(elsewhere, tmp_path, run_cli):
    out = tmp_path / "qs"
    code, stdout, err = run_cli("quickstart", "--tiny", "--no-progress", "--out", out)
    assert code == 0, err
    assert f"shipped with mdpt, {packaged_path(DATASET)}" in stdout
    for stage in ("stage 1/4", "stage 2/4", "stage 3/4", "stage 4/4"):
        assert stage in stdout
    assert stdout.strip().endswith(f"report: {out / 'report' / 'report.md'}")
    t = json.loads((out / "transfer" / "transfer.json").read_text())
    assert t["policies"] == ["dql-joint-s0", "dql-joint-s1", "dql-gfdt-s0", "dql-gfdt-s1"]
    assert t["guidances"] == ["dql-critic-s0", "dql-critic-s1", "iql-s0", "iql-s1"]
    assert ["dql-gfdt-s1", "iql-s1"] in t["diagonal"] and ["dql-joint-s0", "dql-critic-s0"] in t["diagonal"]
    assert {(r["policy"], r["guidance"]) for r in t["summary"]["cross_algorithm"]} == {
        ("dql-joint", "iql"), ("dql-gfdt", "dql-critic")}
    meta = json.loads((out / "runs" / "dql-guidance-first" / "policy" / "meta.json").read_text())
    assert meta["trained_with_guidance"]["kind"] == "iql"
    assert meta["trained_with_guidance"]["path"] == str((out / "runs" / "iql-guidance" / "guidance").resolve())
    assert meta["dataset"]["id"] == DATASET
    rows = [json.loads(x) for x in (out / "runs" / "dql-joint" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["phase"] == "eval"]
    assert {r["variant"] for r in evals} == {"guided", "unguided"} and all("sim_s" in r for r in evals)
    assert json.loads((out / "runs" / "dql-joint" / "config.json").read_text())["eval"]["max_steps"] == 3
    report = (out / "report" / "report.md").read_text()
    assert "Guidance transfer" in report and DATASET in report
    assert list((out / "report").glob("*.png"))


def test_quickstart_bad_budget(tiny_data_dir, tmp_path, run_cli):
    code, _, err = run_cli("quickstart", "--steps", "0", "--out", tmp_path / "qs")
    assert code == 2 and "--steps: must be in 1..100000000, got 0" in err and err.count("\n") == 1


def test_the_shipped_mujoco_dataset_hops():
    """The MuJoCo hopper shipped with mdpt (mdpt/datasets/README.md): made by `mdpt data make`, on Hopper-v5,
    long episodes moving forward, far above random actions."""
    from mdpt.data.load import load_dataset

    path = packaged_path("hopper-medium-v2")
    assert path is not None and "hopper-medium-v2" in packaged_ids()
    data = load_dataset(path)
    assert data.env.env_id == "Hopper-v5" and data.attrs["made_by"] == "mdpt data make" and data.notes == ()
    stats = data.return_stats()
    assert len(data) >= 10_000 and len(data) / stats["episodes"] > 300  # episodes that do not end in a fall
    assert stats["mean"] > 20 * data.attrs["ref_min_score"] and data.observations[:, 5].mean() > 0.3
