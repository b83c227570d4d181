"""One student's grade, from one evidence folder: checks, rubric items, flags.

`grade_evidence` is the single path every flow takes (the student's own hand-in,
the teacher's re-evaluation of archives, live grading): it re-runs verify's checks
over the folder, scores the rubric from the same folder, and lists the integrity
flags. Nothing stored in the folder as a verdict or a score is believed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from kubelab import safeio
from kubelab.grade import integrity
from kubelab.grade.integrity import Flag
from kubelab.grade.rubric import (
    KUBELAB_APPLIED,
    Context,
    ItemScore,
    Rubric,
    score_items,
    start_stages,
    total,
)
from kubelab.verify import (
    CheckResult,
    Evidence,
    Expected,
    cluster_identity,
    evaluate,
    provenance,
)
from kubelab.verify.checks import Part, identified
from kubelab.verify.evidence import META, BadEvidence, MissingEvidence, now

GRADED = "graded"
ERROR = "error"
FORMAT = 1


class EvidenceProblem(Exception):
    """The folder cannot be graded at all (no meta.json, no usable expectations)."""


@dataclass
class StudentGrade:
    student: str
    exercise: int
    status: str  # graded | error
    max_points: float
    items: list[ItemScore] = field(default_factory=list)
    total: float | None = None
    flags: list[Flag] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    error: str = ""
    source: str = ""  # the archive, or the inventory's master address
    evidence: str = ""  # the evidence folder this grade was drawn from
    identity: dict[str, Any] = field(default_factory=dict)
    graded_at: str = field(default_factory=now)
    duration: float = 0.0  # seconds spent collecting (live) or grading
    # From intake and the teacher's files (kubelab/grade/intake.py, gradebook.py):
    digest: str = ""  # sha256 over the evidence folder: the same digest twice is a copy
    finished: str = ""  # when the evidence was finished (meta.json)
    file_time: str = ""  # the hand-in file's own time
    adjustments: list[dict[str, Any]] = field(default_factory=list)  # {points, reason}
    topology: dict[str, Any] = field(default_factory=dict)  # nodes and pods, for the page

    @property
    def graded(self) -> bool:
        return self.status == GRADED

    def item(self, item_id: str) -> ItemScore | None:
        return next((i for i in self.items if i.id == item_id), None)

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "student": self.student,
            "exercise": self.exercise,
            "status": self.status,
            "total": self.total,
            "max_points": self.max_points,
            "items": [i.to_dict() for i in self.items],
            "flags": [f.to_dict() for f in self.flags],
            "checks": [c.to_dict() for c in self.checks],
            "error": self.error,
            "source": self.source,
            "evidence": self.evidence,
            "identity": self.identity,
            "graded_at": self.graded_at,
            "duration": self.duration,
            "digest": self.digest,
            "finished": self.finished,
            "file_time": self.file_time,
            "adjustments": self.adjustments,
            "topology": self.topology,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudentGrade:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["items"] = [ItemScore.from_dict(i) for i in data.get("items") or []]
        values["flags"] = [Flag.from_dict(f) for f in data.get("flags") or []]
        values["checks"] = [CheckResult.from_dict(c) for c in data.get("checks") or []]
        return cls(**values)


def error_grade(
    student: str, rubric: Rubric, error: str, *, source: str = "", **extra: Any
) -> StudentGrade:
    return cleaned(
        StudentGrade(
            student=student,
            exercise=rubric.exercise,
            status=ERROR,
            max_points=rubric.max_points,
            error=error,
            source=source,
            **extra,
        )
    )


# The longest text a grade keeps per field: evidence text cannot bloat the outputs.
DETAIL_CHARS = 600
ERROR_CHARS = 300


def cleaned(grade: StudentGrade) -> StudentGrade:
    """`grade` with every text drawn from evidence made safe to echo (kubelab.safeio.shown)."""
    grade.error = safeio.shown(grade.error, ERROR_CHARS)
    grade.items = [
        replace(
            i,
            detail=safeio.shown(i.detail, DETAIL_CHARS, lines=True),
            hint=safeio.shown(i.hint, DETAIL_CHARS, lines=True),
            voided=safeio.shown(i.voided, ERROR_CHARS),
        )
        for i in grade.items
    ]
    grade.checks = [
        replace(
            c,
            detail=safeio.shown(c.detail, DETAIL_CHARS, lines=True),
            hint=safeio.shown(c.hint, DETAIL_CHARS, lines=True),
            parts=tuple(
                Part(safeio.shown(p.subject), p.ok, safeio.shown(p.why, DETAIL_CHARS))
                for p in c.parts
            ),
        )
        for c in grade.checks
    ]
    grade.flags = [Flag(f.kind, safeio.shown(f.detail, ERROR_CHARS)) for f in grade.flags]
    grade.topology = safeio.shown_tree(grade.topology)
    return grade


def expected_from_meta(meta: Mapping[str, Any]) -> Expected:
    """What verify expected, as the evidence's meta.json recorded it (types checked)."""
    if not isinstance(meta.get("expected"), dict):
        raise EvidenceProblem(f"{META} does not say what was expected (no 'expected')")
    try:
        return Expected.from_dict(meta["expected"])
    except (KeyError, TypeError, ValueError) as exc:
        raise EvidenceProblem(
            f"{META}: 'expected' is not usable ({safeio.shown(exc, 120)})"
        ) from None


def read_meta(evidence: Evidence) -> dict[str, Any]:
    try:
        meta = evidence.json(META)
    except (MissingEvidence, BadEvidence) as exc:
        raise EvidenceProblem(str(exc)) from None
    if not isinstance(meta, dict):
        raise EvidenceProblem(f"{META} is not a JSON object")
    return meta


def grade_evidence(
    evidence_dir: Path | str,
    student: str,
    rubric: Rubric,
    *,
    since: datetime | None = None,
    stored_results: Sequence[Mapping[str, Any]] | None = None,
    source: str = "",
) -> StudentGrade:
    """Grade one evidence folder: verify's checks, the rubric's items, the flags.

    What was expected is what meta.json recorded, for a hand-in and live grading alike;
    `stored_results` (a hand-in's report.json) is only compared with the evidence,
    never used for a verdict.
    """
    evidence = Evidence(evidence_dir)
    try:
        meta = read_meta(evidence)
        recorded = expected_from_meta(meta)
        evidence.commands()  # a commands.jsonl of the wrong shape: nothing says how it was taken
    except (EvidenceProblem, BadEvidence) as exc:
        return error_grade(
            student, rubric, f"evidence unusable: {exc}", source=source, evidence=str(evidence_dir)
        )
    expected = identified(evidence, recorded)
    results = evaluate(evidence_dir, expected)
    context = Context(
        evidence=evidence,
        expected=expected,
        results={r.id: r for r in results},
        student=student,
        requires=rubric.requires,
        applied=tuple(provenance.read(evidence, [n.host for n in expected.nodes])),
        start_stages=start_stages(rubric.exercise),
    )
    scores = score_items(rubric, context)
    flags = [
        *[integrity.Flag(KUBELAB_APPLIED, f"{s.id}: {s.voided}") for s in scores if s.voided],
        *[integrity.Flag(KUBELAB_APPLIED, line) for line in provenance.restores(meta)],
        *integrity.hostname_flags(evidence, student),
        *integrity.student_flags(meta, student),
        *integrity.contradiction_flags(evidence, meta),
        *integrity.spec_flags(meta, recorded),
        *integrity.stored_verdict_flags(stored_results, results),
        *integrity.stale_flags(evidence, meta, since),
    ]
    return cleaned(
        StudentGrade(
            student=student,
            exercise=rubric.exercise,
            status=GRADED,
            max_points=rubric.max_points,
            items=scores,
            total=total(scores),
            flags=flags,
            checks=results,
            source=source,
            evidence=str(evidence_dir),
            identity=cluster_identity(evidence),
        )
    )


def add_class_flags(grades: Sequence[StudentGrade]) -> None:
    """Flag students whose evidence shares a cluster (only graded ones carry an identity)."""
    shared = integrity.shared_cluster_flags({g.student: g.identity for g in grades if g.graded})
    for grade in grades:
        # Recomputed for the class as it is now: a rerun drops pairs that no longer hold.
        grade.flags = [f for f in grade.flags if f.kind != integrity.SHARED_CLUSTER]
        grade.flags += shared.get(grade.student, [])


def fmt(value: float | None) -> str:
    """A score as people write it: 7.5, 10, 6.67."""
    if value is None:
        return ""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def score_table(grade: StudentGrade, width: int | None = None) -> Table:
    """The score per rubric item, for the terminal; below 100 columns (`width`) the
    detail and hint go under the item instead of in a column of their own."""
    narrow = width is not None and width < 100
    table = Table(title=f"exercise {grade.exercise}: {grade.student}", show_lines=True)
    table.add_column("item", no_wrap=not narrow)
    table.add_column("score", justify="right", no_wrap=True)
    if not narrow:
        table.add_column("detail")

    def row(label: Text, score: Text | str, detail: Text | str) -> None:
        if not narrow:
            table.add_row(label, score, detail)
            return
        if str(detail):
            label.append("\n")
            label.append_text(Text(detail) if isinstance(detail, str) else detail)
        table.add_row(label, score)

    for item in grade.items:
        style = "green" if item.full else ("yellow" if item.score else "red")
        extra = " (extra)" if item.optional else ""
        detail = Text(item.detail)
        if item.hint:
            detail.append("\nhint: " + item.hint.replace("\n", "\nhint: "), style="cyan")
        row(
            Text(f"{item.id}{extra}\n{item.title}"),
            Text(f"{fmt(item.score)}/{fmt(item.points)}", style=style),
            detail,
        )
    if grade.graded:
        row(
            Text("total", style="bold"),
            Text(f"{fmt(grade.total)}/{fmt(grade.max_points)}", style="bold"),
            "",
        )
    else:
        # Text, not str: evidence words that look like rich markup are shown, not parsed.
        row(Text("error", style="bold red"), "", Text(grade.error))
    for flag in grade.flags:
        row(Text("flag", style="yellow"), "", Text(str(flag)))
    return table
