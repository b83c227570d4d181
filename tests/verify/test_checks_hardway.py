"""The hard way's checks over evidence folders made from real captures.

etcd's answers are real etcd 3.4.23 output (tests/data/verify/hardway/etcd-3.4.23,
see its SOURCES.md): a 3-member TLS cluster healthy, with one member down, with
two down. The certificates are real cfssl output (tests/data/verify/hardway/pki).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kubelab.verify.checks import evaluate
from kubelab.verify.checks_hardway import (
    ETCD_CERTS,
    KUBE_CA,
    KUBE_CERTS,
    MEMBER_LIST,
    STATUS,
    cert_path,
    health_path,
    keys_path,
    probe_path,
)
from kubelab.verify.evidence import parse_curl_stdout
from kubelab.verify.expect import Expected, ExpectedNode
from kubelab.verify.lab import reevaluate

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
) -> Path:
    """An evidence folder as collect_hardway writes it, from the captures of `case`."""
    commands = []

    def save(rel: str, text: str) -> None:
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        commands.append({"check": "x", "node": "m1", "saves": rel, "rc": 0, "finished": COLLECTED})

    save(MEMBER_LIST, capture(f"{case}-member-list")[1])
    save(STATUS, capture(f"{case}-status")[1])
    for i, node in enumerate(EXPECTED.nodes, start=1):
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
        save(cert_path("m1", name), (PKI / "good" / name).read_text())
    (folder / "commands.jsonl").write_text("".join(json.dumps(c) + "\n" for c in commands))
    (folder / "meta.json").write_text(json.dumps({"expected": EXPECTED.to_dict()}))
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
