"""nginx-rollout, pod-ips, cluster-ip, nodeport, dns and cleanup over assembled folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubelab.verify.checks import CHECKS, CheckResult, evaluate
from kubelab.verify.evidence import (
    CLEANUP,
    DEPLOYMENT,
    DNS,
    ENDPOINTS,
    NGINX_PODS,
    NODES,
    SERVICE,
    Evidence,
    curl_record_path,
    http_url,
)
from tests.verify.verify_captures import (
    SERVICE_NODEPORT,
    Folder,
    build_folder,
    fixture,
    read_json,
    write_curl,
)

BY_ID = {c.id: c for c in CHECKS}


def check(folder: Folder, check_id: str) -> CheckResult:
    return BY_ID[check_id](Evidence(folder.root), folder.expected)


def failing(folder: Folder) -> list[str]:
    return [r.id for r in evaluate(folder.root, folder.expected) if not r.passed]


def nginx_pods(folder: Folder) -> list[dict]:
    return folder.load(NGINX_PODS)["items"]


# --- nginx-rollout ------------------------------------------------------------------


def test_pods_not_spread(tmp_path: Path) -> None:
    folder = build_folder(tmp_path / "e", spread=False)  # both on one worker, as captured
    crowded = nginx_pods(folder)[0]["spec"]["nodeName"]
    empty = next(n.name for n in folder.expected.nodes if n.role == "node" and n.name != crowded)
    result = check(folder, "nginx-rollout")
    assert not result.passed
    assert f"no ready nginx pod on {empty}" in result.detail
    assert f"not spread: {crowded} runs 2" in result.detail
    assert "taints" in result.hint


def test_rollout_incomplete_states_the_deadline(folder: Folder) -> None:
    deployment = folder.load(DEPLOYMENT)
    deployment["status"]["availableReplicas"] = deployment["spec"]["replicas"] - 1
    folder.save(DEPLOYMENT, deployment)
    result = check(folder, "nginx-rollout")
    assert not result.passed
    rollout = folder.expected.deadlines.rollout
    replicas = deployment["spec"]["replicas"]
    assert f"rollout not complete after {rollout} s: {replicas - 1}/{replicas} available" in (
        result.detail
    )


def test_untainted_master_wants_a_replica_too(folder: Folder) -> None:
    # Manual 003 untaints the master: then it is schedulable and needs its own pod.
    nodes = folder.load(NODES)
    master = folder.expected.masters[0].name
    for node in nodes["items"]:
        if node["metadata"]["name"] == master:
            node["spec"].pop("taints")
    folder.save(NODES, nodes)
    result = check(folder, "nginx-rollout")
    assert not result.passed
    assert "asks for 2 replicas, there are 3 schedulable nodes" in result.detail
    assert f"no ready nginx pod on {master}" in result.detail


def test_no_schedulable_node(folder: Folder) -> None:
    nodes = folder.load(NODES)
    # Taint the workers the way the NotReady captures are tainted.
    taint = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}
    for node in nodes["items"]:
        node["spec"].setdefault("taints", []).append(taint)
    folder.save(NODES, nodes)
    result = check(folder, "nginx-rollout")
    assert not result.passed
    assert result.detail.startswith("no schedulable node")
    assert "node.kubernetes.io/not-ready:NoSchedule" in result.detail
    assert f"kubectl taint nodes {folder.expected.masters[0].name}" in result.hint


def test_a_pod_not_ready_is_named(folder: Folder) -> None:
    pods = folder.load(NGINX_PODS)
    victim = pods["items"][1]
    victim["status"]["phase"] = "Pending"
    victim["status"]["containerStatuses"][0]["ready"] = False
    victim["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ErrImagePull"}}
    folder.save(NGINX_PODS, pods)
    result = check(folder, "nginx-rollout")
    assert not result.passed
    assert f"{victim['metadata']['name']} on {victim['spec']['nodeName']}: ErrImagePull" in (
        result.detail
    )
    assert "mirror profile" in result.hint


# --- pod-ips, cluster-ip, nodeport ----------------------------------------------------


def test_one_pod_ip_down_fails_exactly_pod_ips(folder: Folder) -> None:
    # The scenario: nginx stops answering on one pod address.
    pod = nginx_pods(folder)[0]
    ip = pod["status"]["podIP"]
    for source in folder.expected.nodes:
        write_curl(
            folder.root,
            "pod-ips",
            source.name,
            ip,
            http_url(ip, 80),
            rc=7,
            stderr=f"curl: (7) Failed to connect to {ip} port 80",
        )
    assert failing(folder) == ["pod-ips"]
    result = check(folder, "pod-ips")
    sources = ", ".join(
        f"{n.name} [curl exited 7: curl: (7) Failed to connect to {ip} port 80]"
        for n in folder.expected.nodes
    )
    assert (
        result.detail == f"{ip} ({pod['metadata']['name']} on {pod['spec']['nodeName']}) "
        f"failed from {sources}"
    )
    assert "--iface=eth1" in result.hint


def test_another_page_is_not_the_welcome_page(folder: Folder) -> None:
    ip = nginx_pods(folder)[1]["status"]["podIP"]
    source = folder.expected.nodes[0].name
    other = fixture(SERVICE_NODEPORT).read_text()  # some other real body
    write_curl(folder.root, "pod-ips", source, ip, http_url(ip, 80), body=other)
    result = check(folder, "pod-ips")
    assert not result.passed
    assert f"not the nginx welcome page ({len(other.encode())} bytes)" in result.detail


def test_a_cut_page_is_not_the_welcome_page(folder: Folder) -> None:
    ip = nginx_pods(folder)[1]["status"]["podIP"]
    source = folder.expected.nodes[1].name
    cut = folder.welcome[: len(folder.welcome) // 2]
    write_curl(folder.root, "pod-ips", source, ip, http_url(ip, 80), body=cut)
    assert "not the nginx welcome page" in check(folder, "pod-ips").detail


def test_http_error_status(folder: Folder) -> None:
    ip = nginx_pods(folder)[0]["status"]["podIP"]
    source = folder.expected.nodes[2].name
    write_curl(
        folder.root, "pod-ips", source, ip, http_url(ip, 80), body=folder.welcome, status=502
    )
    assert f"{source} [HTTP 502]" in check(folder, "pod-ips").detail


def test_record_that_contradicts_its_stdout(folder: Folder) -> None:
    # An edited record claiming a pass over a saved failure is caught by the bytes.
    ip = nginx_pods(folder)[0]["status"]["podIP"]
    source = folder.expected.nodes[0].name
    rel = curl_record_path("pod-ips", source, ip)
    record = folder.load(rel)
    (folder.root / record["stdout"]).write_text("")
    result = check(folder, "pod-ips")
    assert not result.passed
    assert f"evidence contradicts itself: {rel}" in result.detail


def test_record_for_another_url(folder: Folder) -> None:
    ip = nginx_pods(folder)[0]["status"]["podIP"]
    source = folder.expected.nodes[0].name
    rel = curl_record_path("pod-ips", source, ip)
    record = folder.load(rel)
    record["url"] = http_url(ip, 8080)
    folder.save(rel, record)
    assert f"is for {http_url(ip, 8080)}" in check(folder, "pod-ips").detail


def test_missing_curl_record_is_no_evidence(folder: Folder) -> None:
    ip = nginx_pods(folder)[0]["status"]["podIP"]
    source = folder.expected.nodes[1].name
    rel = curl_record_path("pod-ips", source, ip)
    (folder.root / rel).unlink()
    result = check(folder, "pod-ips")
    assert not result.passed
    assert f"no evidence: {rel}" in result.detail


def test_no_pod_ips_at_all(folder: Folder) -> None:
    pods = folder.load(NGINX_PODS)
    for pod in pods["items"]:
        del pod["status"]["podIP"]
    folder.save(NGINX_PODS, pods)
    result = check(folder, "pod-ips")
    assert not result.passed
    assert result.detail.startswith("no nginx pod has an IP")


def test_cluster_ip_without_endpoints(folder: Folder) -> None:
    endpoints = folder.load(ENDPOINTS)
    endpoints["subsets"] = []
    folder.save(ENDPOINTS, endpoints)
    result = check(folder, "cluster-ip")
    assert not result.passed
    assert "the Service has no ready endpoints" in result.detail
    assert "kube-proxy" in result.hint


def test_cluster_ip_down_from_one_node(folder: Folder) -> None:
    cluster_ip = folder.load(SERVICE)["spec"]["clusterIP"]
    source = folder.expected.nodes[2].name
    write_curl(
        folder.root,
        "cluster-ip",
        source,
        cluster_ip,
        http_url(cluster_ip, 80),
        rc=28,
        stderr="curl: (28) Connection timed out after 5001 milliseconds",
    )
    result = check(folder, "cluster-ip")
    assert not result.passed
    assert result.detail.startswith(f"{cluster_ip}:80 failed from {source} [curl exited 28")


def test_nodeport_record_missing_for_one_node(folder: Folder) -> None:
    node = folder.expected.nodes[-1]
    master = folder.expected.masters[0].name
    (folder.root / curl_record_path("nodeport", master, node.private_ip)).unlink()
    result = check(folder, "nodeport")
    assert not result.passed
    assert result.detail == f"no evidence: {curl_record_path('nodeport', '*', node.private_ip)}"


def test_nodeport_from_another_port(folder: Folder) -> None:
    service = folder.load(SERVICE)
    service["spec"]["ports"][0]["nodePort"] += 1
    folder.save(SERVICE, service)
    result = check(folder, "nodeport")
    assert not result.passed
    assert result.detail.count("is for http://") == len(folder.expected.nodes)


# --- dns and cleanup ------------------------------------------------------------------


def _dns(folder: Folder, **record: object) -> None:
    base = {
        "name": f"nginx.{folder.expected.namespace}.svc.cluster.local",
        "pod": nginx_pods(folder)[0]["metadata"]["name"],
        "rc": 0,
        "stderr": "",
        "error": None,
    }
    folder.save(DNS, {**base, **record})


def test_dns_only_when_asked(tmp_path: Path) -> None:
    plain = build_folder(tmp_path / "plain")
    assert "dns" not in [r.id for r in evaluate(plain.root, plain.expected)]
    asked = build_folder(tmp_path / "asked", dns=True)
    result = check(asked, "dns")
    assert not result.passed
    assert result.detail.startswith("no evidence: dns.json")


def test_dns_resolves_to_the_cluster_ip(tmp_path: Path) -> None:
    folder = build_folder(tmp_path / "e", dns=True)
    cluster_ip = read_json(SERVICE_NODEPORT)["spec"]["clusterIP"]
    name = f"nginx.{folder.expected.namespace}.svc.cluster.local"
    _dns(folder, stdout=f"{cluster_ip}      {name}\n")
    assert check(folder, "dns").passed
    other = cluster_ip.rsplit(".", 1)[0] + ".1"
    _dns(folder, stdout=f"{other}      {name}\n")
    assert f"resolved to {other}, not the Service's ClusterIP {cluster_ip}" in (
        check(folder, "dns").detail
    )
    _dns(folder, rc=2, stdout="")
    result = check(folder, "dns")
    assert not result.passed
    assert "did not resolve" in result.detail
    assert "CoreDNS" in result.hint


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"check": {"rc": 0, "stdout": "namespace/kubelab-verify\n"}}, "still present after 120 s"),
        (
            {"check": {"rc": 1, "stdout": "", "stderr": "Unable to connect to the server"}},
            "could not confirm",
        ),
        ({"namespace": "default"}, "is about namespace default"),
    ],
)
def test_cleanup_failures(folder: Folder, change: dict, expect: str) -> None:
    folder.save(CLEANUP, {**folder.load(CLEANUP), **change})
    result = check(folder, "cleanup")
    assert not result.passed
    assert expect in result.detail
    assert f"kubectl delete namespace {folder.expected.namespace}" in result.hint
