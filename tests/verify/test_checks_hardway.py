"""The hard way's checks over evidence folders made from real captures.

etcd's answers are real etcd 3.4.23 output (tests/data/verify/hardway/etcd-3.4.23,
see its SOURCES.md): a 3-member TLS cluster healthy, with one member down, with
two down. The certificates are real cfssl output (tests/data/verify/hardway/pki).
flannel's config key, its subnet leases and docker's bridge are real etcd 3.4.23 and
iproute2 output (tests/data/verify/hardway/flannel-etcd-3.4.23, see its SOURCES.md).
A component's health answer is real curl output, refused or from a stand-in answering
healthz's "ok" (tests/data/verify/hardway/components/SOURCES.md). CoreDNS's pods and the
kube-dns Service come from real clusters' `kubectl cluster-info dump` captures in
../shared/fixtures (see its SOURCES.md): two replicas ready, and two Pending.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from kubelab.transport import CommandResult
from kubelab.verify.checks import evaluate
from kubelab.verify.checks_hardway import (
    COREDNS_PODS,
    ETCD_CERTS,
    FLANNEL_CONFIG,
    FLANNEL_SUBNETS,
    KUBE_CA,
    KUBE_CERTS,
    KUBE_DNS_SERVICE,
    MEMBER_LIST,
    STATUS,
    cert_path,
    collect_hardway,
    component_health_path,
    components_of,
    docker0_path,
    health_path,
    keys_path,
    probe_path,
    units_path,
)
from kubelab.verify.evidence import parse_curl_stdout
from kubelab.verify.expect import Expected, ExpectedNode
from kubelab.verify.lab import reevaluate
from tests.support.captures import dump_documents

DATA = Path(__file__).resolve().parents[1] / "data" / "verify" / "hardway"
CAPTURES = DATA / "etcd-3.4.23"
PKI = DATA / "pki"
# The captured members: names m1-m3, every client URL on 127.0.0.1.
EXPECTED = Expected(
    nodes=(
        ExpectedNode("m1", "master", "127.0.0.1"),
        ExpectedNode("m2", "node", "127.0.0.1"),
        ExpectedNode("m3", "node", "127.0.0.1"),
    ),
    kubernetes_version="1.30.14",
    pod_cidr="10.244.0.0/16",
    hardway=True,
)
COLLECTED = "2026-12-01T12:30:00.000+00:00"  # when the captures were made
FLANNEL = DATA / "flannel-etcd-3.4.23"
# The flannel captures' leases: m1-m3 at these lab addresses; a build with flannel-etcd.
FLANNEL_EXPECTED = dataclasses.replace(
    EXPECTED,
    nodes=tuple(
        ExpectedNode(n.name, n.role, f"192.168.56.{10 + i}") for i, n in enumerate(EXPECTED.nodes)
    ),
    stages=("prepare", "repos", "pki", "etcd", "runtime", "flannel-etcd"),
)


def capture(name: str) -> tuple[int, str, str]:
    rc = int((CAPTURES / f"{name}.rc").read_text())
    return rc, (CAPTURES / f"{name}.stdout").read_text(), (CAPTURES / f"{name}.stderr").read_text()


def curl_record(node: str, url: str, name: str) -> dict[str, object]:
    rc, stdout, stderr = capture(name)
    body, status = parse_curl_stdout(stdout)
    return {
        "node": node,
        "url": url,
        "rc": rc,
        "http_status": status,
        "body": body.decode(),
        "error": stderr.strip() or None,
    }


def build(
    folder: Path,
    case: str = "healthy",
    *,
    no_cert: str = "nocert",
    loopback: str = "loopback-refused",
    server: Path = PKI / "good" / "server.pem",
    key_mode: str = "600",
    expected: Expected = EXPECTED,
) -> Path:
    """An evidence folder as collect_hardway writes it for `expected`, from the captures
    of `case`."""
    commands = []

    def save(rel: str, text: str) -> None:
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        commands.append({"check": "x", "node": "m1", "saves": rel, "rc": 0, "finished": COLLECTED})

    save(MEMBER_LIST, capture(f"{case}-member-list")[1])
    save(STATUS, capture(f"{case}-status")[1])
    for i, node in enumerate(expected.nodes, start=1):
        rc, stdout, stderr = capture(f"{case}-health-m{i}")
        endpoint = f"https://127.0.0.1:{i}2379"
        record = {"node": node.name, "endpoint": endpoint, "rc": rc, "stdout": stdout}
        save(health_path(node.name), json.dumps({**record, "stderr": stderr, "error": None}))
        no_cert_record = curl_record(node.name, endpoint, no_cert)
        save(probe_path("no-cert", node.name), json.dumps(no_cert_record))
        save(
            probe_path("plain-http", node.name),
            json.dumps(curl_record(node.name, f"http://127.0.0.1:{i}2379/health", "plainhttp")),
        )
        save(
            probe_path("loopback", node.name),
            json.dumps(curl_record(node.name, "http://127.0.0.1:2379/health", loopback)),
        )
        for name in ETCD_CERTS:
            source = server if name == "server.pem" else PKI / "good" / name
            save(cert_path(node.name, name), source.read_text())
        save(
            keys_path(node.name),
            f"/opt/etcd/ssl/server-key.pem {key_mode} etcd:etcd\n"
            "/opt/etcd/ssl/peer-key.pem 600 etcd:etcd\n",
        )
    for name in (KUBE_CA, *KUBE_CERTS):
        save(cert_path(expected.masters[0].name, name), (PKI / "good" / name).read_text())
    (folder / "commands.jsonl").write_text("".join(json.dumps(c) + "\n" for c in commands))
    (folder / "meta.json").write_text(json.dumps({"expected": expected.to_dict()}))
    return folder


def verdicts(folder: Path) -> dict[str, tuple[bool, str]]:
    return {r.id: (r.passed, r.detail) for r in evaluate(folder, EXPECTED)}


def test_a_healthy_cluster_and_its_pki_pass(tmp_path: Path) -> None:
    results = verdicts(build(tmp_path))
    assert set(results) == {"etcd-cluster", "pki"}  # the hard way's checks, not the cluster's
    passed, detail = results["etcd-cluster"]
    assert passed, detail
    assert "3 of 3 members healthy over TLS (quorum 2), one leader" in detail
    assert results["pki"][0], results["pki"][1]


def test_one_member_down_keeps_the_quorum_and_names_it(tmp_path: Path) -> None:
    passed, detail = verdicts(build(tmp_path, "onedown"))["etcd-cluster"]
    assert passed, detail
    assert "2 of 3 members healthy" in detail
    assert "down: m3 (failed to commit proposal: context deadline exceeded)" in detail


def test_a_record_that_asked_every_member_is_judged_by_its_own_endpoint(tmp_path: Path) -> None:
    """Evidence from a wrapper that asked all three (etcdctl appends a second --endpoints
    to the first): each record holds every member's line and exits 1 for m3's."""
    folder = build(tmp_path, "onedown")
    every = "".join(capture(f"onedown-health-m{i}")[2] for i in (1, 2, 3))
    for node in EXPECTED.nodes:
        path = folder / health_path(node.name)
        path.write_text(json.dumps({**json.loads(path.read_text()), "rc": 1, "stderr": every}))
    passed, detail = verdicts(folder)["etcd-cluster"]
    assert passed, detail
    assert "2 of 3 members healthy" in detail and "down: m3 (" in detail
    assert "m1 (" not in detail and "m2 (" not in detail


def test_two_members_down_fail_and_name_both(tmp_path: Path) -> None:
    results = evaluate(build(tmp_path, "twodown"), EXPECTED)
    cluster = next(r for r in results if r.id == "etcd-cluster")
    assert not cluster.passed
    assert cluster.detail.startswith("no quorum: 0 of 3 members healthy")
    # With no quorum no member commits a proposal: every one is named.
    for name in ("m1 (", "m2 (", "m3 ("):
        assert name in cluster.detail
    assert "journalctl -u etcd" in cluster.hint


def test_a_member_that_answers_without_a_client_certificate_fails(tmp_path: Path) -> None:
    passed, detail = verdicts(build(tmp_path, no_cert="withcert"))["etcd-cluster"]
    assert not passed
    assert "m1 answers a client without a certificate" in detail


def test_a_plain_http_listener_fails(tmp_path: Path) -> None:
    passed, detail = verdicts(build(tmp_path, loopback="withcert"))["etcd-cluster"]
    assert not passed
    assert "m1 answers plain HTTP at http://127.0.0.1:2379/health" in detail


@pytest.mark.parametrize(
    ("server", "problem"),
    [
        (PKI / "wrong-sans" / "server.pem", "m1:server.pem SANs add 10.0.2.15"),
        (PKI / "other-ca" / "server.pem", "m1:server.pem is not signed by its CA"),
    ],
)
def test_a_wrong_certificate_fails_naming_it(tmp_path: Path, server: Path, problem: str) -> None:
    passed, detail = verdicts(build(tmp_path, server=server))["pki"]
    assert not passed
    assert problem in detail


def test_a_readable_private_key_fails(tmp_path: Path) -> None:
    passed, detail = verdicts(build(tmp_path, key_mode="644"))["pki"]
    assert not passed
    assert "m1:/opt/etcd/ssl/server-key.pem has mode 644, not 600" in detail


def test_missing_evidence_fails_as_no_evidence(tmp_path: Path) -> None:
    folder = build(tmp_path)
    (folder / health_path("m2")).unlink()
    passed, detail = verdicts(folder)["etcd-cluster"]
    assert not passed
    assert detail.startswith(f"no evidence: {health_path('m2')}")


def test_the_evidence_folder_re_evaluates_to_the_same_verdicts(tmp_path: Path) -> None:
    folder = build(tmp_path / "ev", "onedown", key_mode="640")
    live = verdicts(folder)
    copy = tmp_path / "handed-in"
    shutil.copytree(folder, copy)
    expected, results = reevaluate(copy)
    assert expected.hardway
    assert {r.id: (r.passed, r.detail) for r in results} == live


def flannel_capture(name: str) -> tuple[int, str, str]:
    rc = int((FLANNEL / f"{name}.rc").read_text())
    return rc, (FLANNEL / f"{name}.stdout").read_text(), (FLANNEL / f"{name}.stderr").read_text()


def build_flannel(
    folder: Path,
    *,
    config: str = "config",
    subnets: str = "subnets",
    docker0: tuple[str, str, str] = ("docker0-bip", "docker0-none", "docker0-none"),
) -> Path:
    """The etcd evidence (healthy) plus the flannel files from the captures named."""
    build(folder)
    (folder / FLANNEL_CONFIG).parent.mkdir(parents=True, exist_ok=True)
    (folder / FLANNEL_CONFIG).write_text(flannel_capture(config)[1])
    (folder / FLANNEL_SUBNETS).write_text(flannel_capture(subnets)[1])
    for node, name in zip(FLANNEL_EXPECTED.nodes, docker0, strict=True):
        rc, stdout, stderr = flannel_capture(name)
        record = {"node": node.name, "rc": rc, "stdout": stdout, "stderr": stderr, "error": None}
        (folder / docker0_path(node.name)).parent.mkdir(parents=True, exist_ok=True)
        (folder / docker0_path(node.name)).write_text(json.dumps(record))
    return folder


def flannel_verdict(folder: Path) -> tuple[bool, str, str]:
    result = next(r for r in evaluate(folder, FLANNEL_EXPECTED) if r.id == "flannel-etcd")
    return result.passed, result.detail, result.hint


def test_the_flannel_check_runs_only_when_the_network_stage_built_the_lab(
    tmp_path: Path,
) -> None:
    folder = build_flannel(tmp_path)
    assert "flannel-etcd" not in verdicts(folder)  # exercise 4: pki and etcd only
    assert "flannel-etcd" in {r.id for r in evaluate(folder, FLANNEL_EXPECTED)}


def test_the_config_one_lease_per_node_and_docker_bridge_inside_it_pass(tmp_path: Path) -> None:
    passed, detail, _ = flannel_verdict(build_flannel(tmp_path))
    assert passed, detail
    assert "Network 10.244.0.0/16, vxlan; one subnet lease for each of 3 nodes" in detail
    assert "docker0 inside its node's subnet on m1" in detail


def test_no_config_key_fails_with_the_command_that_writes_it(tmp_path: Path) -> None:
    passed, detail, hint = flannel_verdict(build_flannel(tmp_path, config="empty-config"))
    assert not passed
    assert "no network config at /coreos.com/network/config" in detail
    assert "my_etcdctl put /coreos.com/network/config" in hint and "10.244.0.0/16" in hint


def test_a_config_for_another_network_fails(tmp_path: Path) -> None:
    wrong = FLANNEL_EXPECTED.pod_cidr.replace("244", "245")  # the lab asked for another
    expected = dataclasses.replace(FLANNEL_EXPECTED, pod_cidr=wrong)
    result = next(r for r in evaluate(build_flannel(tmp_path), expected) if r.id == "flannel-etcd")
    assert not result.passed
    assert f"gives Network 10.244.0.0/16, not the pod CIDR {wrong}" in result.detail


@pytest.mark.parametrize(
    ("subnets", "problem"),
    [
        ("twoleases", "m3 holds 0 subnet leases, not 1"),
        ("empty-subnets", "m1 holds 0 subnet leases, not 1"),
        ("twoforone", "m3 holds 2 subnet leases (10.244.12.0/24, 10.244.200.0/24), not 1"),
    ],
)
def test_a_node_without_exactly_one_lease_fails_naming_it(
    tmp_path: Path, subnets: str, problem: str
) -> None:
    passed, detail, hint = flannel_verdict(build_flannel(tmp_path, subnets=subnets))
    assert not passed
    assert problem in detail
    assert "journalctl -u flanneld" in hint


def test_docker_on_its_own_bridge_fails(tmp_path: Path) -> None:
    docker0 = ("docker0-default", "docker0-none", "docker0-none")
    passed, detail, hint = flannel_verdict(build_flannel(tmp_path, docker0=docker0))
    assert not passed
    assert "m1's docker0 172.17.0.1/16 is outside its subnet 10.244.37.0/24" in detail
    assert "DOCKER_NETWORK_OPTIONS" in hint


def test_the_flannel_evidence_re_evaluates_to_the_same_verdict(tmp_path: Path) -> None:
    folder = build_flannel(tmp_path / "ev", subnets="twoleases")
    (folder / "meta.json").write_text(json.dumps({"expected": FLANNEL_EXPECTED.to_dict()}))
    live = {r.id: (r.passed, r.detail) for r in evaluate(folder, FLANNEL_EXPECTED)}
    expected, results = reevaluate(folder)
    assert expected.stages == FLANNEL_EXPECTED.stages
    assert {r.id: (r.passed, r.detail) for r in results} == live
    assert not live["flannel-etcd"][0]


HEALTH = DATA / "components"
# A lab whose stages built the control plane on the master and kubelet, kube-proxy on
# the nodes, flanneld everywhere (catalog.yaml, hardway.components).
COMPONENTS_EXPECTED = dataclasses.replace(
    EXPECTED, stages=(*FLANNEL_EXPECTED.stages, "control-plane", "node-components")
)


def build_components(
    folder: Path, *, states: dict[tuple[str, str], str] | None = None, refused: str = ""
) -> Path:
    """The etcd evidence plus each node's units (active unless `states` says otherwise,
    as (node, unit) -> systemctl's word) and health answers (ok; refused for `refused`)."""
    build(folder)
    for node in COMPONENTS_EXPECTED.nodes:
        components = components_of(COMPONENTS_EXPECTED, node)
        words = [(states or {}).get((node.name, c["unit"]), "active") for c in components]
        (folder / units_path(node.name)).parent.mkdir(parents=True, exist_ok=True)
        (folder / units_path(node.name)).write_text("".join(f"{w}\n" for w in words))
        for component in components:
            if not component["health"]:
                continue
            name = "healthz-refused" if component["unit"] == refused else "healthz-ok"
            rc = int((HEALTH / f"{name}.rc").read_text())
            body, status = parse_curl_stdout((HEALTH / f"{name}.stdout").read_text())
            stderr = (HEALTH / f"{name}.stderr").read_text().strip()
            record = {
                "node": node.name,
                "url": component["health"],
                "rc": rc,
                "http_status": status,
                "body": body.decode(),
                "error": stderr or None,
            }
            (folder / component_health_path(node.name, component["unit"])).write_text(
                json.dumps(record)
            )
    return folder


def components_verdict(folder: Path) -> tuple[bool, str, str]:
    result = next(r for r in evaluate(folder, COMPONENTS_EXPECTED) if r.id == "components")
    return result.passed, result.detail, result.hint


def test_every_component_active_and_healthy_passes(tmp_path: Path) -> None:
    passed, detail, _ = components_verdict(build_components(tmp_path))
    assert passed, detail
    # master: 3 control-plane units + flanneld; each node: kubelet, kube-proxy, flanneld.
    assert detail.startswith("10 components active under systemd")


def test_the_components_check_does_not_run_before_its_stages(tmp_path: Path) -> None:
    folder = build_components(tmp_path)
    assert "components" not in verdicts(folder)  # exercise 4 built pki and etcd only


def test_a_failed_unit_fails_naming_the_node_and_the_unit(tmp_path: Path) -> None:
    folder = build_components(tmp_path, states={("m2", "kubelet"): "failed"})
    passed, detail, hint = components_verdict(folder)
    assert not passed
    assert detail == "m2: kubelet is failed"
    assert "journalctl -u kubelet" in hint


def test_a_health_port_nobody_answers_fails_with_curls_error(tmp_path: Path) -> None:
    passed, detail, hint = components_verdict(build_components(tmp_path, refused="kube-proxy"))
    assert not passed
    assert "m2: kube-proxy health http://127.0.0.1:10256/healthz: curl: (7)" in detail
    assert "m3: kube-proxy health" in detail
    assert "kube-proxy 10256" in hint


def test_the_components_evidence_re_evaluates_to_the_same_verdict(tmp_path: Path) -> None:
    folder = build_components(tmp_path / "ev", states={("m1", "kube-scheduler"): "activating"})
    (folder / "meta.json").write_text(json.dumps({"expected": COMPONENTS_EXPECTED.to_dict()}))
    live = {r.id: (r.passed, r.detail) for r in evaluate(folder, COMPONENTS_EXPECTED)}
    _, results = reevaluate(folder)
    assert {r.id: (r.passed, r.detail) for r in results} == live
    assert live["components"] == (False, "m1: kube-scheduler is activating")


def test_members_named_without_the_student_id_are_found_by_their_peer_address(
    tmp_path: Path,
) -> None:
    # `verify --student e2e` names the nodes m1-e2e...; the lab was built without the ID,
    # so the members (and the SANs) are m1-m3: found by the IP in their peer URLs.
    named = tuple(n._replace(name=f"{n.name}-e2e", machine=n.name) for n in EXPECTED.nodes)
    expected = dataclasses.replace(EXPECTED, nodes=named, student_id="e2e")
    folder = build(tmp_path, expected=expected)
    results = {r.id: (r.passed, r.detail) for r in evaluate(folder, expected)}
    assert results["etcd-cluster"][0], results["etcd-cluster"][1]
    assert results["pki"][0], results["pki"][1]


def test_a_member_at_no_lab_address_is_still_missing(tmp_path: Path) -> None:
    named = tuple(n._replace(name=f"{n.name}-e2e", private_ip="192.0.2.1") for n in EXPECTED.nodes)
    expected = dataclasses.replace(EXPECTED, nodes=named)
    folder = build(tmp_path, expected=expected)
    results = {r.id: (r.passed, r.detail) for r in evaluate(folder, expected)}
    assert not results["etcd-cluster"][0]
    assert "not members: m1-e2e, m2-e2e, m3-e2e" in results["etcd-cluster"][1]


class CapturedVMs:
    """The VMs as collect_hardway reaches them, answering the flannel and components
    commands from the captures (the boundary that cannot exist here: three VMs running
    flanneld and the components). Anything else fails as a command that is not there."""

    def __init__(self, expected: Expected, kubelet: str = "healthz-ok") -> None:
        self.expected, self.kubelet, self.ran = expected, kubelet, []
        self.coredns_pods, self.kube_dns = coredns_answers(DUMP_READY)

    def run(self, node: str, cmd: str, *args: object, timeout: float = 60.0) -> CommandResult:
        argv = [cmd, *map(str, args)]
        self.ran.append((node, argv))
        if argv[-3:] == ["--prefix", "-w", "json"]:
            name = "subnets"
        elif argv[-1] == "--print-value-only":
            name = "config"
        elif argv[-1] == "docker0":
            name = "docker0-bip" if node == "m1" else "docker0-none"
        elif argv[0] == "sudo" and argv[1].endswith("/kubectl") and "get" in argv:
            out = self.coredns_pods if "pods" in argv else self.kube_dns
            return CommandResult(node, " ".join(argv), 0, out, "", 0.1)
        elif argv[:2] == ["systemctl", "is-active"]:  # no capture exists: systemd's words
            return CommandResult(node, " ".join(argv), 0, "active\n" * len(argv[2:]), "", 0.1)
        elif argv[0] == "curl" and argv[-1].endswith("/healthz"):
            folder, name = HEALTH, self.kubelet if ":10248/" in argv[-1] else "healthz-ok"
            rc = int((folder / f"{name}.rc").read_text())
            out, err = ((folder / f"{name}.{s}").read_text() for s in ("stdout", "stderr"))
            return CommandResult(node, " ".join(argv), rc, out, err, 0.1)
        else:
            return CommandResult(node, " ".join(argv), 127, "", f"{cmd}: not found\n", 0.1)
        rc, out, err = flannel_capture(name)
        return CommandResult(node, " ".join(argv), rc, out, err, 0.1)


@pytest.mark.parametrize(("kubelet", "passes"), [("healthz-ok", True), ("healthz-refused", False)])
def test_collect_writes_the_flannel_and_components_evidence_the_checks_read(
    tmp_path: Path, kubelet: str, passes: bool
) -> None:
    expected = dataclasses.replace(COREDNS_EXPECTED, nodes=FLANNEL_EXPECTED.nodes)
    vms = CapturedVMs(expected, kubelet)
    folder = collect_hardway(vms, expected, tmp_path / "ev")
    results = {r.id: r for r in evaluate(folder, expected)}
    assert results["flannel-etcd"].passed, results["flannel-etcd"].detail
    assert results["components"].passed is passes, results["components"].detail
    if not passes:
        assert "m2: kubelet health http://127.0.0.1:10248/healthz: curl: (7)" in (
            results["components"].detail
        )
    # Each node's health probes run on that node, for the components it runs.
    probed = {(n, a[-1]) for n, a in vms.ran if a[0] == "curl" and a[-1].endswith("/healthz")}
    assert ("m1", "https://127.0.0.1:6443/healthz") in probed
    assert ("m2", "http://127.0.0.1:10256/healthz") in probed
    assert ("m1", "http://127.0.0.1:10248/healthz") not in probed  # kubelet: the nodes
    # CoreDNS is asked on the master, as the hard way's admin, in kube-system.
    assert results["coredns"].passed, results["coredns"].detail
    asked = [(n, a) for n, a in vms.ran if "kube-system" in a]
    assert [n for n, _ in asked] == ["m1", "m1"]
    assert all(
        a[:3]
        == [
            "sudo",
            "/opt/kubernetes/bin/kubectl",
            "--kubeconfig=/opt/kubernetes/cfg/admin.kubeconfig",
        ]
        for _, a in asked
    )
    # meta.json carries the DNS address: the folder alone reaches the same verdicts.
    _, again = reevaluate(folder)
    assert {r.id: (r.passed, r.detail) for r in again} == {
        r.id: (r.passed, r.detail) for r in results.values()
    }


# --- CoreDNS, from real clusters' dumps ---------------------------------------------------

DUMP_READY = "kubeadm-v1.21.0-1cp-2workers-Ready-calico.cluster-info-dump.json"
DUMP_PENDING = "kubeadm-v1.20.5-3nodes-NotReady-nocni.cluster-info-dump.txt"
# Both captured clusters put kube-dns at 10.96.0.10, the tenth address of kubeadm's
# default Service CIDR: what kubelab derives for the default config too.
COREDNS_EXPECTED = dataclasses.replace(COMPONENTS_EXPECTED, dns_service_ip="10.96.0.10")


def coredns_answers(dump: str) -> tuple[str, str]:
    """What `kubectl -n kube-system get pods -l k8s-app=kube-dns -o json` and `get service
    kube-dns -o json` print on that cluster: the dump's PodList with the selector applied
    (kubectl's server-side filter), and its kube-dns Service."""
    docs = dump_documents(dump)
    pods = docs["PodList"][0]
    selected = [
        p for p in pods["items"] if (p["metadata"].get("labels") or {}).get("k8s-app") == "kube-dns"
    ]
    service = next(
        s for s in docs["ServiceList"][0]["items"] if s["metadata"]["name"] == "kube-dns"
    )
    return json.dumps({**pods, "items": selected}), json.dumps(service)


def build_coredns(folder: Path, dump: str = DUMP_READY) -> Path:
    build_components(folder)
    pods, service = coredns_answers(dump)
    (folder / COREDNS_PODS).parent.mkdir(parents=True, exist_ok=True)
    (folder / COREDNS_PODS).write_text(pods)
    (folder / KUBE_DNS_SERVICE).write_text(service)
    return folder


def coredns_verdict(folder: Path, expected: Expected = COREDNS_EXPECTED) -> tuple[bool, str, str]:
    result = next(r for r in evaluate(folder, expected) if r.id == "coredns")
    return result.passed, result.detail, result.hint


def test_two_ready_replicas_behind_the_kube_dns_service_pass(tmp_path: Path) -> None:
    passed, detail, _ = coredns_verdict(build_coredns(tmp_path))
    assert passed, detail
    assert detail == "2 CoreDNS replicas ready; the kube-dns Service at 10.96.0.10"


def test_pending_replicas_fail_naming_each_with_where_to_look(tmp_path: Path) -> None:
    passed, detail, hint = coredns_verdict(build_coredns(tmp_path, DUMP_PENDING))
    assert not passed
    assert detail.startswith("0 of 2 CoreDNS replicas ready (coredns-74ff55c5b-9rptk Pending")
    assert "coredns-74ff55c5b-p4jxh Pending" in detail
    assert "get pods -l k8s-app=kube-dns -o wide" in hint
    assert "--kubeconfig=/opt/kubernetes/cfg/admin.kubeconfig" in hint


def test_a_kube_dns_service_away_from_the_kubelets_dns_address_fails(tmp_path: Path) -> None:
    # Manual 001's own cluster gives its kubelets 10.0.0.2: a coredns.yaml copied from
    # elsewhere keeps its Service at another address, and pods ask a server not there.
    expected = dataclasses.replace(COREDNS_EXPECTED, dns_service_ip="10.0.0.2")
    passed, detail, hint = coredns_verdict(build_coredns(tmp_path), expected)
    assert not passed
    assert detail.startswith("the kube-dns Service is at 10.96.0.10, not 10.0.0.2")
    assert "10.0.0.2" in hint


def test_no_kube_dns_service_fails(tmp_path: Path) -> None:
    folder = build_coredns(tmp_path)
    (folder / KUBE_DNS_SERVICE).unlink()
    passed, detail, _ = coredns_verdict(folder)
    assert not passed
    assert detail.startswith("no kube-dns Service in kube-system: no evidence: ")


def test_the_coredns_check_runs_only_once_the_control_plane_stage_built_the_lab(
    tmp_path: Path,
) -> None:
    folder = build_coredns(tmp_path)
    assert "coredns" not in {r.id for r in evaluate(folder, FLANNEL_EXPECTED)}
    assert "coredns" in {r.id for r in evaluate(folder, COREDNS_EXPECTED)}
