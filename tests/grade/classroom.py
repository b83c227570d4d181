"""A synthetic class for the grading tests, derived from the real cluster captures.

Every student's cluster is the kubeadm v1.21.0 capture (../shared/fixtures, one
control plane and two workers, all Ready) cut down to the exercise's two nodes and
changed the way a student's cluster would differ: node names that carry the student
ID, the student's own lab addresses, pod and Service addresses, boot and machine
IDs and kube-system UID of its own. A `Variant` then breaks one thing the rubric
scores (a node NotReady, the master left tainted, a pod IP that does not answer...).

The outputs are kubectl's answers to verify's commands, as one reply table. It
drives both the in-process `ReplayTransport` (hand-in tests: verify's real collect()
writes the evidence) and the stub kubectl of the sshd hosts (live tests), so the two
flows grade the same recorded clusters. `expected_scores` says what each variant is
worth, from the rubric's points and the variant's definition alone.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubelab.grade.rubric import Rubric, points
from kubelab.verify import Expected
from kubelab.verify.collect import NGINX_APP
from kubelab.verify.expect import CLUSTER, OWN, PROBE
from kubelab.verify.provenance import MARKERS_SCRIPT
from tests.support.captures import curl_stdout, dump_documents, fixture, read_json

# What `invoke verify --exercise 2` collects (labs/exercises/2.yaml's checks).
EXERCISE_2_PHASES = (CLUSTER, OWN, PROBE)
OWN_REPLICAS = 2  # the manual's --replicas=2

DUMP = "kubeadm-v1.21.0-1cp-2workers-Ready-calico.cluster-info-dump.json"
NODES = "nodes-kubeadm-v1.21.0-1cp-2workers-Ready.extract.json"
NOT_READY_NODES = "nodes-kubeadm-v1.20.5-3nodes-NotReady.extract.json"
SERVICE = "service-minikube-nginx-NodePort.extract.json"
ENDPOINTS = "endpointslist-k3s-v1.33-notready-addresses.json"
WELCOME = "nginx-1.21.2-to-1.29.5-welcome-index.html"
# The capture's two nodes the exercise keeps, and the roles and machine names they take.
KEEP = (("k8s-controller1", "master", "master"), ("k8s-worker1", "node", "node1"))


@dataclass(frozen=True)
class Variant:
    """How one student's cluster differs from a fully working one."""

    named: bool = True  # node names carry the student ID
    not_ready: tuple[int, ...] = ()  # node indexes flipped to Ready=False
    master_tainted: bool = False  # the manual's untaint step skipped
    pods_down: int = 0  # nginx pod IPs (from the last) that do not answer
    nodeport_down: tuple[int, ...] = ()  # node indexes whose NodePort does not answer
    monitoring: bool = False  # a Weave Scope pod runs
    cluster_of: str | None = None  # hand in another student's cluster (shared identity)
    # The student made their own nginx (Deployment "nginx" in default, 2 replicas, a
    # NodePort Service), as the manual's step 10 asks; False: verify ran without it.
    own: bool = True


@dataclass(frozen=True)
class LabNode:
    name: str  # the Kubernetes node name (the VM's hostname)
    role: str
    ip: str
    machine: str


@dataclass
class Cluster:
    student: str  # who hands it in
    owner: str  # whose cluster it is (the student, unless Variant.cluster_of)
    variant: Variant
    nodes: list[LabNode]
    replies: list[dict[str, Any]]  # kubectl answers: {"args": glob, "text": ..., "rc": ...}
    answering: set[tuple[str, int]]  # (address, port) where nginx answers
    pod_ips: list[str]
    cluster_ip: str
    namespace: str
    nodeport: int
    cni: str = "calico"
    pod_cidr: str = "172.16.0.0/16"
    kubernetes_version: str = "1.21.0"
    extra: dict[str, Any] = field(default_factory=dict)

    def expected(self) -> Expected:
        return Expected(
            nodes=tuple((n.name, n.role, n.ip, n.machine) for n in self.nodes),
            kubernetes_version=self.kubernetes_version,
            pod_cidr=self.pod_cidr,
            namespace=self.namespace,
            nodeport=self.nodeport,
            cni=self.cni,
            student_id=self.student,
            phases=EXERCISE_2_PHASES,
        )

    def answer(self, args: Sequence[str]) -> tuple[int, str, str]:
        """kubectl's (rc, stdout, stderr) for these arguments, as the stub kubectl replays."""
        joined = " ".join(args)
        for reply in self.replies:
            if fnmatch.fnmatchcase(joined, reply["args"]):
                return int(reply.get("rc") or 0), reply.get("text") or "", reply.get("stderr", "")
        return 1, "", f"no recorded reply for: {joined}\n"


def _uid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "kubelab-grade-test/" + "/".join(parts)))


def node_name(base: str, student: str, named: bool) -> str:
    return f"{base}-{student.lower()}" if named else base


def derive_cluster(
    student: str,
    index: int,
    variant: Variant = Variant(),
    *,
    node_ips: Sequence[str] = ("192.168.56.10", "192.168.56.11"),
    namespace: str = "kubelab-verify",
    nodeport: int = 30080,
    owner_index: int | None = None,
) -> Cluster:
    """Student `student`'s cluster: the capture renamed, re-addressed and varied.

    `index` picks the student's own pod and Service addresses (distinct per student,
    so one network namespace can hold a whole class). With `variant.cluster_of`, the
    cluster is that student's (its names, IDs and addresses): `owner_index` is theirs.
    """
    owner = variant.cluster_of or student
    k = owner_index if variant.cluster_of else index
    assert k is not None
    dump = {kind: doc for kind, (doc, _) in dump_documents(DUMP).items()}
    captured = {n["metadata"]["name"]: n for n in read_json(NODES)["items"]}
    names = {old: node_name(machine, owner, variant.named) for old, _, machine in KEEP}
    nodes = [
        LabNode(names[old], role, node_ips[i], machine)
        for i, (old, role, machine) in enumerate(KEEP)
    ]

    # nodes.json: the two kept nodes, renamed, on the lab addresses, with IDs of their own.
    node_list = read_json(NODES)
    node_list["items"] = []
    not_ready = read_json(NOT_READY_NODES)["items"][0]
    for i, (old, role, _) in enumerate(KEEP):
        node = copy.deepcopy(captured[old])
        meta, status, spec = node["metadata"], node["status"], node["spec"]
        meta["name"] = names[old]
        meta["uid"] = _uid(owner, old, "uid")
        meta.setdefault("labels", {})["kubernetes.io/hostname"] = names[old]
        status["addresses"] = [
            {"type": "InternalIP", "address": node_ips[i]},
            {"type": "Hostname", "address": names[old]},
        ]
        info = status["nodeInfo"]
        info["bootID"] = _uid(owner, old, "boot")
        info["machineID"] = uuid.UUID(_uid(owner, old, "machine")).hex
        info["systemUUID"] = _uid(owner, old, "system")
        spec["podCIDR"] = f"172.16.{2 * k + i}.0/24"
        spec["podCIDRs"] = [spec["podCIDR"]]
        if role == "master" and not variant.master_tainted:
            # The manual's `kubectl taint nodes MASTER node-role.kubernetes.io/master-`.
            spec.pop("taints", None)
        if i in variant.not_ready:
            # The Ready condition of a real NotReady node (the v1.20.5 capture).
            ready = next(c for c in not_ready["status"]["conditions"] if c["type"] == "Ready")
            status["conditions"] = [
                copy.deepcopy(ready) if c["type"] == "Ready" else c for c in status["conditions"]
            ]
        node_list["items"].append(node)

    # pods.json: the kube-system pods of the kept nodes, on the renamed nodes.
    pod_list = copy.deepcopy(dump["PodList"])
    kept = []
    for pod in pod_list["items"]:
        where = pod["spec"].get("nodeName")
        if where == "k8s-worker2":
            if not pod["metadata"]["name"].startswith("coredns-"):
                continue  # a DaemonSet pod of the dropped node goes with it
            where = "k8s-worker1"  # CoreDNS is rescheduled onto the remaining worker
        pod["spec"]["nodeName"] = names[where]
        meta = pod["metadata"]
        meta["name"] = meta["name"].replace("k8s-controller1", names["k8s-controller1"])
        meta["uid"] = _uid(owner, "pod", meta["name"])
        kept.append(pod)
    coredns = [p for p in kept if p["metadata"]["name"].startswith("coredns-")]
    if variant.monitoring:
        # Weave Scope's app pod, standing on a ready CoreDNS pod of the capture.
        scope = copy.deepcopy(coredns[0])
        scope["metadata"].update(
            name="weave-scope-app-6c8b5f9d4-x2x7q",
            namespace="weave",
            labels={"app": "weave-scope", "name": "weave-scope-app"},
            uid=_uid(owner, "pod", "weave-scope-app"),
        )
        kept.append(scope)
    pod_list["items"] = kept

    # verify's nginx: the capture's CoreDNS Deployment and pods stand in for it, one
    # pod per schedulable node (the master only when untainted).
    schedulable = [
        i for i, (_, role, _) in enumerate(KEEP) if role != "master" or not variant.master_tainted
    ]
    deployment = copy.deepcopy(
        next(d for d in dump["DeploymentList"]["items"] if d["metadata"]["name"] == "coredns")
    )
    deployment["metadata"].update(
        name="nginx", namespace=namespace, labels={"app.kubernetes.io/name": NGINX_APP}
    )
    deployment["spec"]["replicas"] = len(schedulable)
    for key in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"):
        deployment["status"][key] = len(schedulable)
    nginx_pods = {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": [],
    }
    pod_ips = []
    for n, i in enumerate(schedulable):
        pod = copy.deepcopy(coredns[n % len(coredns)])
        ip = f"172.16.{2 * k + i}.10"
        pod_ips.append(ip)
        pod["metadata"].update(
            name=f"nginx-7d9c8b6f5-{n}{k:03d}",
            namespace=namespace,
            labels={"app.kubernetes.io/name": NGINX_APP},
            uid=_uid(owner, "nginx", str(n)),
        )
        pod["spec"]["nodeName"] = nodes[i].name
        pod["status"].update(podIP=ip, podIPs=[{"ip": ip}], hostIP=nodes[i].ip)
        nginx_pods["items"].append(pod)

    service = read_json(SERVICE)
    cluster_ip = f"10.96.{k // 200}.{k % 200 + 20}"
    service["metadata"].update(namespace=namespace, uid=_uid(owner, "service"))
    service["spec"].update(
        clusterIP=cluster_ip,
        clusterIPs=[cluster_ip],
        selector={"app.kubernetes.io/name": NGINX_APP},
    )
    service["spec"]["ports"][0]["nodePort"] = nodeport
    endpoints = copy.deepcopy(
        next(e for e in read_json(ENDPOINTS)["items"] if e["subsets"][0].get("addresses"))
    )
    endpoints["metadata"].update(name="nginx", namespace=namespace)
    endpoints["subsets"][0]["addresses"] = [
        {
            "ip": p["status"]["podIP"],
            "nodeName": p["spec"]["nodeName"],
            "targetRef": {
                "kind": "Pod",
                "namespace": namespace,
                "name": p["metadata"]["name"],
                "uid": p["metadata"]["uid"],
            },
        }
        for p in nginx_pods["items"]
    ]
    endpoints["subsets"][0]["ports"] = [{"port": 80, "protocol": "TCP"}]

    # The student's own nginx (step 10): the same stand-in, in namespace default with the
    # label `kubectl create deployment` gives, 2 replicas spread over the schedulable
    # nodes (both on the node when the master keeps its taint), and its NodePort.
    own_deployment = copy.deepcopy(deployment)
    own_deployment["metadata"].update(namespace="default", labels={"app": "nginx"})
    own_deployment["spec"]["selector"] = {"matchLabels": {"app": "nginx"}}
    own_deployment["spec"]["replicas"] = OWN_REPLICAS
    own_pods, own_ips = [], []
    for n in range(OWN_REPLICAS):
        i = schedulable[n % len(schedulable)]
        pod = copy.deepcopy(coredns[n % len(coredns)])
        ip = f"172.16.{2 * k + i}.{20 + n}"
        own_ips.append(ip)
        pod["metadata"].update(
            name=f"nginx-5c8d7b9f6-{n}{k:03d}",
            namespace="default",
            labels={"app": "nginx"},
            uid=_uid(owner, "own-nginx", str(n)),
        )
        pod["spec"]["nodeName"] = nodes[i].name
        pod["status"].update(podIP=ip, podIPs=[{"ip": ip}], hostIP=nodes[i].ip)
        own_pods.append(pod)
    own_service = read_json(SERVICE)
    own_service["metadata"].update(namespace="default", uid=_uid(owner, "own-service"))
    own_service["spec"]["ports"][0]["nodePort"] = nodeport + 1
    if variant.own:
        pod_list["items"] = [*pod_list["items"], *own_pods]
    deployments = {"apiVersion": "v1", "kind": "List", "items": [own_deployment] * variant.own}
    services = {"apiVersion": "v1", "kind": "List", "items": [own_service] * variant.own}

    apiserver = next(
        p for p in dump["PodList"]["items"] if p["metadata"]["name"].startswith("kube-apiserver-")
    )
    git = apiserver["spec"]["containers"][0]["image"].rsplit(":", 1)[1]
    major, minor = re.match(r"v(\d+)\.(\d+)", git).groups()  # type: ignore[union-attr]
    info = node_list["items"][0]["status"]["nodeInfo"]
    # No capture holds `kubectl get --raw /version` or the kube-system Namespace: both
    # are derived, the version from the apiserver image, the namespace with a UID of
    # the cluster's own.
    version = {
        "major": major,
        "minor": minor,
        "gitVersion": git,
        "platform": f"{info['operatingSystem']}/{info['architecture']}",
    }
    kube_system = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "kube-system", "uid": _uid(owner, "kube-system")},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }

    def doc(data: Any) -> str:
        return json.dumps(data, indent=4) + "\n"

    replies: list[dict[str, Any]] = [
        {"args": "*get --raw /version", "text": doc(version)},
        {"args": "*get nodes -o json", "text": doc(node_list)},
        {"args": "*get pods -A -o json", "text": doc(pod_list)},
        {"args": "*get namespace kube-system -o json", "text": doc(kube_system)},
        {"args": f"*get namespace {namespace} --ignore-not-found -o name", "text": ""},
        {"args": f"*delete namespace {namespace} *", "text": f'namespace "{namespace}" deleted\n'},
        {
            "args": "*apply -f -",
            "text": f"namespace/{namespace} created\ndeployment.apps/nginx created\n"
            "service/nginx created\n",
        },
        {
            "args": f"*-n {namespace} rollout status deployment/nginx *",
            "text": 'deployment "nginx" successfully rolled out\n',
        },
        {"args": f"*-n {namespace} get deployment nginx -o json", "text": doc(deployment)},
        {"args": f"*-n {namespace} get pods -l *", "text": doc(nginx_pods)},
        {"args": f"*-n {namespace} get service nginx -o json", "text": doc(service)},
        {"args": f"*-n {namespace} get endpoints nginx -o json", "text": doc(endpoints)},
        {"args": "*get deployments -A -o json", "text": doc(deployments)},
        {"args": "*get services -A -o json", "text": doc(services)},
    ]
    answering = {(ip, 80) for ip in pod_ips[: len(pod_ips) - variant.pods_down]}
    answering |= {(ip, 80) for ip in own_ips[: len(own_ips) - variant.pods_down]}
    answering |= {
        (n.ip, nodeport + 1) for i, n in enumerate(nodes) if i not in variant.nodeport_down
    }
    answering.add((cluster_ip, 80))
    answering |= {(n.ip, nodeport) for i, n in enumerate(nodes) if i not in variant.nodeport_down}
    return Cluster(
        student=student,
        owner=owner,
        variant=variant,
        nodes=nodes,
        replies=replies,
        answering=answering,
        pod_ips=pod_ips,
        cluster_ip=cluster_ip,
        namespace=namespace,
        nodeport=nodeport,
    )


def welcome_page() -> str:
    return fixture(WELCOME).read_text()


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str = ""


class ReplayTransport:
    """The transport boundary for in-process collect(): the cluster's recorded answers."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.calls: list[tuple[str, list[str]]] = []
        self.welcome = welcome_page()

    def run(
        self,
        node: str,
        cmd: str,
        *args: str,
        timeout: float = 60.0,
        stdin: str | None = None,
        phase: str | None = None,
    ) -> Result:
        argv = [cmd, *args]
        self.calls.append((node, argv))
        if argv[0] == "curl":
            url = argv[-1]
            host, port = re.match(r"http://\[?([^\]/]+?)\]?:(\d+)/", url).groups()  # type: ignore[union-attr]
            if (host, int(port)) in self.cluster.answering:
                return Result(0, curl_stdout(self.welcome, 200))
            return Result(
                7,
                curl_stdout("", 0),
                f"curl: (7) Failed to connect to {host} port {port}: Connection refused\n",
            )
        if argv[0] == "hostname":
            return Result(0, next(n.name for n in self.cluster.nodes if n.machine == node) + "\n")
        if argv[-1] == MARKERS_SCRIPT:
            return Result(0, "")  # VMs kubelab never provisioned: no stage markers
        assert "kubectl" in argv, argv
        rc, out, err = self.cluster.answer(argv[argv.index("kubectl") + 1 :])
        return Result(rc, out, err)


# --- what each variant is worth ---------------------------------------------------


def item_fractions(variant: Variant, slots: int = 2) -> dict[str, float]:
    """Each exercise-2 item's fraction for a variant, from the variant's definition.

    The student's own nginx counts by its parts (own-deployment: replicas, master,
    node; a part per pod IP and per node's NodePort); without it, nothing. verify's
    probe is the network item, one part per check of it.
    """
    network_ok = [variant.pods_down == 0, True, not variant.nodeport_down]
    # own-deployment's parts: 2+ replicas, a pod on the master, a pod on a node.
    own_parts = [True, not variant.master_tainted, True]
    own = float(variant.own)
    return {
        "cluster-ready": (slots - len(variant.not_ready)) / slots,
        "own-deployment": own * sum(own_parts) / len(own_parts),
        "own-pod-ips": own * (OWN_REPLICAS - min(variant.pods_down, OWN_REPLICAS)) / OWN_REPLICAS,
        "own-nodeport": own * (slots - len(variant.nodeport_down)) / slots,
        "network": sum(network_ok) / len(network_ok),
        "monitoring-ui": 1.0 if variant.monitoring else 0.0,
    }


def expected_scores(rubric: Rubric, variant: Variant) -> dict[str, float]:
    fractions = item_fractions(variant, rubric.requires.nodes)
    assert set(fractions) == set(rubric.item_ids), "the test knows every item of the rubric"
    scores = {item.id: points(item.points * fractions[item.id]) for item in rubric.items}
    scores["total"] = points(sum(scores.values()))
    return scores


def reply_files(cluster: Cluster, folder: Path) -> list[Mapping[str, Any]]:
    """The reply table with each answer in a file (for the sshd hosts' stub kubectl)."""
    folder.mkdir(parents=True, exist_ok=True)
    table = []
    for number, reply in enumerate(cluster.replies):
        entry = dict(reply)
        text = entry.pop("text", None)
        if text:
            path = folder / f"{number:02d}.out"
            path.write_text(text)
            entry["file"] = path
        else:
            entry["text"] = ""
        table.append(entry)
    return table
