"""The teacher's outputs, and grading a folder of hand-ins into them.

    out_dir/gradebook.csv              one row per student: ID, roster name, status, one
                                       column per rubric item, adjustment, total, max,
                                       flags, error
    out_dir/intake.csv                 every file of the hand-in folder, what became of it
    out_dir/grades.html                pass rates, the table (sort, filter), copy groups,
                                       files, per student: short items, failed checks
                                       with hints, flags, a picture of the cluster
    out_dir/moodle-grades.csv, canvas-grades.csv   for the LMS's grade import
    out_dir/feedback/<student>.md      what each student gets back
    out_dir/results/<student>.json     the full grade (checks, items, flags, identity)
    out_dir/gradescope/<student>/results.json   with gradescope=True
    out_dir/handins/<student>/         each chosen archive unpacked (the evidence graded)
    out_dir/adjustments.csv            the teacher's own (student, points, reason): read,
                                       never written

A student is a row whatever happens: an archive that cannot be read, or a student on
the roster without one, is a row with status "error" and the reason.
"""

from __future__ import annotations

import contextlib
import csv
import json
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO

from kubelab import atomicfile, safeio
from kubelab.errors import ConfigError, KubelabError
from kubelab.grade import exports, html, intake
from kubelab.grade import gradescope as gradescope_format
from kubelab.grade.archive import DEFAULT_LIMITS, Limits
from kubelab.grade.grading import (
    StudentGrade,
    add_class_flags,
    error_grade,
    fmt,
    grade_evidence,
)
from kubelab.grade.intake import CopyGroup, Intake
from kubelab.grade.integrity import ROSTER, Flag
from kubelab.grade.roster import EMPTY, Roster, load_roster
from kubelab.grade.rubric import Rubric, load_rubric, points, total
from kubelab.verify.evidence import parse_time

GRADEBOOK = "gradebook.csv"
GRADES_HTML = "grades.html"
FEEDBACK = "feedback"
RESULTS = "results"
GRADESCOPE = "gradescope"
HANDINS = "handins"
INTAKE = "intake.csv"  # every file of the hand-in folder and what became of it
ADJUSTMENTS = "adjustments.csv"  # the teacher's (student, points, reason), kept here


@dataclass
class ClassReport:
    rubric: Rubric
    grades: list[StudentGrade]
    out_dir: Path
    written: dict[str, Path] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # archives of other exercises
    intake: Intake | None = None  # hand-ins: every file and what became of it
    groups: list[CopyGroup] = field(default_factory=list)
    roster: Roster = EMPTY

    @property
    def errors(self) -> list[StudentGrade]:
        return [g for g in self.grades if not g.graded]

    def summary(self) -> str:
        """For the terminal: counts, then one line per student with an error or a flag,
        the files that are not this exercise's hand-ins, the copy groups."""
        graded = len(self.grades) - len(self.errors)
        flagged = sum(1 for g in self.grades if g.flags)
        lines = [
            f"{len(self.grades)} students: {graded} graded, {len(self.errors)} not graded "
            f"(errors), {flagged} flagged; see {self.out_dir / GRADEBOOK} and "
            f"{self.out_dir / GRADES_HTML}"
        ]
        for grade in self.grades:
            who = grade.student
            if self.roster.name(who):
                who += f" ({self.roster.name(who)})"
            if not grade.graded:
                lines.append(f"  error   {who}: {grade.error}")
            elif grade.flags:
                kinds = ", ".join(dict.fromkeys(f.kind for f in grade.flags))
                lines.append(f"  flagged {who}: {kinds}")
        if self.intake is not None:
            for arrival in self.intake.arrivals:
                if arrival.outcome == intake.OTHER_EXERCISE:
                    lines.append(f"  misfiled {arrival.rel}: {arrival.detail}")
                elif arrival.outcome == intake.NOT_HANDIN:
                    lines.append(f"  not a hand-in {arrival.rel}: {arrival.detail}")
        for group in self.groups:
            lines.append(f"  copy group: {', '.join(group.students)} ({', '.join(group.reasons)})")
        return "\n".join(lines)


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
    due: str | date | datetime | None = None,
    student: str | None = None,
) -> ClassReport:
    """Re-grade every hand-in of `exercise` under `folder` from its evidence; write outputs.

    Every file in `folder` is accounted for (intake.py). With `student`, only that
    student is graded again; the others keep their results/ from the last run.
    out_dir/adjustments.csv, when present, is merged into every grade.
    """
    folder, out_dir = Path(folder), Path(out_dir)
    if not folder.is_dir():
        raise KubelabError(f"no folder {folder}", hint="give the folder holding the hand-ins")
    rubric = rubric or load_rubric(exercise)
    moment = parse_since(since)
    deadline = parse_since(due)
    class_roster = load_roster(roster)
    listed = list(class_roster.students) or None
    private_dir(out_dir)  # grades are personal data: 0700 from the start
    with tempfile.TemporaryDirectory(prefix=".intake-", dir=out_dir) as staging:
        taken = intake.take_in(folder, exercise, Path(staging), limits, listed, skip=out_dir)
        if student is not None and student not in {*taken.chosen, *taken.failed, *(listed or ())}:
            raise KubelabError(
                f"no hand-in of {student} in {folder} and no such student on the roster",
                hint="give an ID the gradebook lists (gradebook.csv, first column)",
            )
        grades: list[StudentGrade] = []
        if taken.chosen:
            private_dir(out_dir / HANDINS)
        for key, arrival in sorted(taken.chosen.items()):
            previous = read_result(out_dir / RESULTS / f"{safe_file_name(key)}.json")
            if student is not None and key != student and previous is not None:
                grades.append(previous)
                continue
            started = time.monotonic()
            try:
                evidence = intake.place(arrival, out_dir / HANDINS / safe_file_name(key))
                stored = (arrival.report or {}).get("results")
                grade = grade_evidence(
                    evidence,
                    key,
                    rubric,
                    since=moment,
                    stored_results=stored if isinstance(stored, list) else None,
                    source=str(arrival.path),
                )
                grade.evidence = str(evidence.relative_to(out_dir))
            except Exception as exc:  # noqa: BLE001 - one hand-in must not cost the class its grades
                grade = error_grade(key, rubric, failure(exc), source=str(arrival.path))
            grade.digest, grade.finished = arrival.digest, arrival.finished
            grade.file_time = arrival.file_time
            grade.flags += [Flag(kind, detail) for kind, detail in taken.flags.get(key, [])]
            grade.flags += late_flags(arrival, deadline)
            grade.duration = round(time.monotonic() - started, 3)
            grades.append(grade)
            if on_grade:
                on_grade(grade)
        for key, arrival in sorted(taken.failed.items()):
            grade = error_grade(key, rubric, arrival.detail, source=str(arrival.path))
            grade.file_time = arrival.file_time
            grade.flags += [Flag(kind, detail) for kind, detail in taken.flags.get(key, [])]
            grades.append(grade)
    handed_in = {g.student for g in grades}
    if listed is not None:
        for grade in grades:
            if grade.student not in listed and grade.student in taken.chosen:
                grade.flags.append(Flag(ROSTER, f"{grade.student} is not on the roster"))
        misfiled = {a.student: a for a in taken.misfiled() if a.student}
        for missing in listed:
            if missing in handed_in:
                continue
            wrong = misfiled.get(missing)
            reason = (
                f"no hand-in for exercise {exercise}; {wrong.rel} is exercise "
                f"{wrong.exercise}'s: upload your exercise {exercise} archive "
                f"(invoke verify --exercise {exercise} --student {missing})"
                if wrong
                else "no hand-in found"
            )
            grades.append(error_grade(missing, rubric, reason))
    grades.sort(key=lambda g: g.student)
    add_class_flags(grades)
    groups = add_copy_flags(grades)
    adjust(grades, read_adjustments(out_dir / ADJUSTMENTS))
    report = ClassReport(
        rubric,
        grades,
        out_dir,
        skipped=[str(a.path) for a in taken.misfiled()],
        intake=taken,
        groups=groups,
        roster=class_roster,
    )
    report.written = write_outputs(
        grades,
        rubric,
        out_dir,
        gradescope=gradescope,
        roster=class_roster,
        arrivals=taken.arrivals,
        groups=groups,
    )
    write_intake(out_dir / INTAKE, taken.arrivals)
    report.written["intake"] = out_dir / INTAKE
    return report


def late_flags(arrival: intake.Arrival, due: datetime | None) -> list[Flag]:
    """Late by the evidence's finish time or the archive's own time (when `invoke verify`
    packed it; the file's time when the archive does not say). The file's time alone is
    only shown: an LMS download gives every file the time of the download."""
    if due is None:
        return []
    finished, packed = parse_time(arrival.finished), parse_time(arrival.packed)
    file_time = datetime.fromtimestamp(arrival.mtime, UTC)
    archive_time = packed or file_time
    if not any(t is not None and t > due for t in (finished, archive_time)):
        return []

    def shown(moment: datetime | None) -> str:
        return moment.isoformat(timespec="seconds") if moment else "not recorded"

    return [
        Flag(
            intake.LATE,
            f"due {shown(due)}, evidence finished {shown(finished)}, archive made "
            f"{shown(packed)}, file time {shown(file_time)}",
        )
    ]


def add_copy_flags(grades: Sequence[StudentGrade]) -> list[intake.CopyGroup]:
    """Copy groups (same evidence, or a shared cluster): every member names the others."""
    graded = [g for g in grades if g.graded]
    groups = intake.copy_groups(
        {g.student: g.digest for g in graded}, {g.student: g.identity for g in graded}
    )
    members = {s: group for group in groups for s in group.students}
    for grade in grades:
        grade.flags = [f for f in grade.flags if f.kind != intake.COPY]
        group = members.get(grade.student)
        if group:
            others = ", ".join(s for s in group.students if s != grade.student)
            grade.flags.append(
                Flag(intake.COPY, f"copy group with {others} ({', '.join(group.reasons)})")
            )
    return groups


@dataclass(frozen=True)
class Adjustment:
    student: str
    points: float
    reason: str


def read_adjustments(path: Path) -> list[Adjustment]:
    """adjustments.csv (student,points,reason): the teacher's own changes, kept beside the
    outputs so every re-grade applies them again."""
    if not path.is_file():
        return []
    problems, found = [], []
    with path.open(encoding="utf-8-sig", newline="") as f:
        for number, row in enumerate(csv.reader(f), start=1):
            if not row or not row[0].strip() or row[0].startswith("#"):
                continue
            if number == 1 and row[0].strip().lower() in ("student", "student_id"):
                continue
            try:
                found.append(Adjustment(row[0].strip(), float(row[1]), ",".join(row[2:]).strip()))
            except (IndexError, ValueError):
                problems.append(f"{path}:{number}: want student,points,reason; got {row}")
    if problems:
        raise ConfigError(problems)
    return found


def adjust(grades: Sequence[StudentGrade], adjustments: Sequence[Adjustment]) -> None:
    """Set each graded total to its items plus the teacher's adjustments (from scratch,
    so a re-grade never applies one twice)."""
    by_student: dict[str, list[Adjustment]] = {}
    for a in adjustments:
        by_student.setdefault(a.student, []).append(a)
    for grade in grades:
        mine = by_student.get(grade.student, [])
        grade.adjustments = [{"points": a.points, "reason": a.reason} for a in mine]
        if grade.graded:
            grade.total = points(total(grade.items) + sum(a.points for a in mine))


def write_intake(path: Path, arrivals: Sequence[intake.Arrival]) -> Path:
    """intake.csv: every file of the hand-in folder and what became of it."""
    with atomic_write(path, newline="") as out:
        writer = csv.DictWriter(out, ["file", "outcome", "student", "exercise", "detail"])
        writer.writeheader()
        for arrival in arrivals:
            writer.writerow(arrival.to_row())
    return path


# --- outputs ------------------------------------------------------------------------


def csv_header(rubric: Rubric) -> list[str]:
    return [
        "student",
        "name",
        "status",
        *rubric.item_ids,
        "adjustment",
        "total",
        "max",
        "flags",
        "error",
    ]


def csv_row(grade: StudentGrade, rubric: Rubric, roster: Roster = EMPTY) -> list[str]:
    cells = [grade.student, roster.name(grade.student), grade.status]
    for item_id in rubric.item_ids:
        item = grade.item(item_id) if grade.graded else None
        cells.append(fmt(item.score) if item else "")
    adjustment = sum(float(a.get("points") or 0) for a in grade.adjustments)
    cells += [
        fmt(adjustment) if grade.adjustments else "",
        fmt(grade.total) if grade.graded else "",
        fmt(rubric.max_points),
        "; ".join(str(f) for f in grade.flags),
        grade.error,
    ]
    return cells


def write_csv(
    path: Path, grades: Iterable[StudentGrade], rubric: Rubric, roster: Roster = EMPTY
) -> Path:
    with atomic_write(path, newline="") as out:
        writer = csv.writer(out)
        writer.writerow(csv_header(rubric))
        for grade in grades:
            writer.writerow(csv_row(grade, rubric, roster))
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
    grades: Sequence[StudentGrade],
    rubric: Rubric,
    out_dir: Path,
    *,
    gradescope: bool = False,
    roster: Roster = EMPTY,
    arrivals: Sequence[intake.Arrival] = (),
    groups: Sequence[intake.CopyGroup] = (),
) -> dict[str, Path]:
    private_dir(out_dir)
    for grade in grades:
        # The page's picture of the cluster, drawn once from the evidence graded (hand-ins
        # and live clusters alike), then kept in results/ with the grade. Evidence is
        # hostile: a picture that cannot be drawn is left out, never a crash.
        if grade.graded and not grade.topology and grade.evidence:
            try:
                grade.topology = safeio.shown_tree(html.topology(out_dir / grade.evidence))
            except Exception:  # noqa: BLE001 - the grade stands without its picture
                grade.topology = {}
    grades = [renderable(g, rubric) for g in grades]
    written = {"gradebook": write_csv(out_dir / GRADEBOOK, grades, rubric, roster)}
    with atomic_write(out_dir / GRADES_HTML) as out:
        out.write(
            html.render_grades(grades, rubric, roster=roster, arrivals=arrivals, groups=groups)
        )
    written["html"] = out_dir / GRADES_HTML
    for kind, path in exports.write_exports(out_dir, grades, rubric, roster).items():
        written[kind] = path
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
def atomic_write(path: Path, newline: str | None = None) -> Iterator[IO[str]]:
    """open(path, "w") that renames the finished file into place: never half a file.

    The file is mkstemp's, so 0600 from its creation: readable by the teacher only.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with atomicfile.replacing(path, newline=newline) as out:
        yield out
