"""Test helpers: read the real cluster captures and assemble evidence folders from them.

The captures live in ../shared/fixtures (SOURCES.md there says where each comes
from). Nothing here writes cluster output by hand: files are copied byte for
byte, and variants and expected values are derived from the captures' content.
The one exception is the shape of verify's own records (curl records,
cleanup.json), which are ours, built with the same functions collect uses.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubelab.verify.checks import CNI_PODS, internal_ip
from kubelab.verify.evidence import (
    CLEANUP,
    DEPLOYMENT,
    ENDPOINTS,
    NGINX_PODS,
    NODES,
    PODS,
    SERVICE,
    VERSION,
    curl_record,
    curl_record_path,
    http_url,
)
from kubelab.verify.expect import Expected
from tests.support.captures import FIXTURES as FIXTURES
from tests.support.captures import curl_stdout as curl_stdout
from tests.support.captures import dump_documents as dump_documents
from tests.support.captures import fixture as fixture
from tests.support.captures import read_json as read_json

# One cluster family: kubeadm v1.21.0, 1 control plane + 2 workers, all Ready (calico).
DUMP_READY = "kubeadm-v1.21.0-1cp-2workers-Ready-calico.cluster-info-dump.json"
NODES_READY = "nodes-kubeadm-v1.21.0-1cp-2workers-Ready.extract.json"
# NotReady families ("cni config uninitialized" / "cni plugin not initialized").
DUMP_NOTREADY_3 = "kubeadm-v1.20.5-3nodes-NotReady-nocni.cluster-info-dump.txt"
NODES_NOTREADY_3 = "nodes-kubeadm-v1.20.5-3nodes-NotReady.extract.json"
DUMP_NOTREADY_1 = "kubeadm-v1.28-1node-NotReady-cni-not-initialized.cluster-info-dump.txt"
NODES_NOTREADY_1 = "nodes-kubeadm-v1.28.14-1node-NotReady.extract.json"
SERVICE_NODEPORT = "service-minikube-nginx-NodePort.extract.json"
ENDPOINTS_LIST = "endpointslist-k3s-v1.33-notready-addresses.json"
WELCOME_PAGES = (
    "nginx-1.14.2-welcome-index.html",
    "nginx-1.21.2-to-1.29.5-welcome-index.html",
    "nginx-1.29.6-plus-welcome-index.html",
    "curl-nginx-welcome-minikube.extract.txt",
)


def _pod(pods: dict[str, Any], prefix: str) -> dict[str, Any]:
    return next(p for p in pods["items"] if p["metadata"]["name"].startswith(prefix))


def _command_flag(pod: dict[str, Any], flag: str) -> str:
    for arg in pod["spec"]["containers"][0]["command"]:
        if arg.startswith(f"--{flag}="):
            return arg.split("=", 1)[1]
    raise LookupError(flag)


def role_of(node: dict[str, Any]) -> str:
    labels = node["metadata"].get("labels") or {}
    control = ("node-role.kubernetes.io/master", "node-role.kubernetes.io/control-plane")
    return "master" if any(k in labels for k in control) else "node"


def expected_from_cluster(
    nodes: dict[str, Any], pods: dict[str, Any], daemonsets: dict[str, Any], **overrides: Any
) -> Expected:
    """What a lab config for this cluster would say, read off the capture.

    Node names, roles and IPs from the NodeList; the pinned version from the
    kube-apiserver image; the pod CIDR from kube-controller-manager's
    --cluster-cidr; the CNI from the DaemonSets (flannel, the lab's, when the
    cluster has none installed yet).
    """
    image = _pod(pods, "kube-apiserver-")["spec"]["containers"][0]["image"]
    cni = next(
        (
            name
            for name, prefix in CNI_PODS.items()
            if any(d["metadata"]["name"].startswith(prefix) for d in daemonsets["items"])
        ),
        "flannel",
    )
    values: dict[str, Any] = {
        "nodes": [(n["metadata"]["name"], role_of(n), internal_ip(n)) for n in nodes["items"]],
        "kubernetes_version": image.rsplit(":", 1)[1],
        "pod_cidr": _command_flag(_pod(pods, "kube-controller-manager-"), "cluster-cidr"),
        "cni": cni,
    }
    values.update(overrides)
    return Expected(**values)


def expected_for_dump(dump: str, **overrides: Any) -> Expected:
    docs = dump_documents(dump)
    return expected_from_cluster(
        docs["NodeList"][0], docs["PodList"][0], docs["DaemonSetList"][0], **overrides
    )


def version_document(nodes: dict[str, Any], pods: dict[str, Any]) -> dict[str, Any]:
    """The fields of `kubectl get --raw /version` that the capture tells (no capture of it)."""
    git = _pod(pods, "kube-apiserver-")["spec"]["containers"][0]["image"].rsplit(":", 1)[1]
    major, minor = re.match(r"v(\d+)\.(\d+)", git).groups()  # type: ignore[union-attr]
    info = nodes["items"][0]["status"]["nodeInfo"]
    return {
        "major": major,
        "minor": minor,
        "gitVersion": git,
        "platform": f"{info['operatingSystem']}/{info['architecture']}",
    }


def write_curl(
    root: Path,
    check: str,
    source: str,
    target: str,
    url: str,
    *,
    rc: int = 0,
    body: str = "",
    status: int = 200,
    stderr: str = "",
) -> dict[str, Any]:
    stdout = curl_stdout(body, status if rc == 0 else 0)
    record = curl_record(check, source, target, url, rc, stdout, stderr)
    rel = curl_record_path(check, source, target)
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(json.dumps(record, indent=2) + "\n")
    (root / record["stdout"]).write_text(stdout)
    return record


@dataclass
class Folder:
    """An evidence folder assembled from the v1.21.0 family, and what it should pass."""

    root: Path
    expected: Expected
    welcome: str
    down: set[str] = field(default_factory=set)

    def path(self, rel: str) -> Path:
        return self.root / rel

    def load(self, rel: str) -> Any:
        return json.loads(self.path(rel).read_text())

    def save(self, rel: str, data: Any) -> None:
        self.path(rel).write_text(json.dumps(data, indent=2) + "\n")


def nginx_stand_in(
    docs: dict[str, tuple[dict[str, Any], str]], spread: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Deployment and its pods from the capture, standing in for verify's nginx.

    The capture has no nginx of verify's; its CoreDNS Deployment has the same
    shape (2 replicas, Ready pods with IPs). Both its pods run on k8s-worker2;
    `spread` moves one to the other worker, as verify's anti-affinity would.
    """
    deployment = next(
        d for d in docs["DeploymentList"][0]["items"] if d["metadata"]["name"] == "coredns"
    )
    pods = copy.deepcopy(docs["PodList"][0])
    pods["items"] = [p for p in pods["items"] if p["metadata"]["name"].startswith("coredns-")]
    if spread:
        workers = [
            n["metadata"]["name"] for n in docs["NodeList"][0]["items"] if role_of(n) == "node"
        ]
        taken = pods["items"][1]["spec"]["nodeName"]
        pods["items"][0]["spec"]["nodeName"] = next(w for w in workers if w != taken)
    return deployment, pods


def build_folder(root: Path, *, spread: bool = True, dns: bool = False) -> Folder:
    """A complete evidence folder of a healthy run on the v1.21.0 cluster."""
    docs = dump_documents(DUMP_READY)
    nodes, pods_text = docs["NodeList"][0], docs["PodList"][1]
    pods = docs["PodList"][0]
    service = read_json(SERVICE_NODEPORT)
    expected = expected_from_cluster(
        nodes,
        pods,
        docs["DaemonSetList"][0],
        nodeport=service["spec"]["ports"][0]["nodePort"],
        dns=dns,
    )
    root.mkdir(parents=True, exist_ok=True)
    (root / "nginx").mkdir()
    # nodes.json and pods.json exactly as kubectl printed them.
    (root / NODES).write_bytes(fixture(NODES_READY).read_bytes())
    (root / PODS).write_text(pods_text)
    (root / VERSION).write_text(json.dumps(version_document(nodes, pods), indent=2) + "\n")
    deployment, nginx_pods = nginx_stand_in(docs, spread)
    (root / DEPLOYMENT).write_text(json.dumps(deployment, indent=4) + "\n")
    (root / NGINX_PODS).write_text(json.dumps(nginx_pods, indent=4) + "\n")
    (root / SERVICE).write_text(json.dumps(service, indent=4) + "\n")
    # Endpoints: the k3s capture's object with its addresses pointed at the pods.
    endpoints = copy.deepcopy(
        next(e for e in read_json(ENDPOINTS_LIST)["items"] if e["subsets"][0].get("addresses"))
    )
    endpoints["subsets"][0]["addresses"] = [
        {
            "ip": p["status"]["podIP"],
            "nodeName": p["spec"]["nodeName"],
            "targetRef": {
                "kind": "Pod",
                "namespace": p["metadata"]["namespace"],
                "name": p["metadata"]["name"],
                "uid": p["metadata"]["uid"],
            },
        }
        for p in nginx_pods["items"]
    ]
    (root / ENDPOINTS).write_text(json.dumps(endpoints, indent=4) + "\n")
    welcome = fixture("nginx-1.21.2-to-1.29.5-welcome-index.html").read_text()
    for source in expected.nodes:
        for pod in nginx_pods["items"]:
            ip = pod["status"]["podIP"]
            write_curl(root, "pod-ips", source.name, ip, http_url(ip, 80), body=welcome)
        cluster_ip = service["spec"]["clusterIP"]
        write_curl(
            root, "cluster-ip", source.name, cluster_ip, http_url(cluster_ip, 80), body=welcome
        )
    master = expected.masters[0].name
    for node in expected.nodes:
        url = http_url(node.private_ip, expected.nodeport)
        write_curl(root, "nodeport", master, node.private_ip, url, body=welcome)
    cleanup = {
        "namespace": expected.namespace,
        "delete": {"rc": 0, "stderr": "", "error": None},
        "check": {"rc": 0, "stdout": "", "stderr": "", "error": None},
    }
    (root / CLEANUP).write_text(json.dumps(cleanup, indent=2) + "\n")
    return Folder(root, expected, welcome)


def manifest_objects(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]
