"""Reports: the terminal table, JSON, JUnit XML and the exit code, from real results."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.console import Console

from kubelab.verify.checks import CheckResult, evaluate
from kubelab.verify.report import exit_code, print_table, write_json, write_junit
from tests.verify.verify_captures import Folder, build_folder


@pytest.fixture
def mixed(tmp_path: Path) -> list[CheckResult]:
    """Real results with a failure in them: the captured pods all on one worker."""
    folder = build_folder(tmp_path / "e", spread=False)
    results = evaluate(folder.root, folder.expected)
    assert any(r.passed for r in results) and any(not r.passed for r in results)
    return results


def test_exit_code(folder: Folder, mixed: list[CheckResult]) -> None:
    assert exit_code(evaluate(folder.root, folder.expected)) == 0
    assert exit_code(mixed) == 1
    assert exit_code([]) == 1  # nothing checked is not a pass


def test_json_round_trip(tmp_path: Path, mixed: list[CheckResult]) -> None:
    path = tmp_path / "verify.json"
    write_json(mixed, path)
    data = json.loads(path.read_text())
    assert data["passed"] is False
    assert data["summary"] == {
        "total": len(mixed),
        "passed": sum(r.passed for r in mixed),
        "failed": sum(not r.passed for r in mixed),
    }
    assert [r["id"] for r in data["results"]] == [r.id for r in mixed]
    assert [CheckResult.from_dict(r) for r in data["results"]] == mixed  # round-trips


def test_junit_matches_the_results(tmp_path: Path, mixed: list[CheckResult]) -> None:
    path = tmp_path / "verify.xml"
    write_junit(mixed, path)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite is not None
    assert int(suite.get("tests", "-1")) == len(mixed)
    assert int(suite.get("failures", "-1")) == sum(not r.passed for r in mixed)
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [r.id for r in mixed]
    for case, result in zip(cases, mixed, strict=True):
        failure = case.find("failure")
        assert (failure is None) == result.passed
        if failure is not None:
            assert failure.get("message") == result.detail
            assert result.hint in (failure.text or "")
        assert float(case.get("time", "-1")) == pytest.approx(result.duration, abs=1e-3)


def test_table_shows_every_check(mixed: list[CheckResult]) -> None:
    console = Console(record=True, width=220, color_system=None)
    print_table(mixed, console)
    text = console.export_text()
    for r in mixed:
        assert r.id in text
    assert text.count("FAIL") == sum(not r.passed for r in mixed)
    assert text.count("PASS") == sum(r.passed for r in mixed)
    assert f"{sum(r.passed for r in mixed)}/{len(mixed)} checks passed" in text
    assert "hint: " in text
