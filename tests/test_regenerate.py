"""A reproduction's report is a function of its directory: rebuilt from the same runs it is the same,
byte for byte (findings.json; report.md but for the lines about the machine and the path it was written
from), and the committed reports under results/ either rebuild or say which runs' data they lack."""

from __future__ import annotations

from pathlib import Path

from reproduction_fixture import make_reproduction

DATA = Path(__file__).parent / "data"
MACHINE_LINES = ("- command:", "- report written on:")


def _without_machine(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith(MACHINE_LINES))


def test_a_report_rebuilt_from_the_same_runs_is_the_same(tmp_path):
    from mdpt.experiments.findings import write_report

    out = make_reproduction(tmp_path / "repro")
    path = write_report(out)
    assert (out / "report" / "findings.json").read_bytes() == (DATA / "reproduction-findings.json").read_bytes()
    assert _without_machine(path.read_text()) == _without_machine((DATA / "reproduction-report.md").read_text())
