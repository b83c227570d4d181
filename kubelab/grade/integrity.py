"""Integrity flags: what a teacher should look at, listed beside the grade, never scored.

Per hand-in: node names without the submitter's ID, evidence that contradicts itself
(pods on nodes nodes.json lacks, a curl verdict without the output it was drawn from,
a file commands.jsonl says was saved but is not there, a stored verdict the evidence
does not bear out, a meta.json whose `expected` is not its `spec`'s projection),
evidence older than --since. Across the class: two students
whose evidence comes from one cluster (the same kube-system namespace UID, or a node
with the same boot ID; machine IDs alone are not enough, cloned VMs share them).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

from kubelab import safeio
from kubelab.plan import LabSpec
from kubelab.verify import CheckResult, Evidence, Expected, cluster_identity
from kubelab.verify.evidence import (
    COMMANDS,
    CURL,
    ENDPOINTS,
    NGINX_PODS,
    NODES,
    PODS,
    BadEvidence,
    MissingEvidence,
    is_welcome_page,
    items,
    parse_curl_stdout,
    parse_time,
)

SHARED_CLUSTER = "shared-cluster"
HOSTNAME = "hostname"
CONTRADICTION = "contradiction"
STALE = "stale"
STUDENT_MISMATCH = "student-mismatch"
STORED_VERDICT = "stored-verdict"
DUPLICATE = "duplicate"
ROSTER = "roster"
HOST_KEY = "host-key"


@dataclass(frozen=True)
class Flag:
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Flag:
        return cls(str(data.get("kind", "")), str(data.get("detail", "")))


def _names(doc: Any, rel: str) -> list[str]:
    return [str(_at(n, "metadata", "name")) for n in items(doc, rel)]


def _at(doc: Any, *keys: str) -> Any:
    """doc[k1][k2]..., or None where the evidence is not shaped so (never an exception)."""
    for key in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def _brief(values: Iterable[str], limit: int = 5) -> str:
    values = list(values)
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def hostname_flags(evidence: Evidence, student: str) -> list[Flag]:
    try:
        names = _names(evidence.json(NODES), NODES)
    except (MissingEvidence, BadEvidence):
        return []
    without = [n for n in names if student.lower() not in n.lower()]
    if not without:
        return []
    return [Flag(HOSTNAME, f"node names without {student}: {_brief(without)}")]


def contradiction_flags(evidence: Evidence, meta: Mapping[str, Any] | None) -> list[Flag]:
    flags: list[Flag] = []
    try:
        nodes = set(_names(evidence.json(NODES), NODES))
    except (MissingEvidence, BadEvidence):
        nodes = None
    if nodes is not None:
        for rel in (PODS, NGINX_PODS):
            try:
                pods = items(evidence.json(rel), rel)
            except (MissingEvidence, BadEvidence):
                continue
            stray = sorted(
                {
                    f"{_at(p, 'metadata', 'name')} on {node}"
                    for p in pods
                    if isinstance(node := _at(p, "spec", "nodeName"), str)
                    and node
                    and node not in nodes
                }
            )
            if stray:
                flags.append(
                    Flag(CONTRADICTION, f"{rel} has pods on nodes {NODES} lacks: {_brief(stray)}")
                )
    flags += _curl_flags(evidence)
    flags += _command_flags(evidence)
    flags += binding_flags(evidence)
    recorded = (meta or {}).get("cluster_identity")
    if isinstance(recorded, dict) and _identity_keys(recorded) != _identity_keys(
        cluster_identity(evidence)
    ):
        flags.append(
            Flag(
                CONTRADICTION,
                "meta.json's cluster identity differs from the one in nodes.json and "
                "kube-system-namespace.json",
            )
        )
    return flags


def binding_flags(evidence: Evidence) -> list[Flag]:
    """Facts only the cluster's API produces, checked against each other.

    Each of verify's nginx pods has its node's InternalIP as hostIP (nginx/pods.json
    against nodes.json), and the Service's endpoints name exactly those pods, by UID
    and IP.
    Evidence edited by hand, or pieced together from two clusters, must keep all of
    these consistent; honest evidence always does.
    """
    try:
        nodes = items(evidence.json(NODES), NODES)
    except (MissingEvidence, BadEvidence):
        return []
    internal = {}
    for node in nodes:
        addresses = _at(node, "status", "addresses")
        for address in addresses if isinstance(addresses, list) else []:
            if _at(address, "type") == "InternalIP":
                internal[str(_at(node, "metadata", "name"))] = _at(address, "address")
    misplaced: list[str] = []
    nginx: dict[str, Any] = {}
    try:
        pods = items(evidence.json(NGINX_PODS), NGINX_PODS)
    except (MissingEvidence, BadEvidence):
        pods = []
    for pod in pods:
        node, host_ip = _at(pod, "spec", "nodeName"), _at(pod, "status", "hostIP")
        if isinstance(node, str) and node in internal and host_ip and host_ip != internal[node]:
            misplaced.append(f"{_at(pod, 'metadata', 'name')} ({host_ip} on {node})")
        if isinstance(uid := _at(pod, "metadata", "uid"), str):
            nginx[uid] = _at(pod, "status", "podIP")
    flags = []
    if misplaced:
        flags.append(
            Flag(
                CONTRADICTION,
                f"pods whose hostIP is not their node's InternalIP: {_brief(sorted(misplaced))}",
            )
        )
    try:
        endpoints = evidence.json(ENDPOINTS)
    except (MissingEvidence, BadEvidence):
        return flags
    subsets = _at(endpoints, "subsets")
    strangers = []
    for subset in subsets if isinstance(subsets, list) else []:
        for key in ("addresses", "notReadyAddresses"):
            entries = _at(subset, key)
            for entry in entries if isinstance(entries, list) else []:
                uid, ip = _at(entry, "targetRef", "uid"), _at(entry, "ip")
                if nginx and (uid not in nginx or nginx[uid] != ip):
                    strangers.append(str(ip))
    if strangers:
        flags.append(
            Flag(
                CONTRADICTION,
                f"{ENDPOINTS} names pods that {NGINX_PODS} lacks (by UID and IP): "
                f"{_brief(strangers)}",
            )
        )
    return flags


def _curl_flags(evidence: Evidence) -> list[Flag]:
    """Every curl verdict must come with the output it was drawn from, and agree with it."""
    orphans, disagree = [], []
    for check in evidence.listdir(CURL):
        for name in evidence.listdir(f"{CURL}/{check}"):
            if not name.endswith(".json"):
                continue
            rel = f"{CURL}/{check}/{name}"
            try:
                record = evidence.json(rel)
            except BadEvidence:
                disagree.append(rel)
                continue
            if not isinstance(record, dict):
                disagree.append(rel)
                continue
            if record.get("rc") is None:
                continue  # the request never ran (transport error): nothing to compare
            out = record.get("stdout") or rel.removesuffix(".json") + ".out"
            if not isinstance(out, str) or not evidence.has(out):
                orphans.append(rel)
                continue
            try:
                body, status = parse_curl_stdout(evidence.text(out))
            except (MissingEvidence, BadEvidence):
                orphans.append(rel)
                continue
            if (
                hashlib.sha256(body).hexdigest() != record.get("body_sha256")
                or status != record.get("http_status")
                or is_welcome_page(body) != record.get("welcome_page")
            ):
                disagree.append(rel)
    flags = []
    if orphans:
        flags.append(
            Flag(CONTRADICTION, f"curl verdicts without their curl output: {_brief(orphans)}")
        )
    if disagree:
        flags.append(
            Flag(
                CONTRADICTION, f"curl verdicts that disagree with their output: {_brief(disagree)}"
            )
        )
    return flags


def _command_flags(evidence: Evidence) -> list[Flag]:
    """A file commands.jsonl says a successful command saved must be in the folder."""
    if not evidence.has(COMMANDS):
        return [Flag(CONTRADICTION, f"no {COMMANDS}: nothing says how the evidence was taken")]
    try:
        commands = evidence.commands()
    except BadEvidence as exc:
        return [Flag(CONTRADICTION, str(exc))]
    gone = [
        str(c["saves"])
        for c in commands
        if c.get("saves")
        and c.get("rc") == 0
        and not c.get("error")
        and not evidence.has(str(c["saves"]))
    ]
    if gone:
        return [Flag(CONTRADICTION, f"{COMMANDS} lists output that is missing: {_brief(gone)}")]
    return []


def stale_flags(
    evidence: Evidence, meta: Mapping[str, Any] | None, since: datetime | None
) -> list[Flag]:
    if since is None:
        return []
    times = [parse_time((meta or {}).get("started")), parse_time((meta or {}).get("finished"))]
    # A commands.jsonl that cannot be read leaves the times meta.json gives.
    with contextlib.suppress(BadEvidence):
        times += [parse_time(c.get("started")) for c in evidence.commands()]
    known = [t for t in times if t is not None]
    if not known:
        return [
            Flag(
                STALE, f"the evidence carries no time, so it may be older than {since.isoformat()}"
            )
        ]
    earliest = min(known)
    if earliest < since:
        return [
            Flag(
                STALE,
                f"evidence taken {earliest.isoformat(timespec='seconds')}, "
                f"before {since.isoformat(timespec='seconds')}",
            )
        ]
    return []


def spec_flags(meta: Mapping[str, Any], expected: Expected) -> list[Flag]:
    """meta.json's `expected` is the projection of its `spec` (Expected.from_spec) for the
    run's own choices (phases, --dns, language, stages, deadlines); one that is not was
    edited after verify wrote it. Evidence from before the spec was kept has none."""
    raw = meta.get("spec")
    if raw is None:
        return []
    try:
        spec = LabSpec.from_dict(raw)
    except ValueError as exc:
        return [Flag(CONTRADICTION, f"meta.json's spec is unusable ({safeio.shown(exc, 120)})")]
    projected = Expected.from_spec(
        spec,
        dns=expected.dns,
        phases=expected.phases,
        language=expected.language,
        stages=expected.stages,
    )
    differ = [
        f.name
        for f in fields(Expected)
        if f.name != "deadlines" and getattr(projected, f.name) != getattr(expected, f.name)
    ]
    if differ:
        return [
            Flag(CONTRADICTION, f"meta.json's expected differs from its spec: {', '.join(differ)}")
        ]
    return []


def student_flags(meta: Mapping[str, Any] | None, student: str) -> list[Flag]:
    claimed = (meta or {}).get("student_id")
    if claimed and str(claimed).lower() != student.lower():
        return [Flag(STUDENT_MISMATCH, f"handed in as {student}, the evidence says {claimed}")]
    return []


def stored_verdict_flags(
    stored: Sequence[Mapping[str, Any]] | None, results: Sequence[CheckResult]
) -> list[Flag]:
    """A report.json whose verdicts the evidence does not bear out (edited, or stale)."""
    if not stored:
        return []
    actual = {r.id: r.passed for r in results}
    claimed = {str(r.get("id")): bool(r.get("passed")) for r in stored if isinstance(r, dict)}
    wrong = [
        f"{cid} ({'pass' if said else 'fail'} in report.json, "
        f"{'pass' if actual[cid] else 'fail'} by the evidence)"
        for cid, said in sorted(claimed.items())
        if cid in actual and actual[cid] != said
    ]
    if wrong:
        return [Flag(STORED_VERDICT, f"report.json disagrees with the evidence: {_brief(wrong)}")]
    return []


# --- across the class ---------------------------------------------------------------


def _identity_keys(identity: Mapping[str, Any] | None) -> set[tuple[str, str]]:
    """What identifies a cluster: its kube-system UID and each node's boot ID."""
    if not isinstance(identity, Mapping):
        return set()
    keys = set()
    uid = identity.get("kube_system_uid")
    if isinstance(uid, str) and uid:
        keys.add(("kube-system UID", uid))
    nodes = identity.get("nodes")
    for node in nodes if isinstance(nodes, list) else []:
        boot_id = node.get("boot_id") if isinstance(node, dict) else None
        if isinstance(boot_id, str) and boot_id:
            keys.add(("boot ID", boot_id))
    pod_uids = identity.get("pod_uids")
    for uid in pod_uids if isinstance(pod_uids, list) else []:
        if isinstance(uid, str) and uid:
            keys.add(("pod UID", uid))
    return keys


def shared_cluster_flags(
    identities: Mapping[str, Mapping[str, Any] | None],
) -> dict[str, list[Flag]]:
    """Per student, a flag naming every other student whose evidence shares a cluster ID."""
    owners: dict[tuple[str, str], set[str]] = defaultdict(set)
    for student, identity in identities.items():
        for key in _identity_keys(identity):
            owners[key].add(student)
    shared: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for (what, value), students in owners.items():
        if len(students) < 2:
            continue
        for student in students:
            for other in students - {student}:
                shared[student][other].add(f"{what} {value[:13]}")
    return {
        student: [
            Flag(SHARED_CLUSTER, f"same cluster as {other} ({_brief(sorted(keys), 3)})")
            for other, keys in sorted(others.items())
        ]
        for student, others in shared.items()
    }
