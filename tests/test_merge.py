"""`mdpt reproduce --merge`: shards of a reproduction's seeds, joined, hold what one run of all the seeds
holds (every draw of a seed depends on its number only), and shards that are not one protocol's are refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import d4rl_arrays, write_raw_hdf5

from mdpt.errors import MDPTError

DATASET = "bullet-hopper-medium-v0"
ARGS = ["--datasets", DATASET, "--algos", "dql", "--steps", "4", "--eval-every", "2", "--episodes", "2",
        "--curve-episodes", "1", "--eval-max-steps", "3", "--curve-candidates", "3", "--ensemble-k", "2",
        "--transfer-points", "1", "--studies", "gfdt-vs-joint,transfer", "--no-progress",
        "--set", "policy.hidden=8", "--set", "policy.depth=1", "--set", "guidance.hidden=8", "--set",
        "guidance.depth=1", "--set", "batch_size=8", "--set", "chunk=2"]
PAIRING = ("seed-swapped", "ensemble")  # swaps that pair seeds with each other: within a shard


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from mdpt.cli.main import main

    root = tmp_path_factory.mktemp("merge")
    attrs = {"env_id": "HopperBulletEnv-v0", "ref_min_score": 0.0, "ref_max_score": 10.0}
    write_raw_hdf5(root / "data" / f"{DATASET}.hdf5", d4rl_arrays(lengths=(20, 15, 25), seed=3), attrs)
    mp = pytest.MonkeyPatch()
    mp.setenv("MDPT_DATA_DIR", str(root / "data"))
    mp.setenv("MDPT_OFFLINE", "1")
    codes = [main(["reproduce", *ARGS, "--seeds", "4", "--out", str(root / "whole")]),
             main(["reproduce", *ARGS, "--seeds", "2", "--out", str(root / "a")]),
             main(["reproduce", *ARGS, "--seeds", "2", "--seed", "2", "--out", str(root / "b")])]
    assert codes == [0, 0, 0]
    yield root, main
    mp.undo()


def _json(path):
    return json.loads(path.read_text())


def test_merged_shards_hold_what_one_run_of_all_the_seeds_holds(shards, capsys):
    root, main = shards
    assert main(["reproduce", "--merge", f"{root / 'b'},{root / 'a'}", "--out", str(root / "merged")]) == 0
    whole, merged = root / "whole", root / "merged"
    saved = _json(merged / "protocol.json")
    assert saved["protocol"]["seeds"] == 4 and saved["protocol"]["shards"] == [[0, 2], [2, 2]]
    assert saved["runs"] == _json(whole / "protocol.json")["runs"]
    for key in saved["runs"]:
        run, one = merged / "runs" / key, whole / "runs" / key
        config = _json(run / "config.json")
        assert config["seeds"] == 4
        assert {k: v for k, v in config.items() if k not in ("stage1", "versions")} == \
            {k: v for k, v in _json(one / "config.json").items() if k not in ("stage1", "versions")}
        got, want = _json(run / "summary.json"), _json(one / "summary.json")
        assert got["seeds"] == want["seeds"]
        for part in ("final", "best", "selected_offline"):
            assert got[part].keys() == want[part].keys(), (key, part)
            for variant in want[part]:
                np.testing.assert_allclose(got[part][variant]["scores"], want[part][variant]["scores"], atol=1e-4,
                                           err_msg=f"{key} {part} {variant}")
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert all(len(r["scores"]) == 4 for r in rows if r["phase"] == "eval")
        assert all(len(v) == 4 for r in rows if r["phase"] == "train" for v in r.values() if isinstance(v, list))
    cells, one = (_json(d / "transfer" / f"{DATASET}.json")["cells"] for d in (merged, whole))
    assert cells.keys() == one.keys()
    for key, cell in cells.items():
        assert len(cell["scores"]) == 4
        if not any(k in key for k in PAIRING):
            np.testing.assert_allclose(cell["scores"], one[key]["scores"], atol=1e-4, err_msg=key)
    assert cells["dql-gfdt@4|independent-iql"]["guidance"] == ["runs/bullet-hopper-medium-v0/iql-b/guidance"]
    report = (merged / "report" / "report.md").read_text()
    assert "4 seeds (vmapped, run in 2 shards of seeds 0-1, 2-3 and merged: " in report
    assert "--seed 2 --steps 4" in report and f"--merge {merged}-seeds-0-1,{merged}-seeds-2-3" in report
    # reported again from the merged directory alone, the same findings; training it further is refused
    shutil.copytree(merged, root / "copy")
    assert main(["reproduce", "--report-only", "--out", str(root / "copy")]) == 0
    assert (root / "copy" / "report" / "findings.json").read_bytes() == (merged / "report" / "findings.json").read_bytes()
    assert main(["reproduce", *ARGS, "--seeds", "4", "--out", str(merged)]) == 2
    assert "merged from shards" in capsys.readouterr().err


def test_shards_that_are_not_one_protocols_are_refused_and_nothing_is_written(shards, tmp_path):
    from mdpt.reproduction.merge import merge_reproductions

    root, _ = shards
    out = tmp_path / "out"
    with pytest.raises(MDPTError, match="two or more"):
        merge_reproductions([root / "a"], out)
    with pytest.raises(MDPTError, match="start at 0, but .*end at 1"):  # overlapping seeds
        merge_reproductions([root / "a", root / "whole"], out)
    gap = tmp_path / "gap"
    shutil.copytree(root / "b", gap)
    saved = _json(gap / "protocol.json")
    saved["protocol"]["seed"] = 3
    (gap / "protocol.json").write_text(json.dumps(saved))
    with pytest.raises(MDPTError, match="without gaps or overlap"):
        merge_reproductions([root / "a", gap], out)
    saved["protocol"].update(seed=2, steps=6)
    (gap / "protocol.json").write_text(json.dumps(saved))
    with pytest.raises(MDPTError, match="differs from .* in steps"):
        merge_reproductions([root / "a", gap], out)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(root / "b", unfinished)
    (unfinished / "runs" / DATASET / "dql-gfdt" / "summary.json").unlink()
    with pytest.raises(MDPTError, match="dql-gfdt: not finished"):
        merge_reproductions([root / "a", unfinished], out)
    assert not out.exists()
