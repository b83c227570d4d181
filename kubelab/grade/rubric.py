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

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kubelab import REPO_ROOT
from kubelab.config import catalog, validation_problems
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


# A rubric document is validated the way the lab config is (kubelab.config): pydantic
# models that forbid unknown keys, with every problem reported at once, one line each.
_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)
_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,40}$"


class Requires(BaseModel):
    """The least a cluster must have, whatever the hand-in's own lab config lists."""

    model_config = _STRICT
    masters: Annotated[int, Field(ge=0)] = 1
    nodes: Annotated[int, Field(ge=0)] = 1  # configured nodes in total, masters included


class Item(BaseModel):
    model_config = _STRICT
    id: str = Field(pattern=_ID_PATTERN)
    title: str = ""
    points: float
    checks: tuple[str, ...] = ()
    credit: str = "checks"
    optional: bool = False  # extra credit: in the total, not in the maximum
    hint: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    # Stages whose application by kubelab does this item's work: the item is then void.
    voided_by: tuple[str, ...] = ()

    @field_validator("points", mode="before")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError("points must be a positive number")
        return float(value)

    @field_validator("checks", "voided_by", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        # YAML writes lists; strict mode would otherwise want a tuple.
        return tuple(value) if isinstance(value, list) else value

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [c for c in value if c not in ALL_CHECK_IDS]
        if unknown:
            raise ValueError(f"no verify check {unknown[0]!r} (known: {', '.join(ALL_CHECK_IDS)})")
        return value

    @field_validator("credit")
    @classmethod
    def _known_credit(cls, value: str) -> str:
        if value not in EVALUATORS:
            raise ValueError(
                f"credit {value!r} is unknown (known: {', '.join(sorted(EVALUATORS))})"
            )
        return value

    @field_validator("voided_by")
    @classmethod
    def _known_stages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(STAGE_NAMES))
        if unknown:
            raise ValueError(
                f"voided_by names no stage: {', '.join(unknown)} (stages: {', '.join(STAGE_NAMES)})"
            )
        return value

    @field_validator("hint")
    @classmethod
    def _one_line(cls, value: str) -> str:
        return " ".join(value.split())

    @model_validator(mode="after")
    def _complete(self) -> Item:
        if self.credit == "checks" and not self.checks:
            raise ValueError("credit 'checks' needs at least one check")
        if not self.title:
            object.__setattr__(self, "title", self.id)  # frozen: set once, while validating
        return self


class Rubric(BaseModel):
    model_config = _STRICT
    exercise: int = Field(ge=0)
    title: str = Field(min_length=1)
    items: tuple[Item, ...] = Field(min_length=1)
    requires: Requires = Requires()
    allow_solve: bool = False  # a teacher's demo: work `--solve` applied still counts
    source: Annotated[str, Field(exclude=True)] = ""  # the file it came from, not a key of it

    @field_validator("items", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("title")
    @classmethod
    def _stripped(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("title is required")
        return value.strip()

    @property
    def max_points(self) -> float:
        return round(sum(i.points for i in self.items if not i.optional), 2)

    @property
    def item_ids(self) -> tuple[str, ...]:
        return tuple(i.id for i in self.items)


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
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: expected a mapping with exercise, title and items"])
    problems = [f"{source}: item {i}: id used twice" for i in _repeated_ids(data.get("items"))]
    try:
        rubric = Rubric.model_validate({**data, "source": source})
    except ValidationError as exc:
        problems += validation_problems(exc, source)
    if problems:
        raise ConfigError(problems)
    return rubric


def _repeated_ids(items: Any) -> list[str]:
    """Item ids given twice, read from the document itself (so that a wrong field of
    another item, which stops the model, does not hide them)."""
    seen: set[Any] = set()
    repeated = []
    for raw in items if isinstance(items, list) else ():
        item_id = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(item_id, str) and item_id in seen:
            repeated.append(item_id)
        seen.add(item_id)
    return repeated


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
