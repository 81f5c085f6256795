"""MDPT deletes only what it can prove it made: a folder of look-alike user files given as --out is
refused before anything in it is cleaned or written, and a refused command leaves nothing behind."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from mdpt.io import is_temp_name

# user files whose names look like temporaries of MDPT's writers (or of its older versions)
LOOK_ALIKES = (".notes.tmp", ".photos.old-2023", ".metrics.jsonl.abc123.tmp", ".policy.old-4242",
               ".report.x.tmp", ".state-5.safetensors.tmp", ".config.json.mdpt-tmp-.tmp",
               ".x.mdpt-old-", "mdpt-tmp-1.tmp")


def snapshot(folder: Path) -> dict[str, str]:
    """Every path below `folder` with its content's hash (folders: 'dir')."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            out[str(Path(root, d).relative_to(folder))] = "dir"
        for f in files:
            p = Path(root, f)
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def user_folder(tmp_path: Path, with_run_names: bool = False) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in LOOK_ALIKES:
        if "photos" in name or "policy" in name:
            (folder / name).mkdir()
            (folder / name / "img.jpg").write_bytes(b"\xff\xd8 holiday")
        else:
            (folder / name).write_text(f"my {name}")
    (folder / "thesis.tex").write_text("\\section{Intro}")
    if with_run_names:  # a user folder that happens to hold names a run writes too
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / ".old.tmp").write_text("mine")
        (folder / "metrics.jsonl").write_text("")
    return folder


def test_temporary_names_are_mdpt_s_own_only():
    for name in LOOK_ALIKES:
        assert not is_temp_name(name), name
    for name in (".metrics.jsonl.mdpt-tmp-abc_12.tmp", ".policy.mdpt-old-123", ".report.mdpt-tmp-k2j.tmp"):
        assert is_temp_name(name), name


@pytest.mark.parametrize("with_run_names", [False, True])
@pytest.mark.parametrize("command", ["train-guidance", "train-policy"])
def test_out_at_a_user_folder_is_refused_and_nothing_in_it_changes(tiny_hopper_hdf5, tmp_path, run_cli, command,
                                                                    with_run_names):
    folder = user_folder(tmp_path, with_run_names)
    before = snapshot(folder)
    what = ["--kind", "iql"] if command == "train-guidance" else ["--algo", "dql", "--mode", "joint"]
    code, _, err = run_cli(command, *what, "--dataset", tiny_hopper_hdf5, "--steps", "4", "--chunk", "2",
                           "--batch-size", "8", "--out", folder, "--no-progress")
    assert code == 2 and err.count("\n") == 1, err
    assert "not an mdpt run directory's" in err and "choose a new or empty --out" in err
    assert snapshot(folder) == before


def test_reproduce_at_a_user_folder_is_refused_and_nothing_in_it_changes(tiny_hopper_hdf5, tmp_path, run_cli):
    folder = user_folder(tmp_path)
    before = snapshot(folder)
    code, _, err = run_cli("reproduce", "--datasets", tiny_hopper_hdf5, "--algos", "dql", "--steps", "4",
                           "--eval-every", "2", "--out", folder, "--no-progress")
    assert code == 2 and err.count("\n") == 1 and "not an mdpt reproduction directory's" in err, err
    assert snapshot(folder) == before


def test_a_refused_run_leaves_nothing_behind(tiny_hopper_hdf5, tmp_path, run_cli):
    """A run refused after its directory was made (here: a stage-1 guidance that does not exist) removes
    the lock, the empty metrics log and the folders it created."""
    out = tmp_path / "new" / "deeper" / "run"
    code, _, err = run_cli("train-policy", "--algo", "dql", "--mode", "guidance-first", "--guidance",
                           tmp_path / "no-such-guidance", "--dataset", tiny_hopper_hdf5, "--steps", "4",
                           "--out", out, "--no-progress")
    assert code == 2 and err.count("\n") == 1, err
    assert not (tmp_path / "new").exists()


def test_a_refused_run_in_an_empty_folder_leaves_it_empty(tiny_hopper_hdf5, tmp_path, run_cli, monkeypatch):
    from mdpt.experiments import runner

    out = tmp_path / "empty"
    out.mkdir()

    def refuse(self, state, steps):
        from mdpt.errors import MDPTError
        raise MDPTError("the training step needs more memory than there is")

    monkeypatch.setattr(runner.Run, "check_training_memory", refuse)
    code, _, err = run_cli("train-guidance", "--kind", "iql", "--dataset", tiny_hopper_hdf5, "--steps", "4",
                           "--batch-size", "8", "--set", "guidance.hidden=8", "--out", out, "--no-progress")
    assert code == 2 and "more memory" in err
    assert list(out.iterdir()) == []
