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
from collections.abc import Iterator
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from kubelab.grade.gradebook import ClassReport, grade_handins
from kubelab.grade.html import render_grades
from kubelab.grade.rubric import Rubric
from tests.grade.cdp import Browser
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


# --- the page a teacher uses: driven through Chromium's DevTools protocol ------------


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    with Browser(chromium(), tmp_path / "profile") as opened:
        yield opened


VISIBLE = (
    "Array.from(document.querySelectorAll('#gradebook tbody tr'))"
    ".filter(function (r) { return !r.hidden && r.offsetParent !== null; })"
    ".map(function (r) { return r.dataset.student; })"
)


def csv_rows(report: ClassReport) -> list[dict[str, str]]:
    with (report.out_dir / "gradebook.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_pass_rates_match_the_csv(arriving_graded: ClassReport, browser: Browser) -> None:
    browser.open((arriving_graded.out_dir / "grades.html").as_uri())
    shown = browser.evaluate(
        "Array.from(document.querySelectorAll('#rates tr.item')).map(function (r) {"
        " return [r.dataset.id, +r.dataset.good, +r.dataset.graded, r.cells[2].innerText]; })"
    )
    rows = [r for r in csv_rows(arriving_graded) if r["status"] == "graded"]
    rubric = arriving_graded.rubric
    assert [s[0] for s in shown] == list(rubric.item_ids)
    for item_id, good, graded, text in shown:
        points = next(i.points for i in rubric.items if i.id == item_id)
        want = sum(1 for r in rows if float(r[item_id]) >= points)
        assert (good, graded) == (want, len(rows)), item_id
        assert text.startswith(f"{item_id}: {want} of {len(rows)}")
    # own-deployment: the tainted master (2021005) is the one short of full.
    assert next(s for s in shown if s[0] == "own-deployment")[1] == len(rows) - 1


def test_filters_and_sorting_work_in_the_browser(
    arriving_graded: ClassReport, browser: Browser
) -> None:
    browser.open((arriving_graded.out_dir / "grades.html").as_uri())
    rows = csv_rows(arriving_graded)
    required = [i for i in arriving_graded.rubric.items if not i.optional]
    failing = {
        r["student"]
        for r in rows
        if r["status"] == "graded" and any(float(r[i.id]) < i.points for i in required)
    }
    want = {
        "all": {r["student"] for r in rows},
        "failing": failing,
        "flagged": {r["student"] for r in rows if r["flags"]},
        "errors": {r["student"] for r in rows if r["status"] == "error"},
    }
    assert failing and want["flagged"] and want["errors"]
    # 2021002 earned the extra credit and missed nothing required: not failing.
    assert "2021002" not in failing
    for name in ("failing", "flagged", "errors", "all"):
        browser.click(f'#controls button[data-filter="{name}"]')
        assert set(browser.evaluate(VISIBLE)) == want[name], name
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.click('#controls button[data-filter="failing"]')
    browser.screenshot(ARTIFACTS / "grades-failing.png")
    browser.click('#controls button[data-filter="all"]')

    def total(row: dict[str, str]) -> float:
        return float(row["total"])

    graded = [r for r in rows if r["total"]]
    blanks = [r["student"] for r in rows if not r["total"]]
    browser.click("#gradebook th.total")
    order = browser.evaluate(VISIBLE)
    assert [
        float(next(r for r in rows if r["student"] == s)["total"]) for s in order[: len(graded)]
    ] == sorted(map(total, graded))
    assert set(order[len(graded) :]) == set(blanks)  # blanks last
    browser.click("#gradebook th.total")
    order = browser.evaluate(VISIBLE)
    assert [
        float(next(r for r in rows if r["student"] == s)["total"]) for s in order[: len(graded)]
    ] == sorted(map(total, graded), reverse=True)
    browser.click("#gradebook th.name")  # Chinese names, in code point order
    assert browser.evaluate(VISIBLE) == [
        r["student"] for r in sorted(rows, key=lambda r: r["name"])
    ]
    browser.screenshot(ARTIFACTS / "grades-by-name.png")


def test_the_page_reads_with_script_off(arriving_graded: ClassReport, browser: Browser) -> None:
    browser.open((arriving_graded.out_dir / "grades.html").as_uri(), scripts=False)
    # Every row shows, and the filter buttons (which need the script) stay hidden.
    assert browser.evaluate(VISIBLE) == [r["student"] for r in csv_rows(arriving_graded)]
    assert browser.evaluate("document.getElementById('controls').hidden") is True


def test_names_partners_errors_and_pictures(arriving_graded: ClassReport, browser: Browser) -> None:
    browser.open((arriving_graded.out_dir / "grades.html").as_uri())
    cells = browser.evaluate(
        "Object.fromEntries(Array.from(document.querySelectorAll('#gradebook tbody tr'))"
        ".map(function (r) { return [r.dataset.student, {name: r.querySelector('.name').innerText,"
        " partners: r.querySelector('.partners').innerText,"
        " error: r.querySelector('.error').innerText}]; }))"
    )
    assert cells["2021001"] == {"name": "张伟", "partners": "2021006", "error": ""}
    assert cells["2021006"]["partners"] == "2021001"
    assert "upload kubelab-ex2-2021008.tar.gz again" in cells["2021008"]["error"]
    pictures = browser.evaluate(
        "Array.from(document.querySelectorAll('svg.topology')).map(function (svg) {"
        " return [svg.closest('section').id, Array.from(svg.querySelectorAll('g.node')).map("
        "function (g) { return [g.dataset.node, g.querySelectorAll('g.pod').length]; })]; })"
    )
    by_student = {sid.removeprefix("s-"): nodes for sid, nodes in pictures}
    graded = {r["student"] for r in csv_rows(arriving_graded) if r["status"] == "graded"}
    assert set(by_student) == graded
    # The tainted master (2021005) runs no nginx pod; its node runs one.
    assert by_student["2021005"] == [["master-2021005", 0], ["node1-2021005", 1]]
    assert by_student["2021001"] == [["master-2021001", 1], ["node1-2021001", 1]]
    silent = browser.evaluate(
        "document.querySelectorAll('#s-2021009 svg.topology rect.pod.silent').length"
    )
    assert silent == 1  # the pod IP that did not answer
    browser.screenshot(ARTIFACTS / "grades-page.png")
