"""The teacher's outputs, and grading a folder of hand-ins into them.

    out_dir/gradebook.csv              one row per student: one column per rubric item,
                                       total, max, flags, error
    out_dir/grades.html                the table, the score distribution, per student the
                                       failed checks with hints and the flags
    out_dir/feedback/<student>.md      what each student gets back
    out_dir/results/<student>.json     the full grade (checks, items, flags, identity)
    out_dir/gradescope/<student>/results.json   with gradescope=True
    out_dir/handins/<student>/         each archive unpacked (the evidence graded)

A student is a row whatever happens: an archive that cannot be read, or a student on
the roster without one, is a row with status "error" and the reason.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TextIO

from kubelab import safeio
from kubelab.errors import KubelabError
from kubelab.grade import gradescope as gradescope_format
from kubelab.grade import html
from kubelab.grade.archive import (
    DEFAULT_LIMITS,
    NAME_PREFIX,
    ArchiveError,
    Limits,
    parse_name,
    read_handin,
)
from kubelab.grade.grading import (
    StudentGrade,
    add_class_flags,
    error_grade,
    fmt,
    grade_evidence,
)
from kubelab.grade.integrity import DUPLICATE, ROSTER, Flag
from kubelab.grade.rubric import Rubric, load_rubric

GRADEBOOK = "gradebook.csv"
GRADES_HTML = "grades.html"
FEEDBACK = "feedback"
RESULTS = "results"
GRADESCOPE = "gradescope"
HANDINS = "handins"


@dataclass
class ClassReport:
    rubric: Rubric
    grades: list[StudentGrade]
    out_dir: Path
    written: dict[str, Path] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # archives of other exercises

    @property
    def errors(self) -> list[StudentGrade]:
        return [g for g in self.grades if not g.graded]

    def summary(self) -> str:
        """One line for the terminal: counts, and where the gradebook is."""
        graded = len(self.grades) - len(self.errors)
        flagged = sum(1 for g in self.grades if g.flags)
        line = (
            f"{len(self.grades)} students: {graded} graded, {len(self.errors)} not graded "
            f"(errors), {flagged} flagged; see {self.out_dir / GRADEBOOK} and "
            f"{self.out_dir / GRADES_HTML}"
        )
        if self.skipped:
            line += f"; {len(self.skipped)} hand-ins of other exercises left alone"
        return line


# --- inputs -----------------------------------------------------------------------


def parse_since(value: str | date | datetime | None) -> datetime | None:
    """--since as a moment: an ISO date (midnight UTC) or date and time."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise KubelabError(
            f"--since {value!r} is not a date",
            hint="give an ISO date or time: 2025-03-01 or 2025-03-01T08:00+08:00",
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def read_roster(path: Path | str) -> list[str]:
    """Student IDs, one per line (the first CSV column); '#' starts a comment."""
    students: list[str] = []
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise KubelabError(f"cannot read roster {path}: {exc.strerror or exc}") from None
    for row in csv.reader(text.splitlines()):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        student = row[0].strip()
        if student.lower() in ("student", "student_id", "id") and not students:
            continue  # a header line
        if student not in students:
            students.append(student)
    return students


def find_archives(folder: Path) -> list[Path]:
    """Every file under `folder` whose name says it is a hand-in (kubelab-ex...)."""
    return sorted(
        p for p in folder.rglob(f"{NAME_PREFIX}*") if p.is_file() and not p.name.startswith(".")
    )


# --- the teacher's flow with hand-ins -------------------------------------------------


def grade_handins(
    folder: Path | str,
    exercise: int,
    out_dir: Path | str,
    since: str | date | datetime | None = None,
    gradescope: bool = False,
    *,
    roster: Path | str | None = None,
    rubric: Rubric | None = None,
    limits: Limits = DEFAULT_LIMITS,
    on_grade: Callable[[StudentGrade], None] | None = None,
) -> ClassReport:
    """Re-grade every hand-in of `exercise` under `folder` from its evidence; write outputs."""
    folder, out_dir = Path(folder), Path(out_dir)
    if not folder.is_dir():
        raise KubelabError(f"no folder {folder}", hint="give the folder holding the hand-ins")
    rubric = rubric or load_rubric(exercise)
    moment = parse_since(since)
    by_student: dict[str, list[Path]] = {}
    broken: list[StudentGrade] = []
    skipped: list[str] = []
    for archive in find_archives(folder):
        parsed = parse_name(archive.name)
        if parsed is None:
            broken.append(
                error_grade(
                    archive.name,
                    rubric,
                    "not named kubelab-ex<N>-<student>.tar.gz: cannot tell whose it is",
                    source=str(archive),
                )
            )
        elif parsed[0] != exercise:
            skipped.append(str(archive))
        else:
            by_student.setdefault(parsed[1], []).append(archive)
    grades: list[StudentGrade] = []
    if by_student:
        private_dir(out_dir / HANDINS)
    for student in sorted(by_student):
        archives = by_student[student]
        # Two hand-ins for one student (a resubmission): grade the newest, say so.
        archives.sort(key=lambda p: (p.stat().st_mtime, str(p)))
        archive = archives[-1]
        started = time.monotonic()
        try:
            handin = read_handin(archive, out_dir / HANDINS / student, limits)
            stored = (handin.report or {}).get("results")
            grade = grade_evidence(
                handin.evidence_dir,
                student,
                rubric,
                since=moment,
                stored_results=stored if isinstance(stored, list) else None,
                source=str(archive),
            )
            grade.evidence = str(handin.evidence_dir.relative_to(out_dir))
        except ArchiveError as exc:
            grade = error_grade(student, rubric, exc.message, source=str(archive))
        except Exception as exc:  # noqa: BLE001 - one hand-in must not cost the class its grades
            grade = error_grade(student, rubric, failure(exc), source=str(archive))
        grade.duration = round(time.monotonic() - started, 3)
        if len(archives) > 1:
            others = ", ".join(
                p.name if p.parent == archive.parent else str(p) for p in archives[:-1]
            )
            grade.flags.append(
                Flag(DUPLICATE, f"{len(archives)} hand-ins; graded {archive}, not {others}")
            )
        grades.append(grade)
        if on_grade:
            on_grade(grade)
    grades += broken
    if roster is not None:
        listed = read_roster(roster)
        for grade in grades:
            if grade.student not in listed and grade.student in by_student:
                grade.flags.append(Flag(ROSTER, f"{grade.student} is not on the roster"))
        handed_in = {g.student for g in grades}
        for student in listed:
            if student not in handed_in:
                grades.append(error_grade(student, rubric, "no hand-in found"))
    grades.sort(key=lambda g: g.student)
    add_class_flags(grades)
    report = ClassReport(rubric, grades, out_dir, skipped=skipped)
    report.written = write_outputs(grades, rubric, out_dir, gradescope=gradescope)
    return report


# --- outputs ------------------------------------------------------------------------


def csv_header(rubric: Rubric) -> list[str]:
    return ["student", "status", *rubric.item_ids, "total", "max", "flags", "error"]


def csv_row(grade: StudentGrade, rubric: Rubric) -> list[str]:
    cells = [grade.student, grade.status]
    for item_id in rubric.item_ids:
        item = grade.item(item_id) if grade.graded else None
        cells.append(fmt(item.score) if item else "")
    cells += [
        fmt(grade.total) if grade.graded else "",
        fmt(rubric.max_points),
        "; ".join(str(f) for f in grade.flags),
        grade.error,
    ]
    return cells


def write_csv(path: Path, grades: Iterable[StudentGrade], rubric: Rubric) -> Path:
    with atomic_write(path, newline="") as out:
        writer = csv.writer(out)
        writer.writerow(csv_header(rubric))
        for grade in grades:
            writer.writerow(csv_row(grade, rubric))
    return path


def write_result(out_dir: Path, grade: StudentGrade) -> Path:
    """results/<student>.json, written whole or not at all (a crash leaves no half file)."""
    path = out_dir / RESULTS / f"{safe_file_name(grade.student)}.json"
    with atomic_write(path) as out:
        out.write(json.dumps(grade.to_dict(), indent=2) + "\n")
    return path


def read_result(path: Path) -> StudentGrade | None:
    """A stored grade, or None when there is none or it is not one (then it is graded again)."""
    try:
        data = safeio.parse_json(safeio.read_confined(path.parent, path.name))
        return StudentGrade.from_dict(data)
    except Exception:  # noqa: BLE001 - whatever is wrong with it, grading again mends it
        return None


def failure(exc: BaseException) -> str:
    """An unexpected error while grading one student, as that student's error row says it."""
    return f"the grader failed on this student ({type(exc).__name__}: {exc})"


def renderable(grade: StudentGrade, rubric: Rubric) -> StudentGrade:
    """`grade` when every output can show it; else that student's error row, which can."""
    try:
        html.render_feedback(grade, rubric).encode("utf-8")
        html.render_grades([grade], rubric).encode("utf-8")
        gradescope_format.results_json(grade)
        csv_row(grade, rubric)
        json.dumps(grade.to_dict(), allow_nan=False).encode("utf-8")
        return grade
    except Exception as exc:  # noqa: BLE001 - one student's row must not stop the outputs
        return error_grade(
            str(grade.student) if isinstance(grade.student, str) else "?",
            rubric,
            f"the grade could not be written out ({type(exc).__name__}: {exc})",
            source=grade.source if isinstance(grade.source, str) else "",
        )


def write_outputs(
    grades: Sequence[StudentGrade], rubric: Rubric, out_dir: Path, *, gradescope: bool = False
) -> dict[str, Path]:
    grades = [renderable(g, rubric) for g in grades]
    private_dir(out_dir)
    written = {"gradebook": write_csv(out_dir / GRADEBOOK, grades, rubric)}
    with atomic_write(out_dir / GRADES_HTML) as out:
        out.write(html.render_grades(grades, rubric))
    written["html"] = out_dir / GRADES_HTML
    feedback_dir = private_dir(out_dir / FEEDBACK)
    if gradescope:
        private_dir(out_dir / GRADESCOPE)
    for grade in grades:
        write_result(out_dir, grade)
        name = safe_file_name(grade.student)
        with atomic_write(feedback_dir / f"{name}.md") as out:
            out.write(html.render_feedback(grade, rubric))
        if gradescope:
            gradescope_format.write_results(grade, out_dir / GRADESCOPE)
    written["feedback"] = feedback_dir
    written["results"] = out_dir / RESULTS
    if gradescope:
        written["gradescope"] = out_dir / GRADESCOPE
    return written


def safe_file_name(student: str) -> str:
    # Error rows may be named after an odd file; keep them inside the folder.
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in student).lstrip(".") or "_"


def private_dir(path: Path) -> Path:
    """A folder only its owner can enter, created so (grades and hand-ins are personal data).

    Created 0700 from the start, never chmod-ed after: no moment when others can look in.
    A folder that already exists is left as the teacher set it.
    """
    if not path.parent.exists():
        private_dir(path.parent)
    path.mkdir(exist_ok=True, mode=0o700)
    return path


@contextlib.contextmanager
def atomic_write(path: Path, newline: str | None = None) -> Iterator[TextIO]:
    """open(path, "w") that renames the finished file into place: never half a file.

    The file is mkstemp's, so 0600 from its creation: readable by the teacher only.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as out:
            yield out
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
