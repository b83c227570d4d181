"""Gradescope's autograder format: one results.json per student.

The shape is Gradescope's (gradescope-autograders.readthedocs.io, "Autograder
Specifications"): a top-level score and output, and a tests[] list with name,
number, score, max_score, status and output per test. One test per rubric item.
Extra-credit items carry a max_score of 0, so their points add to the score without
raising the maximum. Integrity flags stay out: they are for the teacher to review,
and may name other students.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubelab.grade.grading import StudentGrade, fmt


def results_json(grade: StudentGrade) -> dict[str, Any]:
    if not grade.graded:
        return {
            "score": 0.0,
            "output": f"Not graded: {grade.error}",
            "tests": [],
            "extra_data": {"status": grade.status},
        }
    tests = []
    for number, item in enumerate(grade.items, start=1):
        lines = [item.detail]
        if item.hint:
            lines.append("")
            lines += [f"Hint: {h}" for h in item.hint.splitlines()]
        tests.append(
            {
                "name": item.title + (" (extra credit)" if item.optional else ""),
                "number": str(number),
                "score": item.score,
                "max_score": 0.0 if item.optional else item.points,
                "status": "passed" if item.full else "failed",
                "output": "\n".join(lines),
                "tags": [item.id, *item.checks],
                "visibility": "visible",
            }
        )
    failed = [c.id for c in grade.failed_checks]
    output = f"Exercise {grade.exercise}: {fmt(grade.total)}/{fmt(grade.max_points)}"
    if failed:
        output += f"; failed checks: {', '.join(failed)}"
    return {
        "score": grade.total,
        "output": output,
        "tests": tests,
        "extra_data": {"student": grade.student, "exercise": grade.exercise},
    }


def write_results(grade: StudentGrade, out_dir: Path) -> Path:
    """out_dir/<student>/results.json, as Gradescope reads /autograder/results/results.json."""
    from kubelab.grade.gradebook import safe_file_name

    path = out_dir / safe_file_name(grade.student) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results_json(grade), indent=2) + "\n", encoding="utf-8")
    return path
