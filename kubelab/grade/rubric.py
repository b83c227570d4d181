"""Rubrics: what an exercise is worth, as data (labs/rubrics/<exercise>.yaml), and scoring.

An item has points and rests on verify checks. It is scored one of three ways:

    credit: checks       full points when every bound check passed, else nothing
    credit: parts        points x the fraction of the checks' parts that are ok (per
                         node, per pod, per request: what the checks looked at)
    credit: <evaluator>  points x the fraction an evaluator measures in the evidence

Provenance: an item names the stages that would do its work (`voided_by`). When the
evidence shows kubelab applied one of them (`invoke up`, `--solve`) the item scores 0
with the stage named; the exercise's own start stages never void, and a rubric with
`allow_solve: true` (a demo) lets `--solve`'s work count.

Evaluators read the evidence folder through verify's `Evidence` loader, never a
stored verdict, so a hand-in is scored from what the cluster printed. The ones here
cover what the lab manual grades and verify does not check on its own: hostnames
that carry the student ID, nginx on the master as well as the nodes, a monitoring UI.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubelab import REPO_ROOT
from kubelab.config import catalog
from kubelab.errors import ConfigError, KubelabError
from kubelab.verify import CheckResult, Evidence, Expected
from kubelab.verify.checks import ALL_CHECK_IDS, Part, curl_problem, phases_of, pod_ready
from kubelab.verify.evidence import (
    NGINX_PODS,
    NODES,
    PODS,
    SERVICE,
    BadEvidence,
    MissingEvidence,
    curl_record_path,
    http_url,
    items,
)
from kubelab.verify.provenance import SOLVE, Applied

RUBRICS_DIR = REPO_ROOT / "labs" / "rubrics"
STAGE_NAMES = tuple(str(s["name"]) for s in catalog()["stages"])


# --- the rubric as data -----------------------------------------------------------


@dataclass(frozen=True)
class Requires:
    """The least a cluster must have, whatever the hand-in's own lab config lists."""

    masters: int = 1
    nodes: int = 1  # configured nodes in total, masters included


@dataclass(frozen=True)
class Item:
    id: str
    title: str
    points: float
    checks: tuple[str, ...] = ()
    credit: str = "checks"
    optional: bool = False  # extra credit: in the total, not in the maximum
    hint: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    # Stages whose application by kubelab does this item's work: the item is then void.
    voided_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rubric:
    exercise: int
    title: str
    items: tuple[Item, ...]
    requires: Requires = field(default_factory=Requires)
    source: str = ""
    allow_solve: bool = False  # a teacher's demo: work `--solve` applied still counts

    @property
    def max_points(self) -> float:
        return round(sum(i.points for i in self.items if not i.optional), 2)

    @property
    def item_ids(self) -> tuple[str, ...]:
        return tuple(i.id for i in self.items)


_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")
_ITEM_KEYS = {
    "id",
    "title",
    "points",
    "checks",
    "credit",
    "optional",
    "hint",
    "params",
    "voided_by",
}


def rubric_path(exercise: int | str) -> Path:
    return RUBRICS_DIR / f"{exercise}.yaml"


def load_rubric(exercise: int | str | None = None, path: Path | str | None = None) -> Rubric:
    """The rubric of `exercise` (labs/rubrics/N.yaml), or the file at `path`."""
    where = Path(path) if path else rubric_path(exercise if exercise is not None else "")
    if not where.is_file():
        known = sorted(p.stem for p in RUBRICS_DIR.glob("*.yaml"))
        raise KubelabError(
            f"no rubric for exercise {exercise}: {where} does not exist",
            hint=f"rubrics exist for exercise {', '.join(known) or 'none'} (labs/rubrics/)",
        )
    try:
        data = yaml.safe_load(where.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError([f"{where}: not valid YAML ({exc})"]) from None
    return parse_rubric(data, source=str(where))


def parse_rubric(data: Any, source: str = "rubric") -> Rubric:
    """Validate a rubric document fully; report every problem at once."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: expected a mapping with exercise, title and items"])
    exercise = data.get("exercise")
    if isinstance(exercise, bool) or not isinstance(exercise, int) or exercise < 0:
        problems.append(f"{source}: exercise must be a whole number, not {exercise!r}")
    title = data.get("title")
    if not isinstance(title, str) or not title.strip():
        problems.append(f"{source}: title is required")
    unknown = set(data) - {"exercise", "title", "requires", "items", "allow_solve"}
    allow_solve = data.get("allow_solve", False)
    if not isinstance(allow_solve, bool):
        problems.append(f"{source}: allow_solve must be true or false")
    if unknown:
        problems.append(f"{source}: unknown keys {', '.join(sorted(unknown))}")
    requires = Requires()
    raw_requires = data.get("requires") or {}
    if not isinstance(raw_requires, dict) or set(raw_requires) - {"masters", "nodes"}:
        problems.append(f"{source}: requires takes only masters and nodes (whole numbers)")
    else:
        values = {**asdict(requires), **raw_requires}
        if not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values.values()
        ):
            problems.append(f"{source}: requires.masters and requires.nodes must be >= 0")
        else:
            requires = Requires(**values)
    parsed: list[Item] = []
    raw_items = data.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        problems.append(f"{source}: items must be a non-empty list")
        raw_items = []
    seen: set[str] = set()
    for n, raw in enumerate(raw_items):
        where = f"{source}: items[{n}]"
        if not isinstance(raw, dict):
            problems.append(f"{where}: expected a mapping")
            continue
        item_id = raw.get("id")
        if not isinstance(item_id, str) or not _ID.match(item_id):
            problems.append(f"{where}: id must be lower-case letters, digits and '-'")
            continue
        where = f"{source}: item {item_id}"
        if item_id in seen:
            problems.append(f"{where}: id used twice")
        seen.add(item_id)
        if set(raw) - _ITEM_KEYS:
            problems.append(f"{where}: unknown keys {', '.join(sorted(set(raw) - _ITEM_KEYS))}")
        points = raw.get("points")
        if isinstance(points, bool) or not isinstance(points, int | float) or points <= 0:
            problems.append(f"{where}: points must be a positive number, not {points!r}")
            points = 0
        checks = raw.get("checks") or []
        if not isinstance(checks, list) or not all(isinstance(c, str) for c in checks):
            problems.append(f"{where}: checks must be a list of check ids")
            checks = []
        for check in checks:
            if check not in ALL_CHECK_IDS:
                problems.append(
                    f"{where}: no verify check {check!r} (known: {', '.join(ALL_CHECK_IDS)})"
                )
        credit = raw.get("credit", "checks")
        if credit not in EVALUATORS:
            problems.append(
                f"{where}: credit {credit!r} is unknown (known: {', '.join(sorted(EVALUATORS))})"
            )
        elif credit == "checks" and not checks:
            problems.append(f"{where}: credit 'checks' needs at least one check")
        params = raw.get("params") or {}
        if not isinstance(params, dict):
            problems.append(f"{where}: params must be a mapping")
            params = {}
        voided_by = raw.get("voided_by") or []
        if not isinstance(voided_by, list) or not all(isinstance(v, str) for v in voided_by):
            problems.append(f"{where}: voided_by must be a list of stage names")
            voided_by = []
        unknown_stages = set(voided_by) - set(STAGE_NAMES)
        if unknown_stages:
            problems.append(
                f"{where}: voided_by names no stage: {', '.join(sorted(unknown_stages))} "
                f"(stages: {', '.join(STAGE_NAMES)})"
            )
        parsed.append(
            Item(
                id=item_id,
                title=str(raw.get("title") or item_id),
                points=float(points),
                checks=tuple(checks),
                credit=str(credit),
                optional=bool(raw.get("optional", False)),
                hint=" ".join(str(raw.get("hint") or "").split()),
                params=params,
                voided_by=tuple(voided_by),
            )
        )
    if problems:
        raise ConfigError(problems)
    assert isinstance(exercise, int)  # checked above
    return Rubric(
        exercise, str(title).strip(), tuple(parsed), requires, source, allow_solve is True
    )


# --- scores -----------------------------------------------------------------------


@dataclass(frozen=True)
class Credit:
    fraction: float  # 0..1 of the item's points
    detail: str


@dataclass(frozen=True)
class ItemScore:
    id: str
    title: str
    points: float
    score: float
    detail: str
    checks: tuple[str, ...] = ()
    hint: str = ""  # what to do, when short of full points
    optional: bool = False
    voided: str = ""  # why kubelab's own work voids the item: the stage and what applied it

    @property
    def full(self) -> bool:
        return self.score >= self.points

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["checks"] = list(self.checks)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ItemScore:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        fields["checks"] = tuple(fields.get("checks") or ())
        return cls(**fields)


@dataclass(frozen=True)
class Context:
    """What an evaluator may look at: the evidence and what was expected of it."""

    evidence: Evidence
    expected: Expected
    results: Mapping[str, CheckResult]
    student: str
    requires: Requires
    # What kubelab applied on the VMs (verify.provenance.read), and the stages of the
    # exercise's start state, which never void.
    applied: tuple[Applied, ...] = ()
    start_stages: tuple[str, ...] = ()

    @property
    def slots(self) -> int:
        """How many nodes the cluster must have: the configured ones, at least the rubric's."""
        return max(len(self.expected.nodes), self.requires.nodes)


Evaluator = Callable[[Context, Item], Credit]


def points(value: float) -> float:
    """Scores are kept to hundredths of a point, rounded once, here."""
    return round(value + 0.0, 2)


def rubric_phases(rubric: Rubric) -> tuple[str, ...]:
    """What verify must collect for this rubric: the phases of the checks its items use,
    plus the cluster's state every evaluator reads."""
    return phases_of(c for item in rubric.items for c in item.checks)


KUBELAB_APPLIED = "kubelab-applied"  # the flag beside a grade that kubelab's own work voids


def start_stages(exercise: int) -> tuple[str, ...]:
    """The stages of the exercise's start state (labs/exercises/N.yaml); none if no file."""
    from kubelab.labs import exercise_start_stages

    return exercise_start_stages(exercise)


def void_reason(rubric: Rubric, item: Item, context: Context) -> str:
    """Why kubelab's own work voids `item`, or "": the first stage it applied that does it."""
    for applied in context.applied:
        if applied.stage not in item.voided_by or applied.stage in context.start_stages:
            continue
        if applied.applied_by == SOLVE and rubric.allow_solve:
            continue
        return f"kubelab applied stage {applied}"
    return ""


def score_items(rubric: Rubric, context: Context) -> list[ItemScore]:
    scores = []
    for item in rubric.items:
        voided = void_reason(rubric, item, context)
        if voided:
            scores.append(
                ItemScore(
                    id=item.id,
                    title=item.title,
                    points=item.points,
                    score=0.0,
                    detail=f"void: {voided}",
                    checks=item.checks,
                    hint="the work must be your own: start over with "
                    f"`invoke lab --exercise {rubric.exercise} --reset`",
                    optional=item.optional,
                    voided=voided,
                )
            )
            continue
        try:
            credit = EVALUATORS[item.credit](context, item)
        except (MissingEvidence, BadEvidence) as exc:
            credit = Credit(0.0, str(exc))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            # Evidence not shaped as kubectl prints it (edited, truncated): no credit.
            credit = Credit(0.0, f"unreadable evidence: {type(exc).__name__}: {exc}")
        fraction = min(max(credit.fraction, 0.0), 1.0)
        scores.append(
            ItemScore(
                id=item.id,
                title=item.title,
                points=item.points,
                score=points(item.points * fraction),
                detail=credit.detail,
                checks=item.checks,
                hint="" if fraction >= 1 else _hint(item, context),
                optional=item.optional,
            )
        )
    return scores


def total(scores: list[ItemScore]) -> float:
    return points(sum(s.score for s in scores))


def _hint(item: Item, context: Context) -> str:
    """The item's own hint, then its failed checks' hints; the root cause first: with
    the API server down, its hint replaces every "no evidence" one it explains."""
    api = context.results.get("api")
    if (
        api is not None
        and not api.passed
        and any(
            (r := context.results.get(c)) is not None
            and not r.passed
            and r.detail.startswith(("no evidence", "not run"))
            for c in item.checks
        )
    ):
        return api.hint
    texts = [item.hint] if item.hint else []
    for check in item.checks:
        if check not in context.results:
            texts.append(
                f"this evidence does not hold the {check} check: run `invoke verify` with "
                "this exercise's --exercise number"
            )
        result = context.results.get(check)
        if result is not None and not result.passed and result.hint:
            texts += [t for t in result.hint.splitlines() if t not in texts]
    return "\n".join(texts)


# --- evaluators -------------------------------------------------------------------


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", "?"))


def _ratio(good: int, slots: int) -> float:
    return good / slots if slots else 0.0


def credit_checks(context: Context, item: Item) -> Credit:
    failed = []
    for check in item.checks:
        result = context.results.get(check)
        if result is None:
            failed.append(f"{check}: not run")
        elif not result.passed:
            failed.append(f"{check}: {result.detail}")
    if failed:
        return Credit(0.0, "; ".join(failed))
    details = [context.results[c].detail for c in item.checks]
    return Credit(1.0, "; ".join(details))


def credit_parts(context: Context, item: Item) -> Credit:
    """The fraction of the checks' parts (nodes, pods, requests) that are ok.

    `params: {per: node}` counts the parts against the exercise's node slots, so a lab
    configured with fewer nodes than the rubric requires scores the missing ones as 0.
    """
    parts: list[Part] = []
    for check in item.checks:
        result = context.results.get(check)
        if result is None:
            parts.append(Part(check, False, "not run"))
        elif result.parts:
            parts += result.parts
        else:  # a check that could not look at anything says why in its detail
            parts.append(Part(check, result.passed, result.detail))
    slots = len(parts)
    if item.params.get("per") == "node":
        slots = max(slots, context.slots * len(item.checks))
    good = sum(p.ok for p in parts)
    failing = [str(p) for p in parts if not p.ok]
    detail = f"{good}/{slots} ok"
    if slots > len(parts):
        detail += f" ({slots - len(parts)} of the exercise's nodes not in the lab)"
    return Credit(_ratio(good, slots), "; ".join([detail, *failing]))


def _node_ready(node: Mapping[str, Any]) -> tuple[bool, str]:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            if condition.get("status") == "True":
                return True, ""
            why = condition.get("reason") or condition.get("status")
            return False, f"NotReady ({why})"
    return False, "no Ready condition"


def nodes_ready(context: Context, item: Item) -> Credit:
    """The fraction of the cluster's node slots that hold a registered, Ready node."""
    by_name = {_name(n): n for n in items(context.evidence.json(NODES), NODES)}
    ready, problems = [], []
    for want in context.expected.nodes:
        node = by_name.get(want.k8s_name)
        if node is None:
            problems.append(f"{want.k8s_name} not registered")
            continue
        ok, why = _node_ready(node)
        if ok:
            ready.append(want.k8s_name)
        else:
            problems.append(f"{want.k8s_name} {why}")
    slots = context.slots
    missing_nodes = slots - len(context.expected.nodes)
    if missing_nodes > 0:
        problems.append(
            f"the exercise needs {slots} nodes, the lab configures {len(context.expected.nodes)}"
        )
    masters = len(context.expected.masters)
    good = len(ready)
    if masters < context.requires.masters:
        problems.append(
            f"the exercise needs {context.requires.masters} master(s), the lab configures {masters}"
        )
        good = min(good, slots - (context.requires.masters - masters))
    detail = f"{good}/{slots} nodes Ready" + (f" ({', '.join(ready)})" if ready else "")
    return Credit(_ratio(good, slots), "; ".join([detail, *problems]))


def hostnames_carry_student_id(context: Context, item: Item) -> Credit:
    """The fraction of registered node names (nodes.json) that carry the student ID."""
    student = context.student.lower()
    names = [_name(n) for n in items(context.evidence.json(NODES), NODES)]
    if not names:
        return Credit(0.0, "no node registered")
    if not student:
        return Credit(0.0, "no student ID to look for")
    carrying = [n for n in names if student in n.lower()]
    without = [n for n in names if n not in carrying]
    slots = max(len(names), context.requires.nodes)
    detail = f"{len(carrying)}/{slots} node names carry {context.student}"
    if without:
        detail += f"; without it: {', '.join(without)}"
    if len(names) < slots:
        detail += f"; only {len(names)} of {slots} nodes registered"
    return Credit(_ratio(len(carrying), slots), detail)


def nginx_on_every_node(context: Context, item: Item) -> Credit:
    """The fraction of configured nodes, master included, that run a ready nginx pod.

    Unlike verify's nginx-rollout check, a tainted master is not excused: the manual
    wants pods on the master and on the node.
    """
    pods = items(context.evidence.json(NGINX_PODS), NGINX_PODS)
    on = {(p.get("spec") or {}).get("nodeName") for p in pods if pod_ready(p)}
    running = [n.k8s_name for n in context.expected.nodes if n.k8s_name in on]
    without = [n.k8s_name for n in context.expected.nodes if n.k8s_name not in on]
    slots = context.slots
    detail = f"ready nginx pods on {len(running)}/{slots} nodes"
    if without:
        detail += f"; none on {', '.join(without)}"
    return Credit(_ratio(len(running), slots), detail)


def pod_ips_answering(context: Context, item: Item) -> Credit:
    """The fraction of nginx pod IPs that gave the welcome page to every node."""
    pods = items(context.evidence.json(NGINX_PODS), NGINX_PODS)
    targets = sorted(
        {
            str(p["status"]["podIP"]): _name(p)
            for p in pods
            if (p.get("status") or {}).get("podIP")
        }.items()
    )
    if not targets:
        return Credit(0.0, "no nginx pod has an IP to test")
    answering, problems = 0, []
    for ip, pod in targets:
        failed = []
        for source in context.expected.nodes:
            why = curl_problem(context.evidence, "pod-ips", source.name, ip, http_url(ip, 80))
            if why:
                failed.append(f"{source.name} [{why}]")
        if failed:
            problems.append(f"{ip} ({pod}) failed from {', '.join(failed)}")
        else:
            answering += 1
    detail = f"{answering}/{len(targets)} pod IPs answered from every node"
    return Credit(_ratio(answering, len(targets)), "; ".join([detail, *problems]))


def nodeport_answering(context: Context, item: Item) -> Credit:
    """The fraction of node slots whose private IP answered on the NodePort."""
    service = context.evidence.json(SERVICE)
    ports = (service.get("spec") or {}).get("ports") or []
    if not ports or not ports[0].get("nodePort"):
        raise BadEvidence(SERVICE, "the Service has no nodePort")
    node_port = int(ports[0]["nodePort"])
    recorded = context.evidence.listdir("curl/nodeport")
    answering, problems = 0, []
    for node in context.expected.nodes:
        target = node.private_ip
        suffix = curl_record_path("nodeport", "x", target).rsplit("__", 1)[1]
        sources = [n.split("__", 1)[0] for n in recorded if n.endswith(suffix) and "__" in n]
        if not sources:
            problems.append(
                f"{node.name}: no evidence: {curl_record_path('nodeport', '*', target)}"
            )
            continue
        failed = []
        for source in sources:
            why = curl_problem(
                context.evidence, "nodeport", source, target, http_url(target, node_port)
            )
            if why:
                failed.append(f"{source} [{why}]")
        if failed:
            problems.append(f"{target}:{node_port} ({node.name}) failed from {', '.join(failed)}")
        else:
            answering += 1
    slots = context.slots
    detail = f"NodePort {node_port} answered on {answering}/{slots} nodes"
    return Credit(_ratio(answering, slots), "; ".join([detail, *problems]))


_APP_LABELS = ("app", "k8s-app", "app.kubernetes.io/name")


def monitoring_ui(context: Context, item: Item) -> Credit:
    """Full credit when a ready pod of one of the listed monitoring apps runs (pods.json)."""
    apps: Mapping[str, list[str]] = item.params.get("apps") or {}
    pods = items(context.evidence.json(PODS), PODS)
    found: dict[str, list[str]] = {}
    for pod in pods:
        name = _name(pod)
        labels = (pod.get("metadata") or {}).get("labels") or {}
        values = {str(labels.get(k)) for k in _APP_LABELS if labels.get(k)}
        for app, prefixes in apps.items():
            if any(name.startswith(f"{p}-") or p in values for p in prefixes):
                state = "ready" if pod_ready(pod) else "not ready"
                found.setdefault(app, []).append(f"{name} ({state})")
                if pod_ready(pod):
                    namespace = (pod.get("metadata") or {}).get("namespace")
                    return Credit(1.0, f"{app} runs: {namespace}/{name} is ready")
    if found:
        seen = "; ".join(f"{app}: {', '.join(p)}" for app, p in found.items())
        return Credit(0.0, f"no monitoring pod is ready ({seen})")
    return Credit(0.0, f"none of {', '.join(apps)} runs in the cluster")


EVALUATORS: dict[str, Evaluator] = {
    "checks": credit_checks,
    "parts": credit_parts,
    "nodes_ready": nodes_ready,
    "hostnames_carry_student_id": hostnames_carry_student_id,
    "nginx_on_every_node": nginx_on_every_node,
    "pod_ips_answering": pod_ips_answering,
    "nodeport_answering": nodeport_answering,
    "monitoring_ui": monitoring_ui,
}
