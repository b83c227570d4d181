"""The `system-pods` check over real PodLists (healthy, NotReady, failing) and variants."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from kubelab.verify.checks import CHECKS, CheckResult
from kubelab.verify.evidence import COMMANDS, PODS, Evidence, parse_time
from kubelab.verify.expect import Expected
from tests.verify.verify_captures import (
    DUMP_NOTREADY_1,
    DUMP_NOTREADY_3,
    DUMP_READY,
    dump_documents,
    expected_for_dump,
    fixture,
    read_json,
)

SYSTEM_PODS = next(c for c in CHECKS if c.id == "system-pods")

# Captures of failing pods: the file, the waiting reason or state the detail must
# show, and a phrase of the hint that fits it.
FAILING = [
    ("podlist-minikube-ErrImagePull.json", "ErrImagePull", "cannot pull its image"),
    ("podlist-minikube-CrashLoopBackOff.json", "CrashLoopBackOff (4 restarts)", "--previous"),
    ("podlist-minikube-Pending-Unschedulable.json", "Unschedulable", "is not scheduled"),
    ("podlist-minikube-ContainerCreating-FailedMount.json", "ContainerCreating", "FailedMount"),
]
K3S_MIXED = "podlist-k3s-v1.33-mixed-Running-Pending-CrashLoopBackOff.json"


def run(tmp_path: Path, pods: Any, expected: Expected, raw: str | None = None) -> CheckResult:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / PODS).write_text(raw if raw is not None else json.dumps(pods, indent=4))
    return SYSTEM_PODS(Evidence(tmp_path), expected)


def ref(pod: dict[str, Any]) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


def healthy(pod: dict[str, Any]) -> bool:
    statuses = pod["status"].get("containerStatuses") or []
    return (
        pod["status"]["phase"] == "Running" and bool(statuses) and all(s["ready"] for s in statuses)
    )


@pytest.fixture
def ready_pods() -> tuple[dict[str, Any], str]:
    return dump_documents(DUMP_READY)["PodList"]


def test_ready_cluster_passes(tmp_path: Path, ready_pods: tuple[dict[str, Any], str]) -> None:
    expected = expected_for_dump(DUMP_READY)
    result = run(tmp_path, None, expected, raw=ready_pods[1])
    assert result.passed, result.detail
    assert f"control plane on {expected.masters[0].name}" in result.detail
    assert f"among {len(ready_pods[0]['items'])}" in result.detail


def test_the_lab_cni_missing_on_every_node(
    tmp_path: Path, ready_pods: tuple[dict[str, Any], str]
) -> None:
    # The capture runs calico; a lab that expects flannel must notice.
    expected = expected_for_dump(DUMP_READY, cni="flannel")
    result = run(tmp_path, None, expected, raw=ready_pods[1])
    assert not result.passed
    for node in expected.nodes:
        assert f"no flannel pod on {node.name}" in result.detail
    assert "install flannel" in result.hint


@pytest.mark.parametrize(("capture", "shown", "hint_phrase"), FAILING)
def test_failing_pod_lists_name_the_pods(
    tmp_path: Path, capture: str, shown: str, hint_phrase: str
) -> None:
    pods = read_json(capture)
    result = run(tmp_path, None, expected_for_dump(DUMP_READY), raw=fixture(capture).read_text())
    assert not result.passed
    for pod in pods["items"]:
        assert ref(pod) in result.detail
    assert shown in result.detail
    assert hint_phrase in result.hint


@pytest.mark.parametrize(("capture", "shown", "hint_phrase"), FAILING)
def test_one_failing_pod_in_a_healthy_cluster(
    tmp_path: Path,
    ready_pods: tuple[dict[str, Any], str],
    capture: str,
    shown: str,
    hint_phrase: str,
) -> None:
    # The healthy cluster plus the captured failing pod: that pod alone fails the check.
    merged = copy.deepcopy(ready_pods[0])
    failing = read_json(capture)["items"]
    merged["items"] += failing
    result = run(tmp_path, merged, expected_for_dump(DUMP_READY))
    assert not result.passed
    assert result.detail.split("; ") == [
        p for p in result.detail.split("; ") if any(ref(f) in p for f in failing)
    ]
    assert shown in result.detail
    assert hint_phrase in result.hint


def test_k3s_mixed_list_names_exactly_the_unhealthy_pods(tmp_path: Path) -> None:
    pods = read_json(K3S_MIXED)
    result = run(tmp_path, None, expected_for_dump(DUMP_READY), raw=fixture(K3S_MIXED).read_text())
    assert not result.passed
    for pod in pods["items"]:
        assert (ref(pod) in result.detail) is not healthy(pod), ref(pod)
    assert "CrashLoopBackOff (5 restarts)" in result.detail


@pytest.mark.parametrize("dump", [DUMP_NOTREADY_3, DUMP_NOTREADY_1])
def test_notready_clusters_name_pending_coredns(tmp_path: Path, dump: str) -> None:
    pods, raw = dump_documents(dump)["PodList"]
    expected = expected_for_dump(dump)
    result = run(tmp_path, None, expected, raw=raw)
    assert not result.passed
    coredns = [p for p in pods["items"] if p["metadata"]["name"].startswith("coredns-")]
    assert coredns
    for pod in coredns:
        assert f"{ref(pod)}: Pending" in result.detail
    assert "node.kubernetes.io/not-ready" in result.detail
    for node in expected.nodes:
        assert f"no flannel pod on {node.name}" in result.detail
    assert "install flannel" in result.hint


def _observed(tmp_path: Path, when: str) -> None:
    # commands.jsonl says when pods.json was taken, as collect records it.
    line = {"seq": 1, "check": "system-pods", "saves": PODS, "finished": when, "duration": 0.1}
    (tmp_path / COMMANDS).write_text(json.dumps(line) + "\n")


@pytest.mark.parametrize("capture", [FAILING[2][0], FAILING[3][0]])
def test_pending_counts_only_past_its_deadline(tmp_path: Path, capture: str) -> None:
    expected = expected_for_dump(DUMP_READY)
    merged = copy.deepcopy(dump_documents(DUMP_READY)["PodList"][0])
    slow = read_json(capture)["items"][0]
    merged["items"].append(slow)
    created = parse_time(slow["metadata"]["creationTimestamp"])
    assert created is not None
    grace = expected.deadlines.pending

    _observed(tmp_path, (created + timedelta(seconds=grace - 10)).isoformat())
    young = run(tmp_path, merged, expected)
    assert young.passed, young.detail

    _observed(tmp_path, (created + timedelta(seconds=grace + 10)).isoformat())
    old = run(tmp_path, merged, expected)
    assert not old.passed
    assert f"{ref(slow)}" in old.detail
    assert f"for {grace + 10} s (deadline {grace} s)" in old.detail


def test_init_container_image_pull_is_named_as_init(
    tmp_path: Path, ready_pods: tuple[dict[str, Any], str]
) -> None:
    # Manual 003's example is a flannel pod in Init:ImagePullBackOff: move the
    # captured ErrImagePull status to an init container.
    merged = copy.deepcopy(ready_pods[0])
    pod = read_json(FAILING[0][0])["items"][0]
    pod["status"]["initContainerStatuses"] = pod["status"].pop("containerStatuses")
    merged["items"].append(pod)
    result = run(tmp_path, merged, expected_for_dump(DUMP_READY))
    assert not result.passed
    assert f"{ref(pod)} on {pod['spec']['nodeName']}: Init:ErrImagePull" in result.detail


def test_kube_proxy_missing_on_one_node(
    tmp_path: Path, ready_pods: tuple[dict[str, Any], str]
) -> None:
    expected = expected_for_dump(DUMP_READY)
    variant = copy.deepcopy(ready_pods[0])
    victim = expected.nodes[-1].name
    variant["items"] = [
        p
        for p in variant["items"]
        if not (p["metadata"]["name"].startswith("kube-proxy-") and p["spec"]["nodeName"] == victim)
    ]
    result = run(tmp_path, variant, expected)
    assert not result.passed
    assert result.detail == f"no kube-proxy pod on {victim}"
    assert "DaemonSets" in result.hint


def test_apiserver_not_ready(tmp_path: Path, ready_pods: tuple[dict[str, Any], str]) -> None:
    expected = expected_for_dump(DUMP_READY)
    variant = copy.deepcopy(ready_pods[0])
    apiserver = next(
        p for p in variant["items"] if p["metadata"]["name"].startswith("kube-apiserver-")
    )
    for condition in apiserver["status"]["conditions"]:
        if condition["type"] == "Ready":
            condition["status"] = "False"
    result = run(tmp_path, variant, expected)
    assert not result.passed
    assert f"{ref(apiserver)} on {expected.masters[0].name} is not ready" in result.detail


def test_verifys_own_namespace_is_not_system(
    tmp_path: Path, ready_pods: tuple[dict[str, Any], str]
) -> None:
    # A pod of verify's nginx (left from a run) is nginx-rollout's business.
    expected = expected_for_dump(DUMP_READY)
    merged = copy.deepcopy(ready_pods[0])
    pod = read_json(FAILING[0][0])["items"][0]
    pod["metadata"]["namespace"] = expected.namespace
    merged["items"].append(pod)
    assert run(tmp_path, merged, expected).passed
