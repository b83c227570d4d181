"""The teacher's page (grades.html) and the students' feedback files, from templates.

Templates are files (labs/templates/). grades.html is one self-contained page: no
script, no stylesheet or font from a network, the score distribution drawn as
inline SVG, so it opens offline and can be mailed. Everything a student's evidence
put into a grade (node names, details) is HTML-escaped by the template engine.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from kubelab import REPO_ROOT
from kubelab.grade.grading import StudentGrade, fmt
from kubelab.grade.rubric import Rubric
from kubelab.verify.evidence import now

TEMPLATES = REPO_ROOT / "labs" / "templates"
GRADES_TEMPLATE = "grades.html.j2"
FEEDBACK_TEMPLATE = "feedback.md.j2"


def _env(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=autoescape,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["score"] = fmt
    return env


@dataclass(frozen=True)
class Bar:
    label: str  # the score range, "60-70"
    count: int
    x: float
    y: float
    height: float


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bar_width: float
    bars: tuple[Bar, ...]
    top: int  # the largest count: the y axis runs 0..top


def histogram(
    totals: Sequence[float], max_points: float, bins: int = 10, width: int = 600, height: int = 220
) -> Chart:
    """Bars of how many students scored in each tenth of the maximum (the last closed)."""
    step = max_points / bins if max_points > 0 else 1.0
    counts = [0] * bins
    for value in totals:
        index = min(int(value // step), bins - 1) if value >= 0 else 0
        counts[index] += 1
    top = max(counts) if any(counts) else 1
    plot_h = height - 40  # room under the bars for the range labels
    bar_w = width / bins
    bars = []
    for i, count in enumerate(counts):
        h = plot_h * count / top
        low, high = step * i, step * (i + 1)
        bars.append(Bar(f"{fmt(low)}-{fmt(high)}", count, i * bar_w, 10 + plot_h - h, h))
    return Chart(width, height, bar_w, tuple(bars), top)


def summary(grades: Sequence[StudentGrade]) -> dict[str, Any]:
    totals = [g.total for g in grades if g.graded and g.total is not None]
    return {
        "students": len(grades),
        "graded": len(totals),
        "errors": sum(1 for g in grades if not g.graded),
        "flagged": sum(1 for g in grades if g.flags),
        "mean": fmt(statistics.fmean(totals)) if totals else "",
        "median": fmt(statistics.median(totals)) if totals else "",
        "stdev": fmt(statistics.pstdev(totals)) if len(totals) > 1 else "",
        "min": fmt(min(totals)) if totals else "",
        "max": fmt(max(totals)) if totals else "",
    }


def render_grades(grades: Sequence[StudentGrade], rubric: Rubric, title: str = "") -> str:
    totals = [g.total for g in grades if g.graded and g.total is not None]
    # Extra credit can lift a total past the maximum: the chart's last bar takes it.
    chart = histogram(totals, rubric.max_points)
    return (
        _env(autoescape=True)
        .get_template(GRADES_TEMPLATE)
        .render(
            title=title or f"Exercise {rubric.exercise}: {rubric.title}",
            rubric=rubric,
            grades=grades,
            chart=chart,
            summary=summary(grades),
            generated=now(),
            ceil=math.ceil,
        )
    )


def render_feedback(grade: StudentGrade, rubric: Rubric) -> str:
    return _env(autoescape=False).get_template(FEEDBACK_TEMPLATE).render(grade=grade, rubric=rubric)


def write_grades(path: Path, grades: Sequence[StudentGrade], rubric: Rubric) -> Path:
    path.write_text(render_grades(grades, rubric), encoding="utf-8")
    return path
