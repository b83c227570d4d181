"""Reports of a verify run: a terminal table, JSON, JUnit XML, and the exit code."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kubelab.verify.checks import CheckResult

FORMAT = 1
SUITE = "kubelab.verify"


def exit_code(results: Sequence[CheckResult]) -> int:
    """0 when every check passed, 1 otherwise (also when there are no results)."""
    return 0 if results and all(r.passed for r in results) else 1


NARROW = 100  # columns: below this, detail and hint go under each row
# The check whose failure explains every later "no evidence": without an API server
# no kubectl command wrote anything.
ROOT_CHECK = "api"


def root_cause_first(results: Sequence[CheckResult]) -> list[CheckResult]:
    """The results as the student should read them: when the API server did not
    answer, the checks that failed only for want of its evidence say so in one
    line, and the API check's hint (crictl, the kubelet journal) is the one shown."""
    root = next((r for r in results if r.id == ROOT_CHECK and not r.passed), None)
    if root is None:
        return list(results)
    shown = []
    for r in results:
        if r is not root and not r.passed and r.detail.startswith(("no evidence", "not run")):
            r = replace(
                r, detail=f"not checked: the API server did not answer (see {root.id})", hint=""
            )
        shown.append(r)
    return shown


def table(results: Sequence[CheckResult], title: str = "verify", width: int | None = None) -> Table:
    """One row per check; at a narrow `width` the detail and hint go under the row."""
    narrow = width is not None and width < NARROW
    out = Table(title=title, show_lines=True)
    out.add_column("check", no_wrap=not narrow)
    out.add_column("result", no_wrap=True)
    if not narrow:
        out.add_column("time", justify="right", no_wrap=True)
        out.add_column("detail")
    for r in root_cause_first(results):
        detail = Text(r.detail)
        if r.hint and not r.passed:
            detail.append("\nhint: " + r.hint.replace("\n", "\nhint: "), style="cyan")
        verdict = Text("PASS", style="green") if r.passed else Text("FAIL", style="bold red")
        if narrow:
            check = Text(f"{r.id}: {r.title}")
            if not r.passed:
                check.append("\n")
                check.append_text(detail)
            out.add_row(check, verdict)
        else:
            out.add_row(f"{r.id}\n{r.title}", verdict, f"{r.duration:.1f} s", detail)
    return out


def print_table(results: Sequence[CheckResult], console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    console.print(table(results, width=console.width))
    passed = sum(r.passed for r in results)
    style = "green" if exit_code(results) == 0 else "red"
    console.print(f"[{style}]{passed}/{len(results)} checks passed[/]")


def to_json(results: Sequence[CheckResult]) -> dict[str, Any]:
    passed = sum(r.passed for r in results)
    return {
        "format": FORMAT,
        "passed": exit_code(results) == 0,
        "summary": {"total": len(results), "passed": passed, "failed": len(results) - passed},
        "results": [r.to_dict() for r in results],
    }


def write_json(results: Sequence[CheckResult], path: Path | str) -> None:
    Path(path).write_text(json.dumps(to_json(results), indent=2) + "\n", encoding="utf-8")


def junit(results: Sequence[CheckResult], suite: str = SUITE) -> ET.ElementTree:
    """JUnit XML as CI servers read it: one testcase per check, a failure per failed one."""
    failures = sum(not r.passed for r in results)
    total_time = f"{sum(r.duration for r in results):.3f}"
    counts = {
        "tests": str(len(results)),
        "failures": str(failures),
        "errors": "0",
        "skipped": "0",
        "time": total_time,
    }
    root = ET.Element("testsuites", {"name": suite, **counts})
    suite_el = ET.SubElement(root, "testsuite", {"name": suite, **counts})
    for r in results:
        case = ET.SubElement(
            suite_el, "testcase", {"classname": suite, "name": r.id, "time": f"{r.duration:.3f}"}
        )
        if r.passed:
            ET.SubElement(case, "system-out").text = f"{r.title}: {r.detail}"
        else:
            failure = ET.SubElement(case, "failure", {"message": r.detail, "type": "CheckFailed"})
            failure.text = f"{r.title}\n{r.detail}" + (f"\n\nhint: {r.hint}" if r.hint else "")
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(results: Sequence[CheckResult], path: Path | str, suite: str = SUITE) -> None:
    junit(results, suite).write(path, encoding="utf-8", xml_declaration=True)
