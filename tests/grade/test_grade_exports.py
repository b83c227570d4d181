"""Moodle's grade import CSV and Canvas's gradebook import CSV, from the roster's IDs.

The formats (kubelab/grade/exports.py): Moodle maps one identifier column ("ID
number", "Email address", "Username") to its users and a grade column to a grade
item; Canvas takes its own export's columns (Student, ID, SIS User ID, SIS Login ID,
Section, then assignments) with an optional "Points Possible" row.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from kubelab.grade.gradebook import ClassReport, grade_handins
from tests.grade import arriving_class as arriving
from tests.grade.arriving_class import ArrivingClass


@pytest.fixture(scope="module")
def graded(arriving_class: ArrivingClass, tmp_path_factory: pytest.TempPathFactory) -> ClassReport:
    return grade_handins(
        arriving_class.handins, 2, tmp_path_factory.mktemp("exports"), roster=arriving_class.roster
    )


def rows(path: Path) -> list[list[str]]:
    raw = path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")  # UTF-8 without a byte-order mark
    return list(csv.reader(raw.decode("utf-8").splitlines()))


def totals(report: ClassReport) -> dict[str, str]:
    with (report.out_dir / "gradebook.csv").open(newline="", encoding="utf-8") as f:
        return {r["student"]: r["total"] for r in csv.DictReader(f)}


def test_moodle_grade_import(graded: ClassReport) -> None:
    header, *body = rows(graded.out_dir / "moodle-grades.csv")
    assert header == ["ID number", "Email address", "Full name", "kubelab exercise 2", "Feedback"]
    want = totals(graded)
    assert [r[0] for r in body] == list(want)  # every student, roster IDs
    for student, email, name, grade, feedback in body:
        assert email == f"{student}@uni.example.edu"
        assert name == arriving.STUDENTS[student][1]
        assert grade == want[student]  # blank (not 0) for an error row
        assert feedback.startswith("Not graded: " if not grade else f"{grade}/100")
    cut_off = next(r for r in body if r[0] == "2021008")
    assert "upload kubelab-ex2-2021008.tar.gz again" in cut_off[4]


def test_canvas_gradebook_import(graded: ClassReport) -> None:
    header, possible, *body = rows(graded.out_dir / "canvas-grades.csv")
    assert header == [
        "Student",
        "ID",
        "SIS User ID",
        "SIS Login ID",
        "Section",
        "kubelab exercise 2",
    ]
    assert possible == ["Points Possible", "", "", "", "", "100"]
    want = totals(graded)
    assert [r[2] for r in body] == list(want)
    roster = {s: 9000 + n for n, s in enumerate(arriving.STUDENTS, start=1)}
    for name, canvas_id, sis_user, sis_login, section, score in body:
        assert name == arriving.STUDENTS[sis_user][1]
        assert canvas_id == str(roster[sis_user]) and section == "Lab A" and sis_login == ""
        assert score == want[sis_user]
