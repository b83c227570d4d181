"""The hard way's checks (manuals 004 + 001): the etcd cluster over TLS and its PKI.

Like kubelab/verify/checks.py: `collect_hardway` runs the commands on the VMs and
writes the evidence folder; the checks read only that folder and what was
expected, so `invoke verify --evidence DIR` reaches the same verdicts with no
cluster. Evidence under hardway/:

    etcd/member-list.json          my_etcdctl member list -w json (from the master)
    etcd/status.json               my_etcdctl endpoint status -w json (every member)
    etcd/health/<node>.json        {node, endpoint, rc, stdout, stderr}: endpoint health
                                   of that node's member, over TLS
    etcd/no-cert/<node>.json       {node, url, rc, http_status, body, error}: curl with
                                   the CA but no client certificate
    etcd/plain-http/<node>.json    the same record, plain http:// to the client port
    etcd/loopback/<node>.json      the same, http://127.0.0.1:2379 on the node itself
                                   (manual 004's extra plain listener)
    pki/<node>/<cert>.pem          the certificates (public) as each VM holds them
    pki/<node>/keys.txt            `stat -c '%n %a %U:%G'` of the private keys: their
                                   modes, never their content
    flannel/config.txt             my_etcdctl get <prefix>/config --print-value-only
    flannel/subnets.json           my_etcdctl get <prefix>/subnets --prefix -w json
    flannel/docker0/<node>.json    {node, rc, stdout, stderr, error}: ip -4 -o addr show
                                   dev docker0 (the bridge docker takes from flannel)

    components/<node>/units.txt    systemctl is-active <the node's components>: one line
                                   each, in the catalog's order
    components/<node>/<unit>.json  {node, url, rc, http_status, body, error}: curl of the
                                   component's health endpoint on the node itself
    coredns/pods.json              kubectl -n kube-system get pods -l k8s-app=kube-dns
                                   -o json (on the master, the hard way's admin kubeconfig)
    coredns/service.json           kubectl -n kube-system get service kube-dns -o json

The flannel files are collected when the lab's stages include flannel-etcd; a
component's when they include the stage that builds it (catalog.yaml,
hardway.components); CoreDNS's when they include control-plane, which applies it.

Private keys never leave the VMs.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import json
import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from kubelab.config import catalog
from kubelab.verify.checks import Check, Verdict, _fail, _ok, _readiness, pod_ready
from kubelab.verify.evidence import (
    CURL_WRITE_OUT,
    META,
    BadEvidence,
    Evidence,
    EvidenceWriter,
    MissingEvidence,
    items,
    meta_record,
    now,
    parse_curl_stdout,
)
from kubelab.verify.expect import Expected, ExpectedNode
from kubelab.verify.hints import Hints

ETCD_CERTS = ("ca.pem", "server.pem", "peer.pem")
ETCD_KEYS = ("server-key.pem", "peer-key.pem")
# The master's Kubernetes certificates and the CA that signs them.
KUBE_CA = "kube-ca.pem"
KUBE_CERTS = ("apiserver.pem", "admin.pem", "kube-proxy.pem", "apiserver-kubelet-client.pem")
# A certificate that expires within this long of the collection fails.
EXPIRY_MARGIN = timedelta(days=30)
_MAX_TEXT = 64 * 1024  # a record's stdout/stderr kept in evidence

FLANNEL_STAGE = "flannel-etcd"
FLANNEL_PREFIX = str(catalog()["hardway"]["flannel_etcd_prefix"])
FLANNEL_BACKEND = "vxlan"  # what the flannel-etcd stage writes (manual 004's choice)
IP = "/usr/sbin/ip"  # a non-login SSH PATH on CentOS 7 has no /usr/sbin
# Each component: its unit, where it runs, the stage that builds it, its health scheme.
COMPONENTS: tuple[dict[str, str], ...] = tuple(catalog()["hardway"]["components"])

# The stage that starts the API server and applies CoreDNS (manual 001's add-on: a
# Deployment of two replicas in kube-system behind the kube-dns Service).
CONTROL_PLANE_STAGE = "control-plane"
COREDNS_REPLICAS = 2
COREDNS_LABEL = "k8s-app=kube-dns"
COREDNS_PODS = "hardway/coredns/pods.json"
KUBE_DNS_SERVICE = "hardway/coredns/service.json"

MEMBER_LIST = "hardway/etcd/member-list.json"
FLANNEL_CONFIG = "hardway/flannel/config.txt"
FLANNEL_SUBNETS = "hardway/flannel/subnets.json"
STATUS = "hardway/etcd/status.json"


def health_path(node: str) -> str:
    return f"hardway/etcd/health/{node}.json"


def probe_path(kind: str, node: str) -> str:
    return f"hardway/etcd/{kind}/{node}.json"


def docker0_path(node: str) -> str:
    return f"hardway/flannel/docker0/{node}.json"


def units_path(node: str) -> str:
    return f"hardway/components/{node}/units.txt"


def component_health_path(node: str, unit: str) -> str:
    return f"hardway/components/{node}/{unit}.json"


def cert_path(node: str, name: str) -> str:
    return f"hardway/pki/{node}/{name}"


def keys_path(node: str) -> str:
    return f"hardway/pki/{node}/keys.txt"


# --- collecting ---------------------------------------------------------------------


class _Runner:
    """One command on one VM, recorded in commands.jsonl; never raises."""

    def __init__(self, transport: Any, writer: EvidenceWriter, timeout: float) -> None:
        self.transport, self.writer, self.timeout = transport, writer, timeout

    def run(
        self,
        check: str,
        node: ExpectedNode,
        argv: Sequence[str],
        *,
        saves: str | None = None,
        keep_on_failure: bool = False,
    ) -> tuple[int | None, str, str, str]:
        started, clock = now(), time.monotonic()
        rc: int | None = None
        stdout = stderr = error = ""
        try:
            result = self.transport.run(node.host, argv[0], *argv[1:], timeout=self.timeout)
            rc, stdout, stderr = result.rc, result.stdout, result.stderr
        except Exception as exc:  # a dropped connection is evidence like an exit code
            error = f"{type(exc).__name__}: {exc}"
        self.writer.record(
            check=check,
            node=node.name,
            argv=list(argv),
            rc=rc,
            stdout=stdout[:_MAX_TEXT],
            stderr=stderr[:_MAX_TEXT],
            error=error,
            started=started,
            finished=now(),
            duration=time.monotonic() - clock,
            saves=saves,
            keep_on_failure=keep_on_failure,
            timeout=self.timeout,
        )
        return rc, stdout, stderr, error


def _curl_record(node: str, url: str, out: tuple[int | None, str, str, str]) -> dict[str, Any]:
    rc, stdout, stderr, error = out
    body, status = parse_curl_stdout(stdout)
    return {
        "node": node,
        "url": url,
        "rc": rc,
        "http_status": status,
        "body": body.decode(errors="replace")[:2000],
        "error": error or stderr.strip()[-300:] or None,
    }


def collect_hardway(
    transport: Any,
    expected: Expected,
    out_dir: Path | str,
    *,
    lab_config: Mapping[str, Any] | None = None,
    student_id: str | None = None,
    exercise: str | int | None = None,
    timeout: float = 30.0,
    spec: Mapping[str, Any] | None = None,
) -> Path:
    """Run the hard way's commands on the VMs and write the evidence folder; return it."""
    writer = EvidenceWriter(out_dir)
    meta = meta_record(
        expected, student_id=student_id, exercise=exercise, lab_config=lab_config, spec=spec
    )
    writer.write_json(META, meta)  # first too: a killed run's folder says what it was
    try:
        _collect(_Runner(transport, writer, timeout), expected, writer)
    finally:
        meta["finished"] = now()
        writer.write_json(META, meta)
    return writer.root


def _collect(runner: _Runner, expected: Expected, writer: EvidenceWriter) -> None:
    master = expected.masters[0]
    paths = expected.guest_paths
    etcd_ssl, pki_dir = paths["etcd_ssl_dir"], paths["pki_dir"]
    sudo_ctl = ["sudo", paths["etcdctl"]]
    runner.run(
        "etcd-cluster", master, [*sudo_ctl, "member", "list", "-w", "json"], saves=MEMBER_LIST
    )
    runner.run(
        "etcd-cluster",
        master,
        [*sudo_ctl, "endpoint", "status", "-w", "json"],
        saves=STATUS,
        keep_on_failure=True,  # with a member down it prints the others and exits 1
    )
    for node in expected.nodes:
        endpoint = f"https://{node.private_ip}:{expected.etcd_client_port}"
        rc, stdout, stderr, error = runner.run(
            "etcd-cluster", node, [*sudo_ctl, f"--endpoints={endpoint}", "endpoint", "health"]
        )
        writer.write_json(
            health_path(node.name),
            {
                "node": node.name,
                "endpoint": endpoint,
                "rc": rc,
                "stdout": stdout[:_MAX_TEXT],
                "stderr": stderr[:_MAX_TEXT],
                "error": error or None,
            },
        )
        curl = ["curl", "-sS", "--noproxy", "*", "--max-time", "5", "-w", CURL_WRITE_OUT]
        probes = {
            "no-cert": ["sudo", *curl, "--cacert", f"{etcd_ssl}/ca.pem", f"{endpoint}/health"],
            "plain-http": [*curl, f"http://{node.private_ip}:{expected.etcd_client_port}/health"],
            "loopback": [*curl, f"http://127.0.0.1:{expected.etcd_client_port}/health"],
        }
        for kind, argv in probes.items():
            out = runner.run("etcd-cluster", node, argv)
            writer.write_json(probe_path(kind, node.name), _curl_record(node.name, argv[-1], out))
        for name in ETCD_CERTS:
            runner.run(
                "pki", node, ["sudo", "cat", f"{etcd_ssl}/{name}"], saves=cert_path(node.name, name)
            )
        keys = [f"{etcd_ssl}/{k}" for k in ETCD_KEYS]
        if node is master:
            keys.append(f"{pki_dir}/*-key.pem")
        # sh: the master's key list is a glob; %n %a %U:%G are modes and owners only.
        runner.run(
            "pki",
            node,
            ["sudo", "sh", "-c", "stat -c '%n %a %U:%G' " + " ".join(keys)],
            saves=keys_path(node.name),
        )
    for name in (KUBE_CA, *KUBE_CERTS):
        runner.run(
            "pki", master, ["sudo", "cat", f"{pki_dir}/{name}"], saves=cert_path(master.name, name)
        )
    if FLANNEL_STAGE in expected.stages:
        _collect_flannel(runner, expected, writer)
    _collect_components(runner, expected, writer)
    if CONTROL_PLANE_STAGE in expected.stages:
        _collect_coredns(runner, expected)


def components_of(expected: Expected, node: ExpectedNode) -> list[dict[str, str]]:
    """The components the lab's stages put on `node`, in the catalog's order; `health`
    is the URL of its /healthz on loopback ("" when it has none)."""
    return [
        {**c, "health": health_url(expected, c)}
        for c in COMPONENTS
        if c["stage"] in expected.stages and c["runs_on"] in ("all", node.role)
    ]


def etcd_facts(expected: Expected) -> dict[str, object]:
    """What the etcd hints print of the lab: its ports and etcd's files, as the spec holds them."""
    paths = expected.guest_paths
    return {
        "client_port": expected.etcd_client_port,
        "peer_port": expected.etcd_peer_port,
        "etcdctl": paths["etcdctl"],
        "etcd_ssl_dir": paths["etcd_ssl_dir"],
        "etcd_data_dir": paths["etcd_data_dir"],
        "etcd_config": paths["etcd_config"],
    }


def health_url(expected: Expected, component: Mapping[str, str]) -> str:
    scheme = component["health"]
    if not scheme:
        return ""
    return f"{scheme}://127.0.0.1:{expected.health_ports[component['unit']]}/healthz"


def _collect_components(runner: _Runner, expected: Expected, writer: EvidenceWriter) -> None:
    for node in expected.nodes:
        components = components_of(expected, node)
        if not components:
            continue
        runner.run(
            "components",
            node,
            ["systemctl", "is-active", *(c["unit"] for c in components)],
            saves=units_path(node.name),
            keep_on_failure=True,  # it exits 3 when one is not active, and lists them all
        )
        for component in components:
            if not component["health"]:
                continue
            # -k: the health port's certificate is the component's own (self-signed for
            # controller-manager and scheduler); this asks whether it answers, not who it is.
            argv = ["curl", "-sS", "-k", "--noproxy", "*", "--max-time", "5"]
            out = runner.run("components", node, [*argv, "-w", CURL_WRITE_OUT, component["health"]])
            writer.write_json(
                component_health_path(node.name, component["unit"]),
                _curl_record(node.name, component["health"], out),
            )


def coredns_kubectl(expected: Expected) -> list[str]:
    """kubectl on the master as the hard way's admin, in kube-system: the commands the
    collection runs and the hints print."""
    paths = expected.guest_paths
    return [
        f"{paths['kube_bin_dir']}/kubectl",
        f"--kubeconfig={paths['hardway_admin_kubeconfig']}",
        "-n",
        "kube-system",
    ]


def _collect_coredns(runner: _Runner, expected: Expected) -> None:
    master, kubectl = expected.masters[0], ["sudo", *coredns_kubectl(expected)]
    runner.run(
        "coredns",
        master,
        [*kubectl, "get", "pods", "-l", COREDNS_LABEL, "-o", "json"],
        saves=COREDNS_PODS,
    )
    runner.run(
        "coredns",
        master,
        [*kubectl, "get", "service", "kube-dns", "-o", "json"],
        saves=KUBE_DNS_SERVICE,
    )


def _collect_flannel(runner: _Runner, expected: Expected, writer: EvidenceWriter) -> None:
    master = expected.masters[0]
    get = ["sudo", expected.guest_paths["etcdctl"], "get"]
    runner.run(
        "flannel-etcd",
        master,
        [*get, f"{FLANNEL_PREFIX}/config", "--print-value-only"],
        saves=FLANNEL_CONFIG,
    )
    runner.run(
        "flannel-etcd",
        master,
        [*get, f"{FLANNEL_PREFIX}/subnets", "--prefix", "-w", "json"],
        saves=FLANNEL_SUBNETS,
    )
    for node in expected.nodes:
        rc, stdout, stderr, error = runner.run(
            "flannel-etcd", node, [IP, "-4", "-o", "addr", "show", "dev", "docker0"]
        )
        record = {"node": node.name, "rc": rc, "stdout": stdout[:_MAX_TEXT]}
        writer.write_json(
            docker0_path(node.name),
            {**record, "stderr": stderr[:_MAX_TEXT], "error": error or None},
        )


# --- the etcd-cluster check -----------------------------------------------------------


def identify_members(member_list: Any, expected: Expected) -> Expected:
    """`expected` with each node's etcd member name found in the member list: its own
    name, else the member whose peer URL is at the node's private IP (a lab built
    without the student ID that `verify --student` adds to the names, or a student's
    own ETCD_NAME). The certificates' SANs are then checked against those names."""
    members = [m for m in member_list.get("members") or [] if isinstance(m, dict)]
    free = {str(m.get("name")): m for m in members}
    found: dict[int, str] = {}
    for i, node in enumerate(expected.nodes):
        if node.name in free:
            found[i] = node.name
            free.pop(node.name)
    for i, node in enumerate(expected.nodes):
        if i in found:
            continue
        for name, member in free.items():
            hosts = {re.sub(r"^\w+://|:\d+$", "", str(u)) for u in member.get("peerURLs") or []}
            if node.private_ip in hosts:
                found[i] = name
                free.pop(name)
                break
    nodes = tuple(
        n._replace(registered=found[i]) if found.get(i, n.name) != n.name else n
        for i, n in enumerate(expected.nodes)
    )
    return dataclasses.replace(expected, nodes=nodes)


_HEALTHY = re.compile(r"^(\S+) is healthy: ", re.MULTILINE)
_UNHEALTHY = re.compile(r"^(\S+) is unhealthy: (.*)$", re.MULTILINE)


def _member_health(record: dict[str, Any]) -> tuple[bool, str]:
    """(healthy, why) from one `endpoint health` record, as etcdctl 3.3/3.4 print it.

    Only the verdict line of the record's own endpoint counts: a wrapper that asked
    every member (etcdctl appends a second --endpoints to the first) prints the
    others' lines too, and one member down must not make them all look down.
    """
    if record.get("error"):
        return False, str(record["error"])
    # etcdctl 3.4 prints the verdict line on stderr, next to its JSON warnings.
    output = f"{record.get('stdout') or ''}\n{record.get('stderr') or ''}"
    endpoint = str(record.get("endpoint") or "")

    def own(line: re.Match[str]) -> bool:
        return not endpoint or line.group(1) == endpoint

    healthy = any(own(m) for m in _HEALTHY.finditer(output))
    unhealthy = [m for m in _UNHEALTHY.finditer(output) if own(m)]
    # The exit status covers every endpoint asked; with the endpoint known, its line decides.
    if healthy and not unhealthy and (endpoint or record.get("rc") == 0):
        return True, "healthy"
    if unhealthy:
        return False, unhealthy[0].group(2).strip()
    tail = [line for line in str(record.get("stderr") or "").splitlines() if line.strip()]
    return False, (tail[-1] if tail else f"etcdctl exited {record.get('rc')}")[:200]


def _answers_health(record: dict[str, Any]) -> bool:
    """Whether a curl record got etcd's health document (HTTP 200, a "health" key)."""
    return record.get("http_status") == 200 and '"health"' in str(record.get("body") or "")


def check_etcd_cluster(evidence: Evidence, expected: Expected) -> Verdict:
    problems: list[str] = []
    hints = Hints()
    members = evidence.json(MEMBER_LIST).get("members") or []
    names = {str(m.get("name")) for m in members}
    want = [n.k8s_name for n in expected.nodes]  # the member names found (identify_members)
    missing = [n for n in want if n not in names]
    extra = sorted(names - set(want))
    if missing:
        problems.append(f"not members: {', '.join(missing)}")
        hints.add("etcd_member_missing", node=", ".join(missing), **etcd_facts(expected))
    if extra:
        problems.append(f"members the lab does not list: {', '.join(extra)}")

    down: list[str] = []
    for node in expected.nodes:
        healthy, why = _member_health(evidence.json(health_path(node.name)))
        if not healthy:
            down.append(f"{node.name} ({why})")
    quorum = len(expected.nodes) // 2 + 1
    up = len(expected.nodes) - len(down)

    leaders = set()
    status = evidence.json(STATUS) if evidence.has(STATUS) else []
    for entry in status if isinstance(status, list) else []:
        leader = (entry.get("Status") or {}).get("leader")
        if leader:
            leaders.add(leader)
    member_ids = {m.get("ID") for m in members}

    for node in expected.nodes:
        if _answers_health(evidence.json(probe_path("no-cert", node.name))):
            problems.append(f"{node.name} answers a client without a certificate")
            hints.add("etcd_client_cert_auth", node=node.name, **etcd_facts(expected))
        for kind in ("plain-http", "loopback"):
            record = evidence.json(probe_path(kind, node.name))
            if _answers_health(record):
                problems.append(f"{node.name} answers plain HTTP at {record.get('url')}")
                hints.add("etcd_plain_http", node=node.name, **etcd_facts(expected))

    if up < quorum:
        problems.insert(
            0, f"no quorum: {up} of {len(expected.nodes)} members healthy, down: {', '.join(down)}"
        )
        hints.add(
            "etcd_down", node=", ".join(d.split(" ")[0] for d in down), **etcd_facts(expected)
        )
    elif len(leaders) != 1 or not leaders <= member_ids:
        problems.append("no single leader among the members (endpoint status)")
        hints.add("etcd_down", node="the cluster", **etcd_facts(expected))
    if problems:
        return _fail(problems, hints)
    detail = f"{up} of {len(expected.nodes)} members healthy over TLS (quorum {quorum}), one leader"
    if down:
        detail += f"; down: {', '.join(down)}"
    return _ok(detail + "; no answer without a client certificate or over plain HTTP")


# --- the pki check ----------------------------------------------------------------------


def _load_cert(evidence: Evidence, rel: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(evidence.text(rel).encode())
    except ValueError as exc:
        raise BadEvidence(rel, f"not a PEM certificate ({exc})") from None


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    key = ca.public_key()
    if cert.issuer != ca.subject or not isinstance(key, rsa.RSAPublicKey):
        return False
    algorithm = cert.signature_hash_algorithm
    if algorithm is None:
        return False
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), algorithm)
    except Exception:  # InvalidSignature: the chain is broken
        return False
    return True


def _sans(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(
        ext.get_values_for_type(x509.DNSName)
    )


def _usages(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return set()
    names = {
        ExtendedKeyUsageOID.SERVER_AUTH: "server auth",
        ExtendedKeyUsageOID.CLIENT_AUTH: "client auth",
    }
    return {names[u] for u in ext if u in names}


def _cert_problems(
    evidence: Evidence, node: str, name: str, ca: x509.Certificate, at: datetime
) -> list[str]:
    cert = _load_cert(evidence, cert_path(node, name))
    problems = []
    if not _signed_by(cert, ca):
        problems.append(f"{node}:{name} is not signed by its CA")
    if cert.not_valid_after_utc - at < EXPIRY_MARGIN:
        problems.append(f"{node}:{name} expires {cert.not_valid_after_utc:%Y-%m-%d}")
    if cert.not_valid_before_utc > at + timedelta(minutes=5):
        problems.append(f"{node}:{name} is not valid before {cert.not_valid_before_utc:%Y-%m-%d}")
    return problems


def check_pki(evidence: Evidence, expected: Expected) -> Verdict:
    problems: list[str] = []
    hints = Hints()
    members = {n.private_ip for n in expected.nodes} | {n.k8s_name for n in expected.nodes}
    for node in expected.nodes:
        at = evidence.observed_at(cert_path(node.name, "ca.pem")) or datetime.now(UTC)
        ca = _load_cert(evidence, cert_path(node.name, "ca.pem"))
        for name in ("server.pem", "peer.pem"):
            problems += _cert_problems(evidence, node.name, name, ca, at)
            cert = _load_cert(evidence, cert_path(node.name, name))
            sans = _sans(cert)
            if sans != members:
                wrong = sorted(sans - members)
                lacking = sorted(members - sans)
                problems.append(
                    f"{node.name}:{name} SANs"
                    + (f" lack {', '.join(lacking)}" if lacking else "")
                    + (f" add {', '.join(wrong)}" if wrong else "")
                )
                hints.add("pki_sans", node=node.name, **etcd_facts(expected))
            if _usages(cert) != {"server auth", "client auth"}:
                problems.append(f"{node.name}:{name} lacks server and client auth usage")
        for line in evidence.text(keys_path(node.name)).splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] != "600":
                problems.append(f"{node.name}:{parts[0]} has mode {parts[1]}, not 600")
                hints.add("pki_key_mode", node=node.name, **etcd_facts(expected))
    master = expected.masters[0]
    at = evidence.observed_at(cert_path(master.name, KUBE_CA)) or datetime.now(UTC)
    kube_ca = _load_cert(evidence, cert_path(master.name, KUBE_CA))
    for name in KUBE_CERTS:
        problems += _cert_problems(evidence, master.name, name, kube_ca, at)
    if problems:
        return _fail(problems, hints)
    return _ok(
        f"etcd server and peer certificates on {len(expected.nodes)} VMs: SANs = the members, "
        f"chained to the CA, server+client auth; {len(KUBE_CERTS)} Kubernetes certificates "
        "chained to theirs; private keys 600"
    )


# --- the flannel-etcd check ------------------------------------------------------------


def _leases(evidence: Evidence) -> list[tuple[ipaddress.IPv4Network, str]]:
    """(subnet, PublicIP) of every lease under <prefix>/subnets, from etcdctl's JSON
    (keys and values base64); a key not shaped <net>-<len> is unreadable evidence."""
    leases = []
    for kv in evidence.json(FLANNEL_SUBNETS).get("kvs") or []:
        key = base64.b64decode(kv["key"]).decode()
        subnet = key.rsplit("/", 1)[-1].replace("-", "/")
        value = json.loads(base64.b64decode(kv["value"]))
        leases.append((ipaddress.IPv4Network(subnet), str(value.get("PublicIP"))))
    return leases


_INET = re.compile(r"\binet (\d+\.\d+\.\d+\.\d+/\d+)")


def check_flannel_etcd(evidence: Evidence, expected: Expected) -> Verdict:
    problems: list[str] = []
    hints = Hints()
    key = f"{FLANNEL_PREFIX}/config"
    text = evidence.text(FLANNEL_CONFIG).strip()
    network = None
    if not text:
        problems.append(f"no network config at {key}")
        hints.add(
            "flannel_config", config_key=key, pod_cidr=expected.pod_cidr, **etcd_facts(expected)
        )
    else:
        try:
            config = json.loads(text)
            network = ipaddress.IPv4Network(str(config.get("Network")))
            backend = str((config.get("Backend") or {}).get("Type"))
        except (ValueError, AttributeError):
            config, backend = None, ""
        if network is None or str(network) != expected.pod_cidr:
            problems.append(f"{key} gives Network {network}, not the pod CIDR {expected.pod_cidr}")
            hints.add(
                "flannel_config", config_key=key, pod_cidr=expected.pod_cidr, **etcd_facts(expected)
            )
        elif backend != FLANNEL_BACKEND:
            problems.append(f"{key} gives backend {backend}, not {FLANNEL_BACKEND}")
            hints.add(
                "flannel_config", config_key=key, pod_cidr=expected.pod_cidr, **etcd_facts(expected)
            )

    leases = _leases(evidence)
    bridges = []
    for node in expected.nodes:
        held = [subnet for subnet, public_ip in leases if public_ip == node.private_ip]
        if len(held) != 1:
            listed = f" ({', '.join(map(str, held))})" if held else ""
            problems.append(f"{node.name} holds {len(held)} subnet leases{listed}, not 1")
            hints.add("flannel_lease", node=node.name)
            continue
        subnet = held[0]
        if network is not None and not subnet.subnet_of(network):
            problems.append(f"{node.name}'s lease {subnet} is outside {network}")
            hints.add("flannel_lease", node=node.name)
        record = evidence.json(docker0_path(node.name))
        found = _INET.search(str(record.get("stdout") or ""))
        if record.get("rc") != 0 or not found:
            continue  # no docker bridge: the runtime is containerd (pods use flannel's CNI)
        bridge = ipaddress.IPv4Interface(found.group(1))
        if bridge.network.subnet_of(subnet):
            bridges.append(node.name)
        else:
            problems.append(f"{node.name}'s docker0 {bridge} is outside its subnet {subnet}")
            hints.add("flannel_docker_bip", node=node.name, subnet=str(subnet))
    if problems:
        return _fail(problems, hints)
    detail = (
        f"{key}: Network {network}, {FLANNEL_BACKEND}; one subnet lease for each of "
        f"{len(expected.nodes)} nodes"
    )
    if bridges:
        detail += f"; docker0 inside its node's subnet on {', '.join(bridges)}"
    return _ok(detail)


# --- the components check ---------------------------------------------------------------


def check_components(evidence: Evidence, expected: Expected) -> Verdict:
    problems: list[str] = []
    hints = Hints()
    counted = 0
    for node in expected.nodes:
        components = components_of(expected, node)
        if not components:
            continue
        states = evidence.text(units_path(node.name)).split()
        for i, component in enumerate(components):
            unit, counted = component["unit"], counted + 1
            state = states[i] if i < len(states) else "not listed"
            if state != "active":
                problems.append(f"{node.name}: {unit} is {state}")
                hints.add("component_down", node=node.name, unit=unit)
                continue
            if not component["health"]:
                continue
            record = evidence.json(component_health_path(node.name, unit))
            body = str(record.get("body") or "").strip()
            if record.get("http_status") != 200 or body != "ok":
                got = record.get("error") or f"HTTP {record.get('http_status')} {body[:80]!r}"
                problems.append(f"{node.name}: {unit} health {record.get('url')}: {got}")
                ports = ", ".join(f"{u} {p}" for u, p in expected.health_ports.items())
                hints.add(
                    "component_health",
                    node=node.name,
                    unit=unit,
                    url=component["health"],
                    ports=ports,
                )
    if problems:
        return _fail(problems, hints)
    return _ok(f"{counted} components active under systemd; each health endpoint answers ok")


# --- the CoreDNS check ------------------------------------------------------------------


def check_coredns(evidence: Evidence, expected: Expected) -> Verdict:
    """Manual 001's add-on: two CoreDNS replicas ready, behind the kube-dns Service at the
    address the kubelets give pods as their DNS server."""
    problems: list[str] = []
    hints = Hints()
    facts = {
        "kubectl": " ".join(coredns_kubectl(expected)),
        "dns_service_ip": expected.dns_service_ip or "(the kubelets' clusterDNS)",
        "replicas": COREDNS_REPLICAS,
    }
    pods = items(evidence.json(COREDNS_PODS), COREDNS_PODS)
    ready = [p for p in pods if pod_ready(p)]
    if len(ready) < COREDNS_REPLICAS:
        states = ", ".join(
            f"{(p.get('metadata') or {}).get('name', '?')} {_readiness(p)}" for p in pods
        )
        problems.append(
            f"{len(ready)} of {COREDNS_REPLICAS} CoreDNS replicas ready"
            + (f" ({states})" if states else f" (no pod labelled {COREDNS_LABEL})")
        )
        hints.add("coredns_hardway", **facts)
    cluster_ip = "none"
    try:
        service = evidence.json(KUBE_DNS_SERVICE)
    except MissingEvidence as exc:
        problems.append(f"no kube-dns Service in kube-system: {exc}")
        hints.add("coredns_hardway", **facts)
    else:
        cluster_ip = str((service.get("spec") or {}).get("clusterIP") or "none")
        if expected.dns_service_ip and cluster_ip != expected.dns_service_ip:
            problems.append(
                f"the kube-dns Service is at {cluster_ip}, not {expected.dns_service_ip} "
                "(the kubelets' clusterDNS): pods would ask a DNS server that is not there"
            )
            hints.add("coredns_hardway", **facts)
    if problems:
        return _fail(problems, hints)
    return _ok(f"{len(ready)} CoreDNS replicas ready; the kube-dns Service at {cluster_ip}")


HARDWAY_CHECKS: tuple[Check, ...] = (
    Check(
        "etcd-cluster",
        "etcd members healthy over TLS, one leader, no plain HTTP",
        check_etcd_cluster,
    ),
    Check("pki", "Certificates: SANs, chain, expiry, key modes", check_pki),
    Check(
        "flannel-etcd",
        "flannel's config and one subnet lease per node in etcd, docker's bridge inside it",
        check_flannel_etcd,
        only_if=lambda e: FLANNEL_STAGE in e.stages,
    ),
    Check(
        "components",
        "Every component's systemd unit active and its health endpoint answering",
        check_components,
        only_if=lambda e: any(components_of(e, n) for n in e.nodes),
    ),
    Check(
        "coredns",
        "CoreDNS's replicas ready behind the kube-dns Service at the kubelets' DNS address",
        check_coredns,
        only_if=lambda e: CONTROL_PLANE_STAGE in e.stages,
    ),
)
