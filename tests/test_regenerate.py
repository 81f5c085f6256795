"""A reproduction's report is a function of its directory: rebuilt from the same runs it is the same,
byte for byte (findings.json; report.md but for the lines about the machine and the path it was written
from), and the committed reports under results/ either rebuild or say which runs' data they lack."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from reproduction_fixture import make_reproduction

DATA = Path(__file__).parent / "data"
RESULTS = Path(__file__).resolve().parents[1] / "results"
MACHINE_LINES = ("- command:", "- report written on:")


def _without_machine(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith(MACHINE_LINES))


def test_a_report_rebuilt_from_the_same_runs_is_the_same(tmp_path):
    from mdpt.reproduction.render import write_report

    out = make_reproduction(tmp_path / "repro")
    path = write_report(out)
    assert (out / "report" / "findings.json").read_bytes() == (DATA / "reproduction-findings.json").read_bytes()
    assert _without_machine(path.read_text()) == _without_machine((DATA / "reproduction-report.md").read_text())
    from mdpt import io as mio

    # replaced whole by io.atomic_dir, which gives the directory ordinary permissions (not mkdtemp's 0700)
    assert (out / "report").stat().st_mode & 0o777 == 0o777 & ~mio._umask()


def test_a_run_whose_metrics_are_missing_is_named_and_refused_unless_partial(tmp_path, capsys):
    from mdpt.cli.main import main

    out = make_reproduction(tmp_path / "repro", missing=("dql-bc",))
    assert main(["reproduce", "--report-only", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bullet-hopper-medium-replay-v0/dql-bc" in err and "metrics file not found" in err and "--partial" in err
    assert not (out / "report").exists()  # nothing half-written
    assert main(["reproduce", "--report-only", "--partial", "--out", str(out)]) == 0
    report = (out / "report" / "report.md").read_text()
    assert "**Partial report: 1 of 6 runs could not be read**: bullet-hopper-medium-replay-v0/dql-bc" in report
    assert "Not finished yet" not in report  # named once, as unreadable


def _committed() -> list[Path]:
    return sorted(p.parent for p in RESULTS.glob("*/protocol.json"))


@pytest.mark.parametrize("root", _committed(), ids=lambda p: p.name)
def test_every_committed_report_rebuilds_or_names_what_it_lacks(root, tmp_path, capsys):
    """A committed reproduction whose runs kept their metrics rebuilds its findings.json byte for byte; one
    whose metrics were not committed is refused by `--report-only` (exit 2), naming a run, and its committed
    report is left as it is."""
    from mdpt.cli.main import main

    plan = json.loads((root / "protocol.json").read_text())
    missing = [key for key in plan["runs"] if not (root / "runs" / key / "metrics.jsonl").exists()]
    out = tmp_path / root.name
    shutil.copytree(root, out)
    code = main(["reproduce", "--report-only", "--out", str(out)])
    if missing:
        assert code == 2 and missing[0] in capsys.readouterr().err
    else:
        assert code == 0
    assert (out / "report" / "findings.json").read_bytes() == (root / "report" / "findings.json").read_bytes()


def test_the_committed_reanalysis_regenerates_from_results(tmp_path, monkeypatch):
    """results/reanalysis/verdicts.json is a function of what results/ keeps (the runs' summaries and the
    transfer caches): its script rebuilds it byte for byte."""
    import importlib.util

    script = RESULTS / "reanalysis" / "reanalyse.py"
    spec = importlib.util.spec_from_file_location("reanalyse", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (RESULTS / "reanalysis" / "verdicts.json").read_bytes()
    monkeypatch.setattr(module, "__file__", str(tmp_path / "reanalyse.py"))
    assert module.main() == 0
    assert (tmp_path / "verdicts.json").read_bytes() == committed
