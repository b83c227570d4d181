"""The `nodes` check over real NodeLists and variants derived from them."""

from __future__ import annotations

import copy
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from kubelab.verify.checks import CHECKS, CheckResult, internal_ip
from kubelab.verify.evidence import NODES, Evidence
from kubelab.verify.expect import Expected
from tests.verify.verify_captures import (
    DUMP_NOTREADY_1,
    DUMP_NOTREADY_3,
    DUMP_READY,
    NODES_NOTREADY_1,
    NODES_NOTREADY_3,
    NODES_READY,
    dump_documents,
    expected_for_dump,
    fixture,
    read_json,
)

NODES_CHECK = next(c for c in CHECKS if c.id == "nodes")


def run_nodes(
    tmp_path: Path, nodes: Any, expected: Expected, raw: bytes | None = None
) -> CheckResult:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / NODES
    path.write_bytes(raw if raw is not None else json.dumps(nodes, indent=4).encode())
    return NODES_CHECK(Evidence(tmp_path), expected)


def ready_condition(node: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in node["status"]["conditions"] if c["type"] == "Ready")


@pytest.fixture
def ready() -> tuple[dict[str, Any], Expected]:
    return read_json(NODES_READY), expected_for_dump(DUMP_READY)


def test_the_extract_is_the_dumps_nodelist() -> None:
    # The test takes names and IPs from the dump and evidence from the extract.
    assert read_json(NODES_READY) == dump_documents(DUMP_READY)["NodeList"][0]


def test_ready_cluster_passes(tmp_path: Path, ready: tuple[dict[str, Any], Expected]) -> None:
    nodes, expected = ready
    result = run_nodes(tmp_path, None, expected, raw=fixture(NODES_READY).read_bytes())
    assert result.passed, result.detail
    for node in nodes["items"]:
        assert node["metadata"]["name"] in result.detail
    assert result.hint == ""


@pytest.mark.parametrize(
    ("dump", "nodes_file"),
    [(DUMP_NOTREADY_3, NODES_NOTREADY_3), (DUMP_NOTREADY_1, NODES_NOTREADY_1)],
)
def test_notready_captures_fail_with_the_cni_hint(
    tmp_path: Path, dump: str, nodes_file: str
) -> None:
    expected = expected_for_dump(dump)
    result = run_nodes(tmp_path, None, expected, raw=fixture(nodes_file).read_bytes())
    assert not result.passed
    for node in read_json(nodes_file)["items"]:
        assert f"{node['metadata']['name']} NotReady (False)" in result.detail
        # The runtime's own words reach the detail whole.
        assert ready_condition(node)["message"] in result.detail
    assert "install flannel" in result.hint
    assert "--iface=eth1" in result.hint
    assert expected.pod_cidr in result.hint
    assert "journalctl -u kubelet" not in result.hint  # the CNI hint, not the generic one


def test_one_node_flipped_to_not_ready(
    tmp_path: Path, ready: tuple[dict[str, Any], Expected]
) -> None:
    nodes, expected = ready
    flipped = copy.deepcopy(nodes)
    victim = flipped["items"][2]
    ready_condition(victim)["status"] = "False"
    result = run_nodes(tmp_path, flipped, expected)
    assert not result.passed
    assert result.detail.startswith(f"{victim['metadata']['name']} NotReady (False)")
    assert result.detail.count("NotReady") == 1
    assert f"kubectl describe node {victim['metadata']['name']}" in result.hint
    assert "install flannel" not in result.hint


def test_one_node_with_the_captured_cni_condition(
    tmp_path: Path, ready: tuple[dict[str, Any], Expected]
) -> None:
    nodes, expected = ready
    notready = read_json(NODES_NOTREADY_3)["items"][0]
    variant = copy.deepcopy(nodes)
    victim = variant["items"][1]
    conditions = victim["status"]["conditions"]
    conditions[conditions.index(ready_condition(victim))] = ready_condition(notready)
    result = run_nodes(tmp_path, variant, expected)
    assert not result.passed
    assert victim["metadata"]["name"] in result.detail
    assert "cni config uninitialized" in result.detail
    assert "install flannel" in result.hint


def test_internal_ip_on_the_management_network(
    tmp_path: Path, ready: tuple[dict[str, Any], Expected]
) -> None:
    nodes, expected = ready
    variant = copy.deepcopy(nodes)
    victim = variant["items"][1]
    private = internal_ip(victim)
    assert private is not None
    # The address vagrant-libvirt's NAT network would give it: same host number.
    host = int(private.rsplit(".", 1)[1])
    nat = str(ipaddress.ip_network(expected.management_cidr)[host])
    for address in victim["status"]["addresses"]:
        if address["type"] == "InternalIP":
            address["address"] = nat
    result = run_nodes(tmp_path, variant, expected)
    assert not result.passed
    name = victim["metadata"]["name"]
    assert f"{name} InternalIP is {nat} (the management/NAT address)" in result.detail
    assert f"expected its private IP {private}" in result.detail
    assert f"--node-ip={private}" in result.hint


def test_internal_ips_swapped(tmp_path: Path, ready: tuple[dict[str, Any], Expected]) -> None:
    nodes, expected = ready
    variant = copy.deepcopy(nodes)
    first, second = variant["items"][1], variant["items"][2]
    a, b = internal_ip(first), internal_ip(second)
    for node, new in ((first, b), (second, a)):
        for address in node["status"]["addresses"]:
            if address["type"] == "InternalIP":
                address["address"] = new
    result = run_nodes(tmp_path, variant, expected)
    assert not result.passed
    assert f"InternalIP is {b}, expected its private IP {a}" in result.detail
    assert "management" not in result.detail


def test_kubelet_version_not_the_pinned_one(
    tmp_path: Path, ready: tuple[dict[str, Any], Expected]
) -> None:
    nodes, expected = ready
    variant = copy.deepcopy(nodes)
    victim = variant["items"][0]
    major, minor, patch = expected.kubernetes_version.split(".")
    other = f"v{major}.{minor}.{int(patch) + 1}"
    victim["status"]["nodeInfo"]["kubeletVersion"] = other
    result = run_nodes(tmp_path, variant, expected)
    assert not result.passed
    assert (
        f"{victim['metadata']['name']} kubelet is {other}, the lab pins "
        f"v{expected.kubernetes_version}" in result.detail
    )
    assert "hold them" in result.hint


def test_a_node_that_never_joined(tmp_path: Path, ready: tuple[dict[str, Any], Expected]) -> None:
    nodes, expected = ready
    variant = copy.deepcopy(nodes)
    gone = variant["items"].pop()
    result = run_nodes(tmp_path, variant, expected)
    assert not result.passed
    assert result.detail == f"{gone['metadata']['name']} is not registered"
    assert "hostnamectl" in result.hint


def test_a_node_registered_under_another_name(
    tmp_path: Path, ready: tuple[dict[str, Any], Expected]
) -> None:
    nodes, expected = ready
    variant = copy.deepcopy(nodes)
    victim = variant["items"][2]
    wanted = victim["metadata"]["name"]
    victim["metadata"]["name"] = wanted + "-localdomain"
    result = run_nodes(tmp_path, variant, expected)
    assert not result.passed
    assert f"{wanted} is not registered" in result.detail
    assert f"unexpected nodes registered: {wanted}-localdomain" in result.detail


def test_node_without_pod_cidr(tmp_path: Path, ready: tuple[dict[str, Any], Expected]) -> None:
    nodes, expected = ready
    variant = copy.deepcopy(nodes)
    victim = variant["items"][1]
    del victim["spec"]["podCIDR"]
    victim["spec"].pop("podCIDRs", None)
    result = run_nodes(tmp_path, variant, expected)
    assert not result.passed
    assert f"{victim['metadata']['name']} podCIDR is unset" in result.detail
    assert f"--pod-network-cidr={expected.pod_cidr}" in result.hint


def test_missing_nodes_json_is_no_evidence(tmp_path: Path) -> None:
    result = NODES_CHECK(Evidence(tmp_path), expected_for_dump(DUMP_READY))
    assert not result.passed
    assert result.detail == "no evidence: nodes.json"


def test_truncated_nodes_json_is_unreadable(tmp_path: Path) -> None:
    raw = fixture(NODES_READY).read_bytes()
    result = run_nodes(tmp_path, None, expected_for_dump(DUMP_READY), raw=raw[: len(raw) // 2])
    assert not result.passed
    assert result.detail.startswith("unreadable evidence: nodes.json: not JSON")
