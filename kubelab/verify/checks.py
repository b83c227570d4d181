"""The checks: small functions over an evidence folder that return results.

Each check reads only the evidence and what is expected, so the live run and a
grader's re-evaluation of a handed-in folder take the same path (`evaluate`).
A check never raises: a missing file fails it as "no evidence: FILE", an
unreadable one as "unreadable evidence", and one failure never hides another
check's result.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from kubelab import defaults
from kubelab.names import version_tag
from kubelab.verify.evidence import (
    CLEANUP,
    DEPLOYMENT,
    DNS,
    ENDPOINTS,
    NGINX_PODS,
    NODES,
    OWN_DEPLOYMENTS,
    OWN_SERVICES,
    PODS,
    SERVICE,
    VERSION,
    BadEvidence,
    Evidence,
    MissingEvidence,
    curl_record_path,
    http_url,
    is_welcome_page,
    items,
    node_prep_path,
    parse_curl_stdout,
    parse_time,
)
from kubelab.verify.expect import CLUSTER, NODE_PREP, OWN, PHASES, PROBE, Expected, ExpectedNode
from kubelab.verify.hints import Hints, hint, language


@dataclass(frozen=True)
class Part:
    """One thing a check looked at (a node, a pod, a request) and what it found."""

    subject: str
    ok: bool
    why: str = ""  # what is wrong, when not ok

    def __str__(self) -> str:
        return self.subject if self.ok else f"{self.subject}: {self.why}"


@dataclass(frozen=True)
class CheckResult:
    id: str
    title: str
    passed: bool
    detail: str
    hint: str = ""
    duration: float = 0.0  # seconds the live run spent collecting this check's evidence
    # What the check looked at, one part each; partial credit is computed from them.
    # Empty for a check that could not look at anything (its evidence is missing).
    parts: tuple[Part, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["parts"] = [asdict(p) for p in self.parts]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        fields["parts"] = tuple(
            Part(str(p.get("subject", "?")), bool(p.get("ok")), str(p.get("why", "")))
            for p in fields.get("parts") or ()
            if isinstance(p, dict)
        )
        return cls(**fields)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    detail: str
    hint: str = ""
    parts: tuple[Part, ...] = ()


def _ok(detail: str) -> Verdict:
    return Verdict(True, detail)


def _fail(problems: list[str], hints: Hints) -> Verdict:
    return Verdict(False, "; ".join(problems), hints.text())


CheckFn = Callable[[Evidence, Expected], Verdict]


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    fn: CheckFn
    only_if: Callable[[Expected], bool] = lambda expected: True
    phase: str = PROBE

    def __call__(self, evidence: Evidence, expected: Expected) -> CheckResult:
        try:
            verdict = self.fn(evidence, expected)
        except MissingEvidence as exc:
            verdict = Verdict(False, str(exc), hint("no_evidence"))
        except BadEvidence as exc:
            verdict = Verdict(False, str(exc), hint("no_evidence"))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            # The evidence is not shaped as kubectl prints it (edited, truncated).
            verdict = Verdict(False, f"unreadable evidence: {type(exc).__name__}: {exc}")
        return CheckResult(
            id=self.id,
            title=self.title,
            passed=verdict.passed,
            detail=verdict.detail,
            hint="" if verdict.passed else verdict.hint,
            duration=evidence.duration(self.id),
            parts=verdict.parts,
        )


# --- Kubernetes object helpers ----------------------------------------------------


def _name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", "?"))


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return None


def internal_ip(node: dict[str, Any]) -> str | None:
    for address in (node.get("status") or {}).get("addresses") or []:
        if address.get("type") == "InternalIP":
            return str(address.get("address"))
    return None


def blocking_taints(node: dict[str, Any]) -> list[str]:
    spec = node.get("spec") or {}
    taints = [
        f"{t.get('key')}:{t.get('effect')}"
        for t in spec.get("taints") or []
        if t.get("effect") in ("NoSchedule", "NoExecute")
    ]
    if spec.get("unschedulable") and not any("unschedulable" in t for t in taints):
        taints.append("cordoned")
    return taints


def schedulable_nodes(nodes_doc: Any, expected: Expected) -> list[str]:
    """The configured nodes that take ordinary pods (no NoSchedule/NoExecute taint)."""
    by_name = {_name(n): n for n in items(nodes_doc, NODES)}
    return [
        n.name for n in expected.nodes if n.name in by_name and not blocking_taints(by_name[n.name])
    ]


def pod_ready(pod: dict[str, Any]) -> bool:
    ready = _condition(pod, "Ready")
    return (pod.get("status") or {}).get("phase") == "Running" and bool(
        ready and ready.get("status") == "True"
    )


def _short(text: object, limit: int = 140) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


_BROKEN = {
    "CrashLoopBackOff": "crashloop",
    "RunContainerError": "crashloop",
    "ImagePullBackOff": "image_pull",
    "ErrImagePull": "image_pull",
    "InvalidImageName": "image_pull",
    "ErrImageNeverPull": "image_pull",
    "CreateContainerConfigError": "describe_pod",
    "CreateContainerError": "describe_pod",
}
_SLOW = {"ContainerCreating", "PodInitializing"}


@dataclass(frozen=True)
class PodTrouble:
    pod: str  # namespace/name
    node: str
    what: str
    hint_key: str

    def __str__(self) -> str:
        on = f" on {self.node}" if self.node else ""
        return f"{self.pod}{on}: {self.what}"


def pod_trouble(
    pod: dict[str, Any], observed_at: datetime | None, grace: float
) -> PodTrouble | None:
    """Why a pod is unhealthy, or None. Pending/creating only counts past `grace` seconds."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    phase = status.get("phase") or "Unknown"
    ref = f"{meta.get('namespace', '?')}/{meta.get('name', '?')}"
    node = (pod.get("spec") or {}).get("nodeName") or ""
    if phase == "Succeeded":
        return None
    slow = ""
    for prefix, key in (("Init:", "initContainerStatuses"), ("", "containerStatuses")):
        for container in status.get(key) or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason") or ""
            if reason in _BROKEN:
                restarts = container.get("restartCount") or 0
                what = f"{prefix}{reason}"
                if restarts:
                    what += f" ({restarts} restarts)"
                if waiting.get("message"):
                    what += f": {_short(waiting['message'])}"
                return PodTrouble(ref, node, what, _BROKEN[reason])
            if reason in _SLOW and not slow:
                slow = f"{prefix}{reason}"
    if phase in ("Failed", "Unknown"):
        why = ": ".join(x for x in (status.get("reason"), _short(status.get("message"))) if x)
        return PodTrouble(ref, node, phase + (f" ({why})" if why else ""), "describe_pod")
    if phase != "Pending" and not slow:
        return None
    created = parse_time(meta.get("creationTimestamp"))
    age = (observed_at - created).total_seconds() if observed_at and created else None
    if age is not None and age < grace:
        return None
    when = (
        f"for {age:.0f} s (deadline {grace:.0f} s)"
        if age is not None
        else "(the evidence does not say since when)"
    )
    if slow:
        return PodTrouble(ref, node, f"{slow} {when}", "container_creating")
    scheduled = _condition(pod, "PodScheduled")
    what = f"Pending {when}"
    if scheduled and scheduled.get("status") == "False":
        what += f": {scheduled.get('reason', '')} {_short(scheduled.get('message'))}".rstrip()
        return PodTrouble(ref, node, what, "pending")
    return PodTrouble(ref, node, what, "pending" if not node else "container_creating")


# --- which registered node is which -----------------------------------------------

CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")


def is_control_plane(node: dict[str, Any]) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    return any(label in labels for label in CONTROL_PLANE_LABELS)


def identify_nodes(nodes_doc: Any, expected: Expected) -> Expected:
    """`expected` with each node's registered name found in nodes.json.

    Students name their nodes as their manual says (`k8s-master-<ID>`, `master<ID>`,
    `<ID>-node1`), not as kubelab would. A registered node is this lab node when, in
    this order: its name is the expected one; its InternalIP is the node's private IP;
    it carries the student ID and the role fits (the control-plane label for the
    master; for a node, its machine name in the name first, then any left).
    """
    try:
        registered = items(nodes_doc, NODES)
    except BadEvidence:
        return expected
    free = {_name(n): n for n in registered}
    found: dict[int, str] = {}

    def take(index: int, name: str) -> None:
        found[index] = name
        free.pop(name, None)

    for i, want in enumerate(expected.nodes):
        if want.name in free:
            take(i, want.name)
    for i, want in enumerate(expected.nodes):
        if i not in found:
            by_ip = [name for name, node in free.items() if internal_ip(node) == want.private_ip]
            if by_ip:
                take(i, by_ip[0])
    student = expected.student_id.lower()
    if student:
        for i, want in enumerate(expected.nodes):
            if i in found:
                continue
            fits = [
                name
                for name, node in sorted(free.items())
                if student in name.lower() and is_control_plane(node) == (want.role == "master")
            ]
            machine = want.host.lower()
            named = [name for name in fits if machine in name.lower().replace(student, "")]
            if named or fits:
                take(i, (named or fits)[0])
    nodes = tuple(
        n._replace(registered=found[i] if found.get(i, n.name) != n.name else "")
        for i, n in enumerate(expected.nodes)
    )
    return replace(expected, nodes=nodes)


# --- exercise 1: node preparation, over SSH ------------------------------------------

_PROBE_LINES, _PROBE_VALUE = 400, 500  # what is read of one VM's probe output
PREP_MODULES = ("overlay", "br_netfilter")
PREP_SYSCTLS = (
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.ipv4.ip_forward",
)
# The ports of the course chapter (01, 2.2), by role: what firewalld must let in when
# the student keeps it running. 8472/udp is flannel's VXLAN.
PREP_PORTS = defaults.FIREWALL_PORTS  # what prepare opens, by role


def node_prep(evidence: Evidence, node: ExpectedNode) -> dict[str, str]:
    """The key=value lines labs/probes/node-prep.sh printed on one VM."""
    values: dict[str, str] = {}
    for line in evidence.text(node_prep_path(node.host)).splitlines()[:_PROBE_LINES]:
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()[:_PROBE_VALUE]
    return values


NodeJudge = Callable[[dict[str, str], ExpectedNode, Evidence, Expected], list[str]]


def _per_node(judge: NodeJudge, hint_key: str, ok: str) -> CheckFn:
    """A check over every node's probe output: one part per node, its problems as `why`."""

    def check(evidence: Evidence, expected: Expected) -> Verdict:
        parts = []
        for node in expected.nodes:
            try:
                problems = judge(node_prep(evidence, node), node, evidence, expected)
            except (MissingEvidence, BadEvidence) as exc:
                problems = [str(exc)]
            parts.append(Part(node.host, not problems, "; ".join(problems)))
        failing = [p for p in parts if not p.ok]
        if failing:
            hints = Hints()
            hints.add(hint_key, node=failing[0].subject, student=expected.student_id or "ID")
            return Verdict(False, "; ".join(str(p) for p in failing), hints.text(), tuple(parts))
        return Verdict(True, f"{ok} on {', '.join(p.subject for p in parts)}", "", tuple(parts))

    return check


def _swap(values: dict[str, str], node: ExpectedNode, *_: Any) -> list[str]:
    problems = []
    if values.get("swap_active", "?") != "0":
        problems.append(f"swap is on now ({values.get('swap_active', '?')} devices in /proc/swaps)")
    if values.get("fstab_swap", "?") != "0":
        problems.append("/etc/fstab still mounts swap at boot")
    return problems


def _modules(values: dict[str, str], node: ExpectedNode, *_: Any) -> list[str]:
    problems = []
    for module in PREP_MODULES:
        if values.get(f"module_now.{module}") != "1":
            problems.append(f"{module} is not loaded")
        if values.get(f"module_boot.{module}", "0") in ("0", ""):
            problems.append(f"{module} is not in /etc/modules-load.d (gone after a reboot)")
    return problems


def _sysctls(values: dict[str, str], node: ExpectedNode, *_: Any) -> list[str]:
    problems = []
    for key in PREP_SYSCTLS:
        now_value = values.get(f"sysctl_now.{key}", "?")
        boot = values.get(f"sysctl_boot.{key}", "?")
        if now_value != "1":
            problems.append(f"{key} is {now_value} now")
        if boot != "1":
            problems.append(f"{key} is {boot} at boot (/etc/sysctl.d)")
    return problems


def _selinux(values: dict[str, str], node: ExpectedNode, *_: Any) -> list[str]:
    problems = []
    now_mode = values.get("selinux_now", "?")
    boot = values.get("selinux_boot", "")
    if now_mode not in ("permissive", "disabled", "absent"):
        problems.append(f"SELinux is {now_mode} now")
    if boot not in ("permissive", "disabled") and not (now_mode == "absent" and not boot):
        problems.append(f"/etc/selinux/config starts SELinux {boot or 'unset'} at boot")
    return problems


def _port_range(port: str) -> tuple[int, int, str] | None:
    number, _, protocol = port.partition("/")
    low, _, high = number.partition("-")
    if not low.isdigit() or (high and not high.isdigit()):
        return None
    return int(low), int(high or low), protocol


def _covered(port: str, opened: list[str]) -> bool:
    want = _port_range(port)
    assert want is not None  # PREP_PORTS is ours
    for spec in opened:
        have = _port_range(spec)
        if have and have[2] == want[2] and have[0] <= want[0] and want[1] <= have[1]:
            return True
    return False


def _firewall(values: dict[str, str], node: ExpectedNode, *_: Any) -> list[str]:
    if values.get("firewalld") != "active":
        return []
    opened = values.get("firewalld_ports", "").split()
    closed = [p for p in PREP_PORTS[node.role] if not _covered(p, opened)]
    return [f"firewalld runs and does not open {', '.join(closed)}"] if closed else []


def _resolution(
    values: dict[str, str], node: ExpectedNode, evidence: Evidence, expected: Expected
) -> list[str]:
    problems = []
    for other in expected.nodes:
        try:
            name = node_prep(evidence, other).get("hostname", "")
        except (MissingEvidence, BadEvidence):
            continue  # that node's own row says why
        if not name:
            continue
        got = [a for a in values.get(f"resolve.{name}", "").split(",") if a]
        if not got:
            problems.append(f"{name} does not resolve")
        elif got[0] != other.private_ip:
            problems.append(f"{name} resolves to {got[0]}, not its private IP {other.private_ip}")
    return problems


def _time(values: dict[str, str], node: ExpectedNode, *_: Any) -> list[str]:
    synced = values.get("time_synchronized", "")
    return [] if synced == "yes" else [f"the clock is not synchronised ({synced or 'unknown'})"]


def _hostname(
    values: dict[str, str], node: ExpectedNode, evidence: Evidence, expected: Expected
) -> list[str]:
    name = values.get("hostname", "")
    if not expected.student_id:
        return ["no student ID to look for (give --student ID)"]
    if expected.student_id.lower() not in name.lower():
        return [f"hostname {name or '(empty)'} does not carry {expected.student_id}"]
    return []


# --- exercise 2: the student's own nginx Deployment and NodePort Service -------------

OWN_DEPLOYMENT_NAME = "nginx"  # the manual's: kubectl create deployment nginx
OWN_MIN_REPLICAS = 2


@dataclass(frozen=True)
class OwnWorkload:
    """The student's nginx as the cluster printed it: Deployment, its pods, its NodePort."""

    deployment: dict[str, Any] | None
    pods: list[dict[str, Any]]
    service: dict[str, Any] | None


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def own_workload(deployments: Any, services: Any, pods: Any, expected: Expected) -> OwnWorkload:
    """The Deployment named nginx outside verify's namespace ("default" first), the pods
    its selector picks, and a NodePort Service in its namespace selecting them."""
    found = [
        d
        for d in items(deployments, OWN_DEPLOYMENTS)
        if _name(d) == OWN_DEPLOYMENT_NAME
        and (d.get("metadata") or {}).get("namespace") != expected.namespace
    ]
    if not found:
        return OwnWorkload(None, [], None)
    found.sort(
        key=lambda d: (d["metadata"].get("namespace") != "default", d["metadata"].get("namespace"))
    )
    deployment = found[0]
    namespace = deployment["metadata"].get("namespace")
    selector = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    own_pods = [
        p
        for p in items(pods, PODS)
        if (p.get("metadata") or {}).get("namespace") == namespace
        and selector
        and all(_labels(p).get(k) == v for k, v in selector.items())
    ]
    service = None
    for candidate in items(services, OWN_SERVICES):
        spec = candidate.get("spec") or {}
        chooses = spec.get("selector") or {}
        if (
            (candidate.get("metadata") or {}).get("namespace") == namespace
            and spec.get("type") == "NodePort"
            and chooses
            and own_pods
            and all(_labels(own_pods[0]).get(k) == v for k, v in chooses.items())
        ):
            service = candidate
            break
    return OwnWorkload(deployment, own_pods, service)


def _own(evidence: Evidence, expected: Expected) -> OwnWorkload:
    return own_workload(
        evidence.json(OWN_DEPLOYMENTS),
        evidence.json(OWN_SERVICES),
        evidence.json(PODS),
        expected,
    )


def _no_deployment() -> Verdict:
    hints = Hints()
    hints.add("own_deployment")
    return Verdict(
        False,
        f"no Deployment named {OWN_DEPLOYMENT_NAME} (outside verify's namespace)",
        hints.text(),
    )


def check_own_deployment(evidence: Evidence, expected: Expected) -> Verdict:
    own = _own(evidence, expected)
    if own.deployment is None:
        return _no_deployment()
    replicas = (own.deployment.get("spec") or {}).get("replicas") or 0
    ready_on = {str((p.get("spec") or {}).get("nodeName")) for p in own.pods if pod_ready(p)}
    master = expected.masters[0].k8s_name if expected.masters else "master"
    workers = [n.k8s_name for n in expected.nodes if n.role != "master"]
    on_worker = sorted(ready_on & set(workers))
    parts = (
        Part(
            "replicas",
            replicas >= OWN_MIN_REPLICAS,
            f"{replicas} replicas, the manual asks {OWN_MIN_REPLICAS} or more",
        ),
        Part(master, master in ready_on, "no ready nginx pod on the master (is it tainted?)"),
        Part("a node", bool(on_worker), f"no ready nginx pod on {', '.join(workers) or 'a node'}"),
    )
    namespace = own.deployment["metadata"].get("namespace")
    return _parts_verdict(
        parts,
        f"{namespace}/{OWN_DEPLOYMENT_NAME}: {replicas} replicas, ready on {master} and "
        f"{', '.join(on_worker)}",
        "own_deployment",
    )


def _parts_verdict(parts: tuple[Part, ...], ok: str, hint_key: str) -> Verdict:
    failing = [p for p in parts if not p.ok]
    if failing:
        hints = Hints()
        hints.add(hint_key)
        return Verdict(False, "; ".join(str(p) for p in failing), hints.text(), parts)
    return Verdict(True, ok, "", parts)


def own_pod_targets(own: OwnWorkload) -> list[tuple[str, str]]:
    """(pod IP, pod name) of the student's nginx pods, in a stable order."""
    return sorted(
        (str(p["status"]["podIP"]), _name(p))
        for p in own.pods
        if (p.get("status") or {}).get("podIP")
    )


def check_own_pod_ips(evidence: Evidence, expected: Expected) -> Verdict:
    own = _own(evidence, expected)
    if own.deployment is None:
        return _no_deployment()
    targets = own_pod_targets(own)
    parts = []
    for ip, pod in targets:
        failed = [
            f"{source.name} [{why}]"
            for source in expected.nodes
            if (why := curl_problem(evidence, "own-pod-ips", source.name, ip, http_url(ip, 80)))
        ]
        parts.append(Part(f"{ip} ({pod})", not failed, f"failed from {', '.join(failed)}"))
    if not parts:
        parts.append(Part("pods", False, "no pod of your nginx has an IP"))
    return _parts_verdict(
        tuple(parts),
        f"{len(targets)} pod IPs of your nginx answered from {len(expected.nodes)} nodes",
        "pod_ip",
    )


def check_own_nodeport(evidence: Evidence, expected: Expected) -> Verdict:
    own = _own(evidence, expected)
    if own.deployment is None:
        return _no_deployment()
    if own.service is None:
        hints = Hints()
        hints.add("own_service")
        return Verdict(False, "no NodePort Service selects your nginx pods", hints.text())
    node_port = _service_port(own.service, "nodePort")
    recorded = evidence.listdir("curl/own-nodeport")
    parts = []
    for node in expected.nodes:
        suffix = curl_record_path("own-nodeport", "x", node.private_ip).rsplit("__", 1)[1]
        sources = [n.split("__", 1)[0] for n in recorded if n.endswith(suffix) and "__" in n]
        failed = [
            f"{source} [{why}]"
            for source in sources
            if (
                why := curl_problem(
                    evidence,
                    "own-nodeport",
                    source,
                    node.private_ip,
                    http_url(node.private_ip, node_port),
                )
            )
        ]
        if not sources:
            failed.append("no evidence: " + curl_record_path("own-nodeport", "*", node.private_ip))
        parts.append(
            Part(f"{node.k8s_name} {node.private_ip}:{node_port}", not failed, "; ".join(failed))
        )
    return _parts_verdict(
        tuple(parts),
        f"your NodePort {node_port} answered on all {len(expected.nodes)} nodes",
        "nodeport",
    )


# --- the checks -------------------------------------------------------------------


def check_api(evidence: Evidence, expected: Expected) -> Verdict:
    version = evidence.json(VERSION)
    git = version.get("gitVersion") if isinstance(version, dict) else None
    if not git:
        return Verdict(
            False,
            f"{VERSION} has no gitVersion",
            hint("api", admin_kubeconfig=expected.guest_paths["admin_kubeconfig"]),
        )
    want = version_tag(expected.kubernetes_version)
    if git != want:
        return Verdict(
            False,
            f"API server answers but runs {git}, the lab pins {want}",
            hint("api_version", actual=git, expected=want),
        )
    return _ok(f"API server answers: {git} ({version.get('platform', '?')})")


_CNI_NOT_READY = (
    "cni config uninitialized",
    "cni plugin not initialized",
    "networkpluginnotready",
    "network plugin is not ready",
)


def check_nodes(evidence: Evidence, expected: Expected) -> Verdict:
    nodes = items(evidence.json(NODES), NODES)
    by_name = {_name(n): n for n in nodes}
    want_version = version_tag(expected.kubernetes_version)
    pod_net = ipaddress.ip_network(expected.pod_cidr, strict=False)
    management = ipaddress.ip_network(expected.management_cidr, strict=False)
    problems: list[str] = []
    hints = Hints()
    for want in expected.nodes:
        node = by_name.get(want.name)
        if node is None:
            problems.append(f"{want.name} is not registered")
            hints.add("node_missing", node=want.name)
            continue
        ready = _condition(node, "Ready")
        if not ready or ready.get("status") != "True":
            state = ready.get("status", "Unknown") if ready else "no Ready condition"
            # The runtime's message carries the cause ("cni plugin not initialized")
            # at its end: keep all of it.
            message = _short((ready or {}).get("message"), 300)
            problems.append(f"{want.name} NotReady ({state}): {message}".rstrip(" :"))
            if any(m in str((ready or {}).get("message", "")).lower() for m in _CNI_NOT_READY):
                hints.add("cni", node=want.name, pod_cidr=expected.pod_cidr)
            else:
                hints.add("node_not_ready", node=want.name)
        kubelet = ((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion")
        if kubelet != want_version:
            problems.append(f"{want.name} kubelet is {kubelet}, the lab pins {want_version}")
            hints.add("kubelet_version", node=want.name, actual=kubelet, expected=want_version)
        address = internal_ip(node)
        if address != want.private_ip:
            where = ""
            try:
                if address and ipaddress.ip_address(address) in management:
                    where = " (the management/NAT address)"
            except ValueError:
                pass
            problems.append(
                f"{want.name} InternalIP is {address}{where}, expected its private IP "
                f"{want.private_ip}"
            )
            hints.add("internal_ip", node=want.name, actual=address, expected=want.private_ip)
        cidr = (node.get("spec") or {}).get("podCIDR")
        try:
            inside = bool(cidr) and ipaddress.ip_network(cidr, strict=False).subnet_of(pod_net)  # type: ignore[arg-type]
        except (ValueError, TypeError):
            inside = False
        if not inside:
            problems.append(f"{want.name} podCIDR is {cidr or 'unset'}, not inside {pod_net}")
            hints.add("pod_cidr", node=want.name, pod_cidr=expected.pod_cidr)
    extra = sorted(set(by_name) - {n.name for n in expected.nodes})
    if extra and problems:
        problems.append(f"unexpected nodes registered: {', '.join(extra)}")
        hints.add("unexpected_nodes", actual=", ".join(extra))
    if problems:
        return _fail(problems, hints)
    return _ok(
        f"{len(expected.nodes)}/{len(expected.nodes)} nodes Ready at {want_version} on their "
        f"private IPs ({', '.join(n.name for n in expected.nodes)})"
    )


CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
# The DaemonSet pod name prefix of each CNI kubelab knows.
CNI_PODS = {
    "flannel": "kube-flannel-ds",
    "calico": "calico-node",
    "canal": "canal",
    "weave": "weave-net",
    "cilium": "cilium",
}


def _is_component(pod: dict[str, Any], component: str, node: str) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return (pod.get("spec") or {}).get("nodeName") == node and (
        labels.get("component") == component or _name(pod) == f"{component}-{node}"
    )


def _is_kube_proxy(pod: dict[str, Any], node: str) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return (pod.get("spec") or {}).get("nodeName") == node and (
        labels.get("k8s-app") == "kube-proxy" or _name(pod).startswith("kube-proxy-")
    )


def _is_cni(pod: dict[str, Any], cni: str, node: str) -> bool:
    prefix = CNI_PODS.get(cni, cni) + "-"
    return (pod.get("spec") or {}).get("nodeName") == node and _name(pod).startswith(prefix)


def _is_coredns(pod: dict[str, Any]) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return (pod.get("metadata") or {}).get("namespace") == "kube-system" and (
        labels.get("k8s-app") == "kube-dns" or _name(pod).startswith("coredns-")
    )


def _readiness(pod: dict[str, Any]) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    return f"{(pod.get('status') or {}).get('phase', 'Unknown')}, {ready}/{len(statuses)} ready"


def check_system_pods(evidence: Evidence, expected: Expected) -> Verdict:
    pods = [
        p
        for p in items(evidence.json(PODS), PODS)
        if (p.get("metadata") or {}).get("namespace") != expected.namespace
    ]
    observed = evidence.observed_at(PODS)
    grace = expected.deadlines.pending
    troubles = [t for t in (pod_trouble(p, observed, grace) for p in pods) if t]
    troubled = {t.pod for t in troubles}
    problems: list[str] = []
    hints = Hints()

    def require(found: list[dict[str, Any]], what: str, node: str, hint_key: str) -> None:
        if not found:
            problems.append(f"no {what} pod on {node}")
            hints.add(hint_key, node=node, pod_cidr=expected.pod_cidr)
        elif not any(pod_ready(p) for p in found):
            pod = found[0]
            ref = f"{pod['metadata'].get('namespace')}/{_name(pod)}"
            if ref not in troubled:
                problems.append(f"{ref} on {node} is not ready ({_readiness(pod)})")
                hints.add(
                    "describe_pod", namespace=pod["metadata"].get("namespace"), pod=_name(pod)
                )

    for master in expected.masters:
        for component in CONTROL_PLANE:
            found = [p for p in pods if _is_component(p, component, master.name)]
            require(found, component, master.name, "component_missing")
    cni_missing = False
    for node in expected.nodes:
        require(
            [p for p in pods if _is_kube_proxy(p, node.name)],
            "kube-proxy",
            node.name,
            "component_missing",
        )
        cni = [p for p in pods if _is_cni(p, expected.cni, node.name)]
        cni_missing |= not cni
        require(cni, expected.cni, node.name, "cni")
    coredns = [p for p in pods if _is_coredns(p)]
    coredns_ready = sum(1 for p in coredns if pod_ready(p))
    if not coredns:
        problems.append("no CoreDNS pod")
        hints.add("coredns")
    elif coredns_ready < len(coredns):
        problems.append(f"CoreDNS {coredns_ready}/{len(coredns)} ready")
        hints.add("coredns")
    for trouble in troubles:
        problems.append(str(trouble))
        namespace, _, pod_name = trouble.pod.partition("/")
        hints.add(trouble.hint_key, namespace=namespace, pod=pod_name, node=trouble.node)
    if problems:
        return _fail(problems, hints)
    masters = ", ".join(m.name for m in expected.masters) or "no master"
    return _ok(
        f"control plane on {masters}; kube-proxy and {expected.cni} on "
        f"{len(expected.nodes)} nodes; CoreDNS {coredns_ready}/{len(coredns)} ready; "
        f"no pod stuck among {len(pods)}"
    )


def check_nginx_rollout(evidence: Evidence, expected: Expected) -> Verdict:
    nodes_doc = evidence.json(NODES)
    deployment = evidence.json(DEPLOYMENT)
    pods = items(evidence.json(NGINX_PODS), NGINX_PODS)
    by_name = {_name(n): n for n in items(nodes_doc, NODES)}
    schedulable = schedulable_nodes(nodes_doc, expected)
    hints = Hints()
    if not schedulable:
        tainted = [
            f"{n.name} ({', '.join(blocking_taints(by_name[n.name]))})"
            for n in expected.nodes
            if n.name in by_name
        ]
        first = expected.masters[0].name if expected.masters else expected.nodes[0].name
        hints.add("no_schedulable", node=first)
        return _fail(
            [
                "no schedulable node: every configured node has a NoSchedule taint: "
                + (", ".join(tainted) or "none registered")
            ],
            hints,
        )
    problems: list[str] = []
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    replicas = spec.get("replicas")
    if replicas != len(schedulable):
        problems.append(
            f"the Deployment asks for {replicas} replicas, there are {len(schedulable)} "
            f"schedulable nodes ({', '.join(schedulable)})"
        )
    available = status.get("availableReplicas") or 0
    current = (status.get("observedGeneration") or 0) >= (
        (deployment.get("metadata") or {}).get("generation") or 0
    )
    if available < (replicas or 0) or not current:
        problems.append(
            f"rollout not complete after {expected.deadlines.rollout} s: "
            f"{available}/{replicas} available"
        )
        hints.add("rollout", namespace=expected.namespace)
    ready_on: dict[str, list[str]] = defaultdict(list)
    for pod in pods:
        if pod_ready(pod):
            ready_on[(pod.get("spec") or {}).get("nodeName") or "?"].append(_name(pod))
    missing = [n for n in schedulable if not ready_on.get(n)]
    if missing:
        problems.append(f"no ready nginx pod on {', '.join(missing)}")
        hints.add("spread")
    doubled = [f"{n} runs {len(p)}" for n, p in sorted(ready_on.items()) if len(p) > 1]
    if doubled:
        problems.append(f"not spread: {', '.join(doubled)}")
        hints.add("spread")
    for pod in pods:
        if not pod_ready(pod):
            trouble = pod_trouble(pod, None, 0)
            what = str(trouble) if trouble else f"{_name(pod)}: {_readiness(pod)}"
            problems.append(what)
            if trouble:
                hints.add(trouble.hint_key, namespace=expected.namespace, pod=_name(pod))
    if problems:
        return _fail(problems, hints)
    skipped = [n.name for n in expected.nodes if n.name not in schedulable]
    note = f"; tainted, so skipped: {', '.join(skipped)}" if skipped else ""
    return _ok(
        f"{available}/{replicas} replicas ready, one on each schedulable node "
        f"({', '.join(schedulable)}){note}"
    )


def curl_problem(evidence: Evidence, check: str, source: str, target: str, url: str) -> str | None:
    """What is wrong with one recorded request, or None when it got the welcome page.

    The verdict comes from curl's saved stdout, not from the record's own
    booleans; a record that disagrees with its stdout is reported as such.
    """
    rel = curl_record_path(check, source, target)
    try:
        record = evidence.json(rel)
    except MissingEvidence as exc:
        return str(exc)
    if record.get("url") != url:
        return f"{rel} is for {record.get('url')}, expected {url}"
    if record.get("rc") is None:
        return f"not run: {record.get('error') or 'transport error'}"
    stdout_rel = record.get("stdout") or rel.removesuffix(".json") + ".out"
    try:
        body, status = parse_curl_stdout(evidence.text(stdout_rel))
    except MissingEvidence as exc:
        return str(exc)
    if (
        hashlib.sha256(body).hexdigest() != record.get("body_sha256")
        or status != record.get("http_status")
        or is_welcome_page(body) != record.get("welcome_page")
    ):
        return f"evidence contradicts itself: {rel} does not match {stdout_rel}"
    if record.get("rc") != 0:
        error = record.get("error")
        return f"curl exited {record.get('rc')}" + (f": {_short(error, 100)}" if error else "")
    if status != 200:
        return f"HTTP {status}"
    if not is_welcome_page(body):
        return f"HTTP 200 but not the nginx welcome page ({len(body)} bytes)"
    return None


def _group(failures: dict[str, list[str]]) -> list[str]:
    return [f"{target} failed from {', '.join(sources)}" for target, sources in failures.items()]


def check_pod_ips(evidence: Evidence, expected: Expected) -> Verdict:
    pods = items(evidence.json(NGINX_PODS), NGINX_PODS)
    targets = [
        (str(p["status"]["podIP"]), _name(p), (p.get("spec") or {}).get("nodeName") or "?")
        for p in pods
        if (p.get("status") or {}).get("podIP")
    ]
    if not targets:
        return Verdict(
            False,
            "no nginx pod has an IP to test (see nginx-rollout)",
            hint("rollout", namespace=expected.namespace),
        )
    failures: dict[str, list[str]] = defaultdict(list)
    for source in expected.nodes:
        for ip, pod, node in targets:
            why = curl_problem(evidence, "pod-ips", source.name, ip, http_url(ip, 80))
            if why:
                failures[f"{ip} ({pod} on {node})"].append(f"{source.name} [{why}]")
    if failures:
        hints = Hints()
        hints.add("pod_ip")
        return _fail(_group(failures), hints)
    return _ok(
        f"{len(targets)} pod IPs answered with the nginx welcome page from "
        f"{len(expected.nodes)} nodes ({len(targets) * len(expected.nodes)} requests)"
    )


def _service_port(service: dict[str, Any], key: str) -> int:
    ports = (service.get("spec") or {}).get("ports") or []
    if not ports or not ports[0].get(key):
        raise BadEvidence(SERVICE, f"the Service has no {key}")
    return int(ports[0][key])


def check_cluster_ip(evidence: Evidence, expected: Expected) -> Verdict:
    service = evidence.json(SERVICE)
    cluster_ip = (service.get("spec") or {}).get("clusterIP")
    if not cluster_ip or cluster_ip == "None":
        raise BadEvidence(SERVICE, "the Service has no ClusterIP")
    port = _service_port(service, "port")
    endpoints = evidence.json(ENDPOINTS)
    ready = [a.get("ip") for s in endpoints.get("subsets") or [] for a in s.get("addresses") or []]
    problems: list[str] = []
    hints = Hints()
    if not ready:
        problems.append("the Service has no ready endpoints")
    failures: dict[str, list[str]] = defaultdict(list)
    for source in expected.nodes:
        why = curl_problem(
            evidence, "cluster-ip", source.name, cluster_ip, http_url(cluster_ip, port)
        )
        if why:
            failures[f"{cluster_ip}:{port}"].append(f"{source.name} [{why}]")
    problems += _group(failures)
    if problems:
        hints.add("cluster_ip", namespace=expected.namespace)
        return _fail(problems, hints)
    return _ok(
        f"ClusterIP {cluster_ip}:{port} answered from {len(expected.nodes)} nodes "
        f"({len(ready)} ready endpoints)"
    )


def check_nodeport(evidence: Evidence, expected: Expected) -> Verdict:
    service = evidence.json(SERVICE)
    node_port = _service_port(service, "nodePort")
    problems: list[str] = []
    tried = 0
    for node in expected.nodes:
        target = node.private_ip
        suffix = curl_record_path("nodeport", "x", target).rsplit("__", 1)[1]
        sources = [
            name.split("__", 1)[0]
            for name in evidence.listdir("curl/nodeport")
            if name.endswith(suffix) and "__" in name
        ]
        if not sources:
            problems.append(f"no evidence: {curl_record_path('nodeport', '*', target)}")
            continue
        for source in sources:
            tried += 1
            why = curl_problem(evidence, "nodeport", source, target, http_url(target, node_port))
            if why:
                problems.append(f"{target}:{node_port} ({node.name}) failed from {source} [{why}]")
    if problems:
        hints = Hints()
        hints.add("nodeport", namespace=expected.namespace)
        return _fail(problems, hints)
    return _ok(
        f"NodePort {node_port} answered on all {len(expected.nodes)} private IPs ({tried} requests)"
    )


def check_dns(evidence: Evidence, expected: Expected) -> Verdict:
    record = evidence.json(DNS)
    cluster_ip = (evidence.json(SERVICE).get("spec") or {}).get("clusterIP")
    name = record.get("name")
    if record.get("rc") != 0:
        why = record.get("error") or _short(record.get("stderr")) or "no answer"
        return Verdict(
            False,
            f"{name} did not resolve in pod {record.get('pod')} (exit {record.get('rc')}: {why})",
            hint("dns"),
        )
    resolved = [
        line.split()[0] for line in str(record.get("stdout", "")).splitlines() if line.split()
    ]
    if cluster_ip not in resolved:
        return Verdict(
            False,
            f"{name} resolved to {', '.join(resolved) or 'nothing'}, "
            f"not the Service's ClusterIP {cluster_ip}",
            hint("dns"),
        )
    return _ok(f"{name} resolves to {cluster_ip} in pod {record.get('pod')}")


def check_cleanup(evidence: Evidence, expected: Expected) -> Verdict:
    record = evidence.json(CLEANUP)
    namespace = record.get("namespace")
    fix = hint("cleanup", namespace=expected.namespace)
    if namespace != expected.namespace:
        return Verdict(
            False, f"{CLEANUP} is about namespace {namespace}, not {expected.namespace}", fix
        )
    look = record.get("check") or {}
    if look.get("rc") != 0:
        why = look.get("error") or _short(look.get("stderr")) or f"exit {look.get('rc')}"
        return Verdict(False, f"could not confirm that {namespace} is gone: {why}", fix)
    if str(look.get("stdout") or "").strip():
        return Verdict(
            False, f"namespace {namespace} still present after {expected.deadlines.cleanup} s", fix
        )
    return _ok(f"namespace {namespace} deleted")


CHECKS: tuple[Check, ...] = (
    Check(
        "swap",
        "Swap off, now and in /etc/fstab",
        _per_node(_swap, "prep_swap", "no swap"),
        phase=NODE_PREP,
    ),
    Check(
        "kernel-modules",
        "overlay and br_netfilter loaded, and loaded at boot",
        _per_node(_modules, "prep_modules", "both loaded and listed for boot"),
        phase=NODE_PREP,
    ),
    Check(
        "sysctls",
        "bridge-nf-call-iptables/ip6tables and ip_forward = 1, now and at boot",
        _per_node(_sysctls, "prep_sysctls", "all 1 now and at boot"),
        phase=NODE_PREP,
    ),
    Check(
        "selinux",
        "SELinux permissive, now and at boot",
        _per_node(_selinux, "prep_selinux", "not enforcing"),
        phase=NODE_PREP,
    ),
    Check(
        "firewall",
        "firewalld off, or the chapter's ports open",
        _per_node(_firewall, "prep_firewall", "firewalld off or ports open"),
        phase=NODE_PREP,
    ),
    Check(
        "name-resolution",
        "Every lab node resolves by name to its private IPv4",
        _per_node(_resolution, "prep_resolution", "every hostname resolves to its private IP"),
        phase=NODE_PREP,
    ),
    Check(
        "time-sync",
        "Clock synchronised",
        _per_node(_time, "prep_time", "synchronised"),
        phase=NODE_PREP,
    ),
    Check(
        "hostname",
        "Hostname carries the student ID",
        _per_node(_hostname, "prep_hostname", "carries the student ID"),
        phase=NODE_PREP,
    ),
    Check("api", "API server answers", check_api, phase=CLUSTER),
    Check(
        "nodes", "Nodes registered, Ready, pinned kubelet, private IP", check_nodes, phase=CLUSTER
    ),
    Check("system-pods", "kube-system healthy", check_system_pods, phase=CLUSTER),
    Check("nginx-rollout", "nginx on every schedulable node", check_nginx_rollout),
    Check("pod-ips", "Pod IPs answer from every node", check_pod_ips),
    Check("cluster-ip", "Service ClusterIP answers from every node", check_cluster_ip),
    Check("nodeport", "NodePort answers on every private IP", check_nodeport),
    Check(
        "own-deployment",
        "Your nginx Deployment: 2+ replicas, on the master and a node",
        check_own_deployment,
        phase=OWN,
    ),
    Check("own-pod-ips", "Your nginx pod IPs answer from every node", check_own_pod_ips, phase=OWN),
    Check("own-nodeport", "Your NodePort answers on every node", check_own_nodeport, phase=OWN),
    Check("dns", "Service name resolves in a pod", check_dns, only_if=lambda e: e.dns),
    Check("cleanup", "verify's namespace removed", check_cleanup),
)

# The hard way's checks (a lab without kubeadm) live in their own module.
from kubelab.verify.checks_hardway import HARDWAY_CHECKS  # noqa: E402

CHECK_IDS = tuple(c.id for c in CHECKS)
# Every id an exercise or a rubric may name: the cluster's checks and the hard way's.
ALL_CHECK_IDS = CHECK_IDS + tuple(c.id for c in HARDWAY_CHECKS)


def phases_of(check_ids: Iterable[str]) -> tuple[str, ...]:
    """What verify must collect to run these checks, in PHASES order: each check's phase,
    plus the cluster's state whenever anything beyond node preparation is asked (the
    nodes are found in it). One rule for an exercise's checks and a rubric's."""
    by_id = {c.id: c.phase for c in (*CHECKS, *HARDWAY_CHECKS)}
    wanted = {by_id[c] for c in check_ids}
    if wanted - {NODE_PREP}:
        wanted.add(CLUSTER)
    return tuple(p for p in PHASES if p in wanted)


def checks_for(expected: Expected) -> list[Check]:
    """The checks of the phases that were collected; a lab built the hard way (no
    kubeadm) has its own checks (kubelab/verify/checks_hardway.py)."""
    if expected.hardway:
        return [c for c in HARDWAY_CHECKS if c.only_if(expected)]
    return [c for c in CHECKS if c.phase in expected.phases and c.only_if(expected)]


def identified(evidence: Evidence, expected: Expected) -> Expected:
    """`expected` with its nodes found among the registered ones (when nodes.json is there)."""
    if CLUSTER in expected.phases and not expected.hardway:
        # Evidence is hostile: a nodes.json of the wrong shape leaves the nodes as
        # expected, and the nodes check says what is wrong with it.
        with contextlib.suppress(MissingEvidence, BadEvidence, TypeError, AttributeError):
            return identify_nodes(evidence.json(NODES), expected)
    if expected.hardway:
        from kubelab.verify.checks_hardway import MEMBER_LIST, identify_members

        with contextlib.suppress(MissingEvidence, BadEvidence, TypeError, AttributeError):
            return identify_members(evidence.json(MEMBER_LIST), expected)
    return expected


def evaluate(evidence_dir: Path | str, expected: Expected) -> list[CheckResult]:
    """Every check of the collected phases over a saved evidence folder; contacts nothing.

    The lab's nodes are first found among the registered ones (`identify_nodes`), so a
    node the student named `k8s-master-<ID>` is checked as the master.
    """
    evidence = Evidence(evidence_dir)
    expected = identified(evidence, expected)
    with language(expected.language):
        return [check(evidence, expected) for check in checks_for(expected)]
