"""`invoke verify` end to end, against real sshd hosts at the lab addresses.

Three hosts (master, node1, node2 at 192.168.56.10-12) run in a network namespace of
the test's own (tests/support/netns_hosts.py). The master's stub kubectl replays a
cluster derived from real captures in ../shared/fixtures: the v1.22.8 flannel NodeList
and the v1.21.0 kube-system PodList, renamed onto the lab's nodes and addresses and
moved to the pinned version; Service and Endpoints from their captures. A real nginx
(the Debian package) serves the welcome page on every nginx pod IP, on the Service's
ClusterIP and on the NodePort of every node address, so every curl that verify sends
over SSH really crosses the namespace's network.

The real `invoke verify` runs inside the namespace (the client must: no lab address is
ever reached from the machine's own namespace). A healthy run passes; with nginx
stopped on one pod address, exactly the pod-ips check fails and names that address;
`invoke verify --evidence` on either saved folder, in the machine's own namespace
(it contacts nothing), reaches the same verdicts.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
import os
import re
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubelab import REPO_ROOT, lifecycle
from kubelab.plan import load_plan
from kubelab.verify.checks import CHECKS
from kubelab.verify.collect import DEFAULT_KUBECTL, NGINX_APP, render_manifest
from kubelab.verify.evidence import (
    COMMANDS,
    NODES,
    PODS,
    curl_record_path,
    http_url,
    is_welcome_page,
)
from kubelab.verify.expect import DEFAULT_PHASES, Expected, ExpectedNode
from kubelab.verify.lab import expected_from_plan
from tests.support.netns_hosts import (
    WELCOME_ROOT,
    NetnsHosts,
    Reply,
    missing_requirements,
)
from tests.verify.verify_captures import (
    DUMP_READY,
    ENDPOINTS_LIST,
    SERVICE_NODEPORT,
    dump_documents,
    read_json,
    role_of,
    version_document,
)

pytestmark = [pytest.mark.integration, pytest.mark.netns]

CONFIG = REPO_ROOT / "tests" / "data" / "verify_netns" / "lab.yaml"
# The flannel cluster of the captures: 1 master + 2 workers, all Ready.
NODES_CAPTURE = "nodes-kubeadm-v1.22.8-flannel-1master-2workers.TRANSCRIBED.json"
# The Service's ClusterIP in the lab's service CIDR (10.96.0.0/12), where a real
# nginx listens: in the namespace it stands for kube-proxy's rule.
CLUSTER_IP = "10.96.100.10"
# verify's nginx pod on a node gets this host number in the node's podCIDR.
NGINX_POD_HOST = 5
# flannel gives .1 of a node's podCIDR to cni0; captured pods are renumbered from .2.
FIRST_POD_HOST = 2
INVOKE = Path(sys.executable).with_name("invoke")
RUN_TIMEOUT = 300


def _uid(*parts: str) -> str:
    """A UID of the derived cluster's own, stable from run to run."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "kubelab-verify-netns/" + "/".join(parts)))


def _rewrite(doc: Any, swaps: dict[str, str]) -> Any:
    """Every string in `doc` with each whole name or address in `swaps` replaced.

    "Whole": not followed by a letter, digit or underscore, and not preceded by one
    or a dot, so 10.10.1.31 does not touch 10.10.1.310 and k8s1 not k8s10.
    """
    if not swaps:
        return doc
    pattern = re.compile(
        r"(?<![\w.])("
        + "|".join(re.escape(old) for old in sorted(swaps, key=len, reverse=True))
        + r")(?!\w)"
    )

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item) for item in value]
        if isinstance(value, str):
            return pattern.sub(lambda m: swaps[m.group(1)], value)
        return value

    return walk(doc)


def _internal_ip(node: dict[str, Any]) -> str:
    return next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")


def _lab_order(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The captured nodes in the lab config's order: the master first, then the workers."""
    return sorted(nodes, key=lambda n: (role_of(n) != "master", n["metadata"]["name"]))


def _node_swaps(captured: list[dict[str, Any]], lab: tuple[ExpectedNode, ...]) -> dict[str, str]:
    """Captured node name and InternalIP -> the lab node's name and private IP."""
    ordered = _lab_order(captured)
    assert [role_of(n) for n in ordered] == [n.role for n in lab], "topology differs"
    swaps = {}
    for node, want in zip(ordered, lab, strict=True):
        swaps[node["metadata"]["name"]] = want.name
        swaps[_internal_ip(node)] = want.private_ip
    return swaps


def _resource(obj: dict[str, Any]) -> str:
    """How kubectl names an object it applied: kind[.group]/name (deployment.apps/nginx)."""
    group, _, _ = obj["apiVersion"].rpartition("/")
    return f"{obj['kind'].lower()}{'.' + group if group else ''}/{obj['metadata']['name']}"


def _kubectl_json(doc: Any) -> str:
    # `kubectl get -o json` indents by four spaces and ends with a newline.
    return json.dumps(doc, indent=4, ensure_ascii=False) + "\n"


@dataclass
class Cluster:
    """What the master's kubectl answers, and the addresses nginx must serve."""

    expected: Expected
    image: str
    replies: list[Reply]
    served: dict[str, Path]  # evidence file -> the file the stub printed for it
    nginx_pods: dict[str, tuple[str, str]]  # node -> (pod name, pod IP)
    cluster_ip: str
    manifest: str

    @property
    def pod_ips(self) -> list[str]:
        return [ip for _, ip in self.nginx_pods.values()]

    @property
    def listeners(self) -> list[tuple[str, int]]:
        """Every address:port a working cluster answers on, from a node's point of view."""
        return [
            *((ip, 80) for ip in self.pod_ips),
            (self.cluster_ip, 80),
            *((n.private_ip, self.expected.nodeport) for n in self.expected.nodes),
        ]


def derive_nodes(expected: Expected) -> dict[str, Any]:
    """The v1.22.8 flannel NodeList on the lab's names, addresses and pinned version.

    The master's taint is removed, as the lab manual's exercise 2 does (`kubectl taint
    nodes master node-role.kubernetes.io/master-`), so nginx runs on all three.
    """
    doc = read_json(NODES_CAPTURE)
    captured_version = doc["items"][0]["status"]["nodeInfo"]["kubeletVersion"]
    swaps = _node_swaps(doc["items"], expected.nodes)
    swaps[captured_version] = f"v{expected.kubernetes_version}"
    doc = _rewrite(doc, swaps)
    doc["items"] = _lab_order(doc["items"])
    for node in doc["items"]:
        if role_of(node) == "master":
            node["spec"].pop("taints", None)
    return doc


def derive_pods(expected: Expected, nodes: dict[str, Any]) -> dict[str, Any]:
    """The v1.21.0 kube-system PodList on the lab's nodes, version and pod network.

    That cluster ran calico. No JSON capture of a flannel pod exists, so its
    calico-node DaemonSet pods (one per node, Running and Ready) stand in for
    flannel's: named and placed as flannel v0.26.7's kube-flannel.yml does (DaemonSet
    kube-flannel-ds in namespace kube-flannel, labels app=flannel, tier=node); the
    rest of each pod is calico's. calico-kube-controllers has no flannel counterpart
    and is dropped. Pods on the pod network get addresses in their node's podCIDR.
    """
    docs = dump_documents(DUMP_READY)
    captured_nodes, pods = docs["NodeList"][0], docs["PodList"][0]
    apiserver = next(
        p for p in pods["items"] if p["metadata"]["name"].startswith("kube-apiserver-")
    )
    captured_version = apiserver["spec"]["containers"][0]["image"].rsplit(":", 1)[1]
    manager = next(
        p for p in pods["items"] if p["metadata"]["name"].startswith("kube-controller-manager-")
    )
    captured_cidr = next(
        a.split("=", 1)[1]
        for a in manager["spec"]["containers"][0]["command"]
        if a.startswith("--cluster-cidr=")
    )
    swaps = _node_swaps(captured_nodes["items"], expected.nodes)
    swaps[captured_version] = f"v{expected.kubernetes_version}"
    swaps[captured_cidr] = expected.pod_cidr
    host_ips = set(swaps.values())
    pod_cidr = {n["metadata"]["name"]: n["spec"]["podCIDR"] for n in nodes["items"]}

    kept = []
    on_node: dict[str, int] = {}
    for pod in _rewrite(pods, swaps)["items"]:
        meta = pod["metadata"]
        if meta["name"].startswith("calico-kube-controllers-"):
            continue
        if meta["name"].startswith("calico-node-"):
            suffix = meta["name"].removeprefix("calico-node-")
            labels = {k: v for k, v in meta["labels"].items() if k != "k8s-app"}
            meta.update(
                name=f"kube-flannel-ds-{suffix}",
                generateName="kube-flannel-ds-",
                namespace="kube-flannel",
                labels={"app": "flannel", "tier": "node", **labels},
            )
            meta["ownerReferences"][0]["name"] = "kube-flannel-ds"
        old_ip = pod["status"].get("podIP")
        if old_ip and old_ip not in host_ips:
            node = pod["spec"]["nodeName"]
            number = on_node.get(node, FIRST_POD_HOST)
            on_node[node] = number + 1
            network = ipaddress.ip_network(pod_cidr[node])
            pod = _rewrite(pod, {old_ip: str(network.network_address + number)})
        kept.append(pod)
    pods = copy.deepcopy(pods)
    pods["items"] = kept
    return pods


def derive_cluster(expected: Expected, image: str, folder: Path) -> Cluster:
    """Every answer of the master's kubectl, written as files into `folder`."""
    docs = dump_documents(DUMP_READY)
    namespace = expected.namespace
    nodes = derive_nodes(expected)
    pods = derive_pods(expected, nodes)
    version = version_document(nodes, pods)
    schedulable = [n["metadata"]["name"] for n in nodes["items"] if not n["spec"].get("taints")]
    by_name = {n.name: n for n in expected.nodes}

    # verify's nginx: the capture's CoreDNS Deployment and pods (Ready, on the pod
    # network) stand in for it, one pod per schedulable node.
    deployment = copy.deepcopy(
        next(d for d in docs["DeploymentList"][0]["items"] if d["metadata"]["name"] == "coredns")
    )
    labels = {"app.kubernetes.io/name": NGINX_APP}
    deployment["metadata"].update(
        name="nginx", namespace=namespace, uid=_uid("deployment"), labels=labels
    )
    deployment["spec"]["replicas"] = len(schedulable)
    deployment["spec"]["selector"] = {"matchLabels": labels}
    for key in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"):
        deployment["status"][key] = len(schedulable)
    coredns = [
        p for p in docs["PodList"][0]["items"] if p["metadata"]["name"].startswith("coredns-")
    ]
    template_hash = coredns[0]["metadata"]["labels"]["pod-template-hash"]
    nginx_pods: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": [],
    }
    placed: dict[str, tuple[str, str]] = {}
    for index, node in enumerate(schedulable):
        pod = copy.deepcopy(coredns[index % len(coredns)])
        network = ipaddress.ip_network(
            next(n for n in nodes["items"] if n["metadata"]["name"] == node)["spec"]["podCIDR"]
        )
        ip = str(network.network_address + NGINX_POD_HOST)
        suffix = pod["metadata"]["name"].rsplit("-", 1)[1]
        name = f"nginx-{template_hash}-{suffix[:4]}{index}"
        pod["metadata"].update(
            name=name,
            generateName=f"nginx-{template_hash}-",
            namespace=namespace,
            uid=_uid("pod", name),
            labels={**labels, "pod-template-hash": template_hash},
            annotations={},
        )
        pod["metadata"]["ownerReferences"][0]["name"] = f"nginx-{template_hash}"
        pod["spec"]["nodeName"] = node
        pod["status"].update(podIP=ip, podIPs=[{"ip": ip}], hostIP=by_name[node].private_ip)
        nginx_pods["items"].append(pod)
        placed[node] = (name, ip)

    service = read_json(SERVICE_NODEPORT)
    service["metadata"].update(
        namespace=namespace, uid=_uid("service"), labels={"app.kubernetes.io/managed-by": "kubelab"}
    )
    service["spec"].update(clusterIP=CLUSTER_IP, clusterIPs=[CLUSTER_IP], selector=labels)
    service["spec"]["ports"][0]["nodePort"] = expected.nodeport
    # Endpoints: the k3s capture's object, its addresses pointed at the nginx pods.
    endpoints = copy.deepcopy(
        next(e for e in read_json(ENDPOINTS_LIST)["items"] if e["subsets"][0].get("addresses"))
    )
    endpoints["metadata"].update(name="nginx", namespace=namespace, uid=_uid("endpoints"))
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

    folder.mkdir(parents=True, exist_ok=True)
    served: dict[str, Path] = {}

    def serve(rel: str, doc: Any) -> Path:
        path = folder / rel.replace("/", "-")
        path.write_text(_kubectl_json(doc), encoding="utf-8")
        served[rel] = path
        return path

    manifest = render_manifest(namespace, image, len(schedulable), expected.nodeport)
    applied = "".join(f"{_resource(obj)} created\n" for obj in yaml.safe_load_all(manifest) if obj)
    kubeconfig = " ".join(DEFAULT_KUBECTL[2:])  # after `sudo kubectl`
    ns = f"{kubeconfig} -n {namespace}"
    # No capture holds a Namespace object, so `get namespace kube-system` has no reply:
    # the stub answers rc 1, and meta.json's cluster identity has no kube-system UID.
    replies = [
        Reply(f"{kubeconfig} get --raw /version", file=serve("version.json", version)),
        Reply(f"{kubeconfig} get nodes -o json", file=serve(NODES, nodes)),
        Reply(f"{kubeconfig} get pods -A -o json", file=serve(PODS, pods)),
        Reply(
            f"{kubeconfig} delete namespace {namespace} *",
            text=f'namespace "{namespace}" deleted\n',
        ),
        Reply(f"{kubeconfig} get namespace {namespace} --ignore-not-found -o name", text=""),
        Reply(f"{kubeconfig} apply -f -", text=applied),
        Reply(
            f"{ns} rollout status deployment/nginx *",
            text='deployment "nginx" successfully rolled out\n',
        ),
        Reply(
            f"{ns} get deployment nginx -o json", file=serve("nginx/deployment.json", deployment)
        ),
        Reply(f"{ns} get pods -l *", file=serve("nginx/pods.json", nginx_pods)),
        Reply(f"{ns} get service nginx -o json", file=serve("nginx/service.json", service)),
        Reply(f"{ns} get endpoints nginx -o json", file=serve("nginx/endpoints.json", endpoints)),
    ]
    return Cluster(expected, image, replies, served, placed, CLUSTER_IP, manifest)


# --- running invoke verify ---------------------------------------------------------


@dataclass
class Run:
    """One `invoke verify` inside the namespace, and what the hosts saw of it."""

    name: str
    proc: subprocess.CompletedProcess[str]
    wall: float
    evidence: Path
    json_file: Path
    junit_file: Path
    connections: dict[str, int]  # host -> SSH logins accepted during the run
    calls: dict[str, list[dict[str, Any]]]  # host -> kubectl calls during the run
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def commands(self) -> list[dict[str, Any]]:
        lines = (self.evidence / COMMANDS).read_text().splitlines()
        return [json.loads(line) for line in lines if line]

    def figures(self) -> str:
        commands = self.commands()
        per_node = {n: sum(c["node"] == n for c in commands) for n in self.connections}
        return (
            f"verify ({self.name}): {self.wall:.2f} s wall, {len(commands)} commands "
            f"({', '.join(f'{n} {c}' for n, c in per_node.items())}) over "
            f"{sum(self.connections.values())} SSH connections"
        )


def _accepted(hosts: NetnsHosts) -> dict[str, int]:
    """SSH logins each host's sshd has accepted so far (its log, at LogLevel INFO)."""
    marker = f"Accepted publickey for {hosts.user} "
    return {name: h.log.read_text().count(marker) for name, h in hosts.hosts.items()}


def run_verify(hosts: NetnsHosts, work: Path, name: str, ssh_config: Path | None) -> Run:
    """`ssh_config` None: the one `invoke up` keeps in the lab folder (there is no
    Vagrant here: a `vagrant ssh-config` would fail the run)."""
    out = work / name
    out.mkdir()
    argv = [
        str(INVOKE), "verify",
        "--config", str(CONFIG),
        "--lab-dir", str(work / "lab"),
        *(["--ssh-config", str(ssh_config)] if ssh_config else []),
        "--evidence-out", str(out / "evidence"),
        "--json", str(out / "results.json"),
        "--junit", str(out / "results.xml"),
    ]  # fmt: skip
    logins = _accepted(hosts)
    calls = {n: len(h.call_records()) for n, h in hosts.hosts.items()}
    started = time.monotonic()
    proc = hosts.run_in_ns(
        argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    wall = time.monotonic() - started
    after = _accepted(hosts)
    run = Run(
        name=name,
        proc=proc,
        wall=wall,
        evidence=out / "evidence",
        json_file=out / "results.json",
        junit_file=out / "results.xml",
        connections={n: after[n] - logins[n] for n in after},
        calls={n: h.call_records()[calls[n] :] for n, h in hosts.hosts.items()},
    )
    if run.json_file.is_file():
        data = json.loads(run.json_file.read_text())
        run.results = {r["id"]: r for r in data["results"]}
    return run


def reevaluate(folder: Path, out: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`invoke verify --evidence` in the machine's own namespace: it contacts nothing."""
    proc = subprocess.run(
        [str(INVOKE), "verify", "--evidence", str(folder), "--json", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    results = json.loads(out.read_text())["results"] if out.is_file() else []
    return proc, {r["id"]: r for r in results}


@dataclass
class Lab:
    cluster: Cluster
    healthy: Run
    pod_down: Run
    down_ip: str
    down_node: str


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    why = missing_requirements(nginx=True)
    if why:
        pytest.skip(why)
    if not INVOKE.is_file():
        pytest.skip(f"invoke is not installed beside {sys.executable}")
    work = tmp_path_factory.mktemp("verify-netns")
    plan = load_plan(CONFIG, {}, repo_root=REPO_ROOT, lab_dir=work / "lab")
    expected = expected_from_plan(plan)
    cluster = derive_cluster(expected, plan.mirror["nginx_image"], work / "served")
    addresses = [n.private_ip for n in expected.nodes]
    machines = [n.host for n in expected.nodes]
    with NetnsHosts("verify", addresses, names=machines) as hosts:
        hosts.set_replies(expected.masters[0].host, cluster.replies)
        for address, port in cluster.listeners:
            hosts.start_nginx(address, port)
        ssh_config = work / "ssh-config"
        ssh_config.write_text(hosts.ssh_config_text())
        healthy = run_verify(hosts, work, "healthy", ssh_config)
        # One nginx pod stops answering: the one on the first worker.
        down_node = expected.nodes[1].name
        down_ip = cluster.nginx_pods[down_node][1]
        hosts.stop_nginx(down_ip, 80)
        # This run finds the VMs as `invoke verify` does after `invoke up`: through the
        # ssh-config kept in the lab folder.
        lifecycle.ssh_config_path(plan).parent.mkdir(parents=True, exist_ok=True)
        lifecycle.ssh_config_path(plan).write_text(hosts.ssh_config_text())
        pod_down = run_verify(hosts, work, "pod-down", None)
        yield Lab(cluster, healthy, pod_down, down_ip, down_node)


def _explain(run: Run) -> str:
    return f"exit {run.proc.returncode}\n{run.proc.stdout[-4000:]}\n{run.proc.stderr[-4000:]}"


# --- the tests ---------------------------------------------------------------------


def test_verify_passes_end_to_end(lab: Lab) -> None:
    run, cluster, expected = lab.healthy, lab.cluster, lab.cluster.expected
    print(run.figures())
    assert run.proc.returncode == 0, _explain(run)
    default_checks = [c.id for c in CHECKS if c.phase in DEFAULT_PHASES and c.id != "dns"]
    assert list(run.results) == default_checks, _explain(run)
    failed = {c: r["detail"] for c, r in run.results.items() if not r["passed"]}
    assert not failed, failed
    assert f"{len(run.results)}/{len(run.results)} checks passed" in run.proc.stdout

    # nodes.json, pods.json and the nginx objects exactly as the stub printed them.
    for rel, served in cluster.served.items():
        assert (run.evidence / rel).read_bytes() == served.read_bytes(), rel

    # Every pod IP from every node, answered by the real nginx's welcome page.
    page = (WELCOME_ROOT / "index.html").read_bytes()
    assert is_welcome_page(page)
    for source in expected.nodes:
        for ip in cluster.pod_ips:
            record = json.loads(
                (run.evidence / curl_record_path("pod-ips", source.name, ip)).read_text()
            )
            assert record["url"] == http_url(ip, 80)
            assert (record["rc"], record["http_status"]) == (0, 200), record
            assert record["body_sha256"] == hashlib.sha256(page).hexdigest()
    curls = [c for c in run.commands() if c["argv"][0] == "curl"]
    pod_curls = {(c["node"], c["argv"][-1]) for c in curls if c["check"] == "pod-ips"}
    assert pod_curls == {
        (n.name, http_url(ip, 80)) for n in expected.nodes for ip in cluster.pod_ips
    }
    assert {c["node"] for c in curls if c["check"] == "cluster-ip"} == {
        n.name for n in expected.nodes
    }

    # The master's kubectl saw the manifest on stdin and, last, the namespace delete;
    # the workers' kubectl was never called.
    master = expected.masters[0].host
    calls = [" ".join(c["argv"]) for c in run.calls[master]]
    applies = [c for c in run.calls[master] if c["argv"][-3:] == ["apply", "-f", "-"]]
    assert len(applies) == 1
    assert applies[0]["stdin"].rstrip("\n") == cluster.manifest.rstrip("\n")
    assert (run.evidence / "nginx" / "manifest.yaml").read_text() == cluster.manifest
    deletes = [i for i, c in enumerate(calls) if f"delete namespace {expected.namespace} " in c]
    assert deletes and deletes[-1] > calls.index(" ".join(applies[0]["argv"]))
    assert calls[-1].endswith(f"get namespace {expected.namespace} --ignore-not-found -o name")
    assert all(not run.calls[n.host] for n in expected.nodes if n.role != "master")
    cleanup = json.loads((run.evidence / "cleanup.json").read_text())
    assert cleanup["delete"]["rc"] == 0 and cleanup["check"] == {
        "rc": 0, "stdout": "", "stderr": "", "error": None
    }  # fmt: skip

    # meta.json names the lab and the nodes' IDs from nodes.json.
    meta = json.loads((run.evidence / "meta.json").read_text())
    assert meta["finished"] and not meta["interrupted"] and meta["aborted"] is None
    assert meta["image"] == cluster.image
    nodes_doc = json.loads(cluster.served[NODES].read_text())
    assert [(n["name"], n["machine_id"]) for n in meta["cluster_identity"]["nodes"]] == [
        (n["metadata"]["name"], n["status"]["nodeInfo"]["machineID"]) for n in nodes_doc["items"]
    ]

    # JSON and JUnit written, and they agree.
    summary = json.loads(run.json_file.read_text())
    assert summary["passed"] is True and summary["summary"]["failed"] == 0
    suite = ET.parse(run.junit_file).getroot()
    assert suite.get("tests") == str(len(run.results)) and suite.get("failures") == "0"
    assert [c.get("name") for c in suite.iter("testcase")] == list(run.results)


def test_one_pod_ip_down_fails_exactly_the_pod_ips_check(lab: Lab) -> None:
    run = lab.pod_down
    print(run.figures())
    assert run.proc.returncode == 1, _explain(run)
    # It reached the hosts through the kept ssh-config, asking no Vagrant.
    assert "asking Vagrant" not in run.proc.stdout + run.proc.stderr, _explain(run)
    verdicts = {c: r["passed"] for c, r in run.results.items()}
    assert verdicts == {c: c != "pod-ips" for c in lab.healthy.results}, _explain(run)
    detail = run.results["pod-ips"]["detail"]
    pod_name, _ = lab.cluster.nginx_pods[lab.down_node]
    assert f"{lab.down_ip} ({pod_name} on {lab.down_node}) failed from " in detail
    assert all(n.name in detail for n in lab.cluster.expected.nodes)  # from every node
    others = [ip for ip in lab.cluster.pod_ips if ip != lab.down_ip]
    assert not any(ip in detail for ip in others), detail
    assert run.results["pod-ips"]["hint"]
    # The refused requests are evidence too: curl's exit code 7, no HTTP status.
    for source in lab.cluster.expected.nodes:
        rel = curl_record_path("pod-ips", source.name, lab.down_ip)
        record = json.loads((run.evidence / rel).read_text())
        assert (record["rc"], record["http_status"]) == (7, None), record
    suite = ET.parse(run.junit_file).getroot()
    failures = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failures == ["pod-ips"]


@pytest.mark.parametrize("which", ["healthy", "pod_down"])
def test_saved_evidence_reaches_the_same_verdicts(lab: Lab, which: str, tmp_path: Path) -> None:
    live: Run = getattr(lab, which)
    proc, again = reevaluate(live.evidence, tmp_path / "again.json")
    assert proc.returncode == live.proc.returncode, proc.stdout + proc.stderr
    assert list(again) == list(live.results)
    for check, result in live.results.items():
        keys = ("passed", "detail", "hint", "duration")
        assert {k: again[check][k] for k in keys} == {k: result[k] for k in keys}, check


def test_one_ssh_connection_per_node(lab: Lab) -> None:
    for run in (lab.healthy, lab.pod_down):
        print(run.figures())
        assert run.connections == {n.host: 1 for n in lab.cluster.expected.nodes}
        assert sum(run.connections.values()) == 3
        # Every command of the run went over those connections, none failed to start.
        assert all(c["error"] is None for c in run.commands())


def test_nodeport_is_curled_from_the_host_that_routes_to_the_lab(lab: Lab) -> None:
    # `invoke verify` ran inside the namespace, where every lab address is on a local
    # interface: the host can route to the lab network, so it curls the NodePort itself.
    run, expected = lab.healthy, lab.cluster.expected
    for node in expected.nodes:
        rel = curl_record_path("nodeport", "host", node.private_ip)
        record = json.loads((run.evidence / rel).read_text())
        assert record["url"] == http_url(node.private_ip, expected.nodeport)
        assert (record["rc"], record["http_status"]) == (0, 200)
    assert not any(c["check"] == "nodeport" and c["node"] != "host" for c in run.commands())


def test_student_hand_in_from_a_verify_run(lab: Lab, tmp_path: Path) -> None:
    # `invoke verify --exercise 2 --student ID` scores the run with the exercise's rubric and
    # writes the hand-in archive; here on a copy of the saved healthy run (no cluster contact).
    import shutil
    import tarfile

    folder = tmp_path / "run" / "evidence"
    shutil.copytree(lab.healthy.evidence, folder)
    proc = subprocess.run(
        [str(INVOKE), "verify", "--evidence", str(folder), "--exercise", "2", "--student", "s01"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "exercise 2: s01" in proc.stdout
    archive = tmp_path / "run" / "kubelab-ex2-s01.tar.gz"
    assert archive.is_file(), proc.stdout
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert any(n.endswith("report.json") for n in names)
    assert any(n.endswith("nodes.json") for n in names)
