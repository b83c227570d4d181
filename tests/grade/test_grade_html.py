"""grades.html as a browser shows it: headless Chromium renders the synthetic class's page.

The page's rows and scores, as Chromium's DOM holds them, must match gradebook.csv,
and the chart's bars must count the graded students. The screenshot is kept as a test
artifact (artifacts/grade/grades.png, gitignored). Chromium runs in a network
namespace of its own (no network at all) when the test runs as root.
"""

from __future__ import annotations

import copy
import csv
import os
import shutil
import struct
import subprocess
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from kubelab.grade.gradebook import ClassReport, grade_handins
from kubelab.grade.html import render_grades
from kubelab.grade.rubric import Rubric
from tests.grade.handin_class import SyntheticClass

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "grade"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    return found


def run_chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    profile.mkdir(parents=True, exist_ok=False)  # a new, empty profile every run
    argv = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()]
    if os.geteuid() == 0 and shutil.which("unshare"):
        argv = ["unshare", "--net", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, check=True)


class PageReader(HTMLParser):
    """The gradebook rows and the chart's bars, as the DOM holds them."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.bins: list[dict[str, str]] = []
        self.scripts = 0
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "tr" and "data-student" in values:
            self.rows.append(values)
        if tag == "g" and "bin" in values.get("class", "").split():
            self.bins.append(values)
        if tag == "script":
            self.scripts += 1
        for key in ("src", "href"):
            if values.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(values[key])


@pytest.fixture(scope="module")
def graded(
    synthetic_class: SyntheticClass, tmp_path_factory: pytest.TempPathFactory
) -> ClassReport:
    return grade_handins(
        synthetic_class.handins, 2, tmp_path_factory.mktemp("html"), roster=synthetic_class.roster
    )


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_chromium_renders_the_gradebook(graded: ClassReport, tmp_path: Path) -> None:
    page = graded.out_dir / "grades.html"
    dom = run_chromium(page, tmp_path / "profile-dom", "--dump-dom").stdout
    reader = PageReader()
    reader.feed(dom)
    with (graded.out_dir / "gradebook.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    assert len(reader.rows) == len(table) == len(graded.grades)
    assert [(r["data-student"], r["data-status"], r["data-total"]) for r in reader.rows] == [
        (r["student"], r["status"], r["total"]) for r in table
    ]
    graded_count = sum(1 for r in table if r["status"] == "graded")
    assert sum(int(b["data-count"]) for b in reader.bins) == graded_count
    assert len(reader.bins) == 10
    assert reader.scripts == 1 and reader.external == []  # one inline script; nothing to fetch

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "grades.png"
    shot.unlink(missing_ok=True)
    run_chromium(page, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1400,2000")
    assert shot.is_file()
    assert png_size(shot) == (1400, 2000)
    assert shot.stat().st_size > 20_000  # a rendered table and chart, not a blank page
    print(f"screenshot: {shot}")


def test_evidence_text_is_escaped(graded: ClassReport, rubric: Rubric) -> None:
    # Node names and details come from students' evidence: a page must not run them.
    graded_one = copy.deepcopy(next(g for g in graded.grades if g.graded))
    graded_one.items = [
        replace(i, detail="<img src=x onerror=alert(1)>", score=0) for i in graded_one.items
    ]
    failed = copy.deepcopy(graded_one)
    failed.student, failed.status, failed.error = "x", "error", "<script>alert(1)</script>"
    html = render_grades([graded_one, failed], rubric)
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)" in html
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
