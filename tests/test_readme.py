"""The README's Python API section runs as written (on the tiny hopper data of the fixtures)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_api_runs_as_written(tiny_data_dir, tmp_path, monkeypatch, capsys):
    blocks = python_blocks()
    assert len(blocks) == 1 and "mdpt.train(" in blocks[0] and "mdpt.evaluate(" in blocks[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["summary"]["final"]["guided"]["mean"] == namespace["summary"]["final"]["guided"]["mean"]
    assert namespace["result"].scores.shape == (2, 2)
    assert namespace["agent"].selector.beta == 0.5  # the IQL guidance's own selection
    assert (tmp_path / "runs" / "gf-dql" / "policy" / "meta.json").exists()
