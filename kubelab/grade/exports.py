"""Gradebook exports an LMS imports: Moodle's grade import CSV and Canvas's gradebook CSV.

Moodle (Grades > Import > CSV file): one row per student; on import the teacher maps
one identifier column ("Map from") to a Moodle user field ("Map to": ID number, email
address or username) and the grade column to a grade item; a feedback column may be
mapped to that item's feedback. We write "ID number" (the roster's student ID, Moodle's
idnumber), plus "Email address" and "Username" when the roster has them.

Canvas (Grades > Import): the columns of Canvas's own gradebook export: Student,
ID, SIS User ID, SIS Login ID, Section, then one column per assignment; Canvas finds
the student by ID, else SIS User ID, else SIS Login ID. A second row "Points
Possible" gives the assignment's points. An assignment column without "(id)"
creates a new assignment on import.

An error row (no hand-in, unreadable) is left blank, never 0: the teacher decides.
Both are UTF-8 without a byte-order mark.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from kubelab.grade.grading import StudentGrade, fmt
from kubelab.grade.roster import Roster
from kubelab.grade.rubric import Rubric

MOODLE = "moodle-grades.csv"
CANVAS = "canvas-grades.csv"


def assignment_title(rubric: Rubric) -> str:
    return f"kubelab exercise {rubric.exercise}"


def _feedback(grade: StudentGrade) -> str:
    if not grade.graded:
        return f"Not graded: {grade.error}"
    short = [i.title for i in grade.items if not i.full and not i.optional]
    text = f"{fmt(grade.total)}/{fmt(grade.max_points)}"
    return text + (f"; short of full points: {'; '.join(short)}" if short else "")


def moodle_csv(grades: Sequence[StudentGrade], rubric: Rubric, roster: Roster) -> str:
    extra = [c for c in ("email", "username") if roster.has(c)]
    header = ["ID number", *[{"email": "Email address", "username": "Username"}[c] for c in extra]]
    header += ["Full name", assignment_title(rubric), "Feedback"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for grade in grades:
        writer.writerow(
            [
                grade.student,
                *[roster.value(grade.student, c) for c in extra],
                roster.name(grade.student),
                fmt(grade.total) if grade.graded else "",
                _feedback(grade),
            ]
        )
    return out.getvalue()


def canvas_csv(grades: Sequence[StudentGrade], rubric: Rubric, roster: Roster) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", assignment_title(rubric)]
    )
    writer.writerow(["Points Possible", "", "", "", "", fmt(rubric.max_points)])
    for grade in grades:
        s = grade.student
        writer.writerow(
            [
                roster.name(s) or s,
                roster.value(s, "canvas_id"),
                roster.value(s, "sis_user_id") or s,
                roster.value(s, "sis_login_id"),
                roster.value(s, "section"),
                fmt(grade.total) if grade.graded else "",
            ]
        )
    return out.getvalue()


def write_exports(
    out_dir: Path, grades: Sequence[StudentGrade], rubric: Rubric, roster: Roster
) -> dict[str, Path]:
    from kubelab.grade.gradebook import atomic_write

    written = {}
    for kind, name, text in (
        ("moodle", MOODLE, moodle_csv(grades, rubric, roster)),
        ("canvas", CANVAS, canvas_csv(grades, rubric, roster)),
    ):
        with atomic_write(out_dir / name, newline="") as out:
            out.write(text)
        written[kind] = out_dir / name
    return written
