"""The teacher's page (grades.html) and the students' feedback files, from templates.

Templates are files (labs/templates/). grades.html is one self-contained page: no
stylesheet, font or script from a network; the score distribution and each
student's cluster are drawn as inline SVG, so it opens offline and can be mailed.
A few lines of inline script sort and filter the gradebook; with script off the page
still reads whole. Everything a student's evidence put into a grade (node names,
details) is HTML-escaped by the template engine.

What a teacher reads first is the pass-rate table (`pass_rates`): per rubric item
and per verify check, how many graded students got it, which says what to re-teach.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2

from kubelab import REPO_ROOT
from kubelab.grade.grading import StudentGrade, fmt
from kubelab.grade.roster import EMPTY, Roster
from kubelab.grade.rubric import Rubric
from kubelab.templating import environment
from kubelab.verify import CHECK_IDS
from kubelab.verify.evidence import (
    CURL,
    NGINX_PODS,
    NODES,
    BadEvidence,
    Evidence,
    MissingEvidence,
    items,
    parse_time,
)

TEMPLATES = REPO_ROOT / "labs" / "templates"
GRADES_TEMPLATE = "grades.html.j2"
FEEDBACK_TEMPLATE = "feedback.md.j2"


@functools.cache
def _env(autoescape: bool) -> jinja2.Environment:
    env = environment(TEMPLATES, html=autoescape)
    env.filters["score"] = fmt
    env.filters["local"] = local_time
    return env


def local_time(value: str | None) -> str:
    """An ISO time from the evidence, as the teacher's clock shows it."""
    moment = parse_time(value)
    if moment is None:
        return value or ""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M %Z")


@dataclass(frozen=True)
class Rate:
    id: str
    title: str
    good: int  # full points (items) or passed (checks)
    graded: int
    optional: bool = False

    @property
    def percent(self) -> int:
        return round(100 * self.good / self.graded) if self.graded else 0


def pass_rates(grades: Sequence[StudentGrade], rubric: Rubric) -> tuple[list[Rate], list[Rate]]:
    """Per item: how many graded students got full points; per check: how many passed."""
    graded = [g for g in grades if g.graded]
    by_item = []
    for item in rubric.items:
        scores = [s for g in graded if (s := g.item(item.id)) is not None]
        by_item.append(
            Rate(item.id, item.title, sum(1 for s in scores if s.full), len(scores), item.optional)
        )
    by_check = []
    for check in CHECK_IDS:
        results = [c for g in graded for c in g.checks if c.id == check]
        if results:
            title = results[0].title
            by_check.append(Rate(check, title, sum(1 for c in results if c.passed), len(results)))
    return by_item, by_check


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


def render_grades(
    grades: Sequence[StudentGrade],
    rubric: Rubric,
    title: str = "",
    *,
    roster: Roster = EMPTY,
    arrivals: Sequence[Any] = (),
    groups: Sequence[Any] = (),
) -> str:
    totals = [g.total for g in grades if g.graded and g.total is not None]
    by_item, by_check = pass_rates(grades, rubric)
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
            generated=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            ceil=math.ceil,
            item_rates=by_item,
            check_rates=by_check,
            roster=roster,
            arrivals=arrivals,
            groups=groups,
            partners={s: [o for o in g.students if o != s] for g in groups for s in g.students},
            pictures={g.student: picture(g.topology) for g in grades if g.topology},
        )
    )


# --- the student's cluster, as a picture ---------------------------------------------


def _curl_verdicts(evidence: Evidence, check: str) -> dict[str, bool]:
    """target -> whether every recorded request to it got the welcome page."""
    verdicts: dict[str, bool] = {}
    for name in evidence.listdir(f"{CURL}/{check}"):
        if not name.endswith(".json"):
            continue
        try:
            record = evidence.json(f"{CURL}/{check}/{name}")
        except BadEvidence:
            continue
        if isinstance(record, dict) and record.get("target"):
            target = str(record["target"])
            verdicts[target] = verdicts.get(target, True) and bool(record.get("welcome_page"))
    return verdicts


def topology(evidence_dir: Path | str) -> dict[str, Any]:
    """Nodes (name, role, IP, Ready) and verify's nginx pods (name, IP, node), with what
    answered, from the evidence: the picture lab manual 003's screenshots show."""
    evidence = Evidence(evidence_dir)
    try:
        node_docs = items(evidence.json(NODES), NODES)
    except (MissingEvidence, BadEvidence):
        return {}
    try:
        pod_docs = items(evidence.json(NGINX_PODS), NGINX_PODS)
    except (MissingEvidence, BadEvidence):
        pod_docs = []
    pod_answers = _curl_verdicts(evidence, "pod-ips")
    port_answers = _curl_verdicts(evidence, "nodeport")
    nodes = []
    for node in node_docs:
        meta, status = node.get("metadata") or {}, node.get("status") or {}
        labels = meta.get("labels") or {}
        ip = next(
            (
                a.get("address")
                for a in status.get("addresses") or []
                if a.get("type") == "InternalIP"
            ),
            "",
        )
        master = any(
            k.startswith("node-role.kubernetes.io/")
            and k.rsplit("/", 1)[1] in ("control-plane", "master")
            for k in labels
        )
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        nodes.append(
            {
                "name": str(meta.get("name") or "?"),
                "role": "master" if master else "node",
                "ip": str(ip or ""),
                "ready": ready,
                "nodeport": port_answers.get(str(ip)) if ip else None,
            }
        )
    pods = []
    for pod in pod_docs:
        ip = str((pod.get("status") or {}).get("podIP") or "")
        pods.append(
            {
                "name": str((pod.get("metadata") or {}).get("name") or "?"),
                "ip": ip,
                "node": str((pod.get("spec") or {}).get("nodeName") or ""),
                "answered": pod_answers.get(ip) if ip else None,
            }
        )
    return {"nodes": nodes, "pods": pods}


@dataclass(frozen=True)
class Box:
    node: dict[str, Any]
    x: int
    pods: tuple[tuple[int, dict[str, Any]], ...]  # (y, pod)


@dataclass(frozen=True)
class Picture:
    width: int
    height: int
    boxes: tuple[Box, ...]
    elsewhere: tuple[dict[str, Any], ...]  # pods on nodes nodes.json lacks


BOX_W, BOX_GAP, HEAD_H, POD_H = 230, 20, 58, 34


def picture(topo: dict[str, Any]) -> Picture:
    """Where each node box and pod line goes in the student's SVG."""
    nodes = topo.get("nodes") or []
    pods = topo.get("pods") or []
    names = {n["name"] for n in nodes}
    boxes = []
    most = 0
    for i, node in enumerate(nodes):
        mine = [p for p in pods if p["node"] == node["name"]]
        most = max(most, len(mine))
        placed = tuple((HEAD_H + 8 + k * POD_H, p) for k, p in enumerate(mine))
        boxes.append(Box(node, 10 + i * (BOX_W + BOX_GAP), placed))
    width = 20 + max(1, len(nodes)) * (BOX_W + BOX_GAP)
    height = HEAD_H + 24 + max(1, most) * POD_H + 10
    return Picture(width, height, tuple(boxes), tuple(p for p in pods if p["node"] not in names))


def render_feedback(grade: StudentGrade, rubric: Rubric) -> str:
    return _env(autoescape=False).get_template(FEEDBACK_TEMPLATE).render(grade=grade, rubric=rubric)
