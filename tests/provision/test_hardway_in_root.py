"""The hard way's PKI and etcd stages, run for real in the isolated root.

cfssl and cfssljson are the real Debian binaries (golang-cfssl, when installed
on this machine); the certificates they make are checked with the real
openssl. etcd cannot form a cluster in a root without a network, so systemctl
and etcdctl are the recording stubs; the real cluster forms on the VMs
(tests/e2e/test_hardway_vms.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from kubelab.plan import Plan, PlannedNode, Stage, for_node
from tests.provision.harness import Guest, guest_factory, render_lab, script_for
from tests.provision.test_stages_in_root import run_twice

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("cfssl"), reason="golang-cfssl is not installed here"),
]

HARDWAY = ["prepare", "repos", "pki", "etcd"]
# etcd's member certificates, then what the node components need (node-components).
BUNDLE_FILES = [
    *("ca.pem", "server.pem", "server-key.pem", "peer.pem", "peer-key.pem"),
    *("kube-ca.pem", "kube-proxy.pem", "kube-proxy-key.pem", "bootstrap-token"),
]


def openssl(*args: str) -> str:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=True)
    return done.stdout


def sans(cert: Path) -> set[str]:
    text = openssl("x509", "-in", str(cert), "-noout", "-ext", "subjectAltName")
    names = text.splitlines()[1].strip().split(", ")
    return {n.split(":", 1)[1] for n in names}


def build(
    new_guest: Any, guest: str, stages: list[str] = HARDWAY, **overrides: Any
) -> tuple[Plan, dict[str, str], dict[str, Guest]]:
    """The master and one node through `stages`, in the runner's order, each stage twice."""
    overrides = {"provision.stages": stages, **overrides}
    if guest != "centos7":
        overrides["box.guest"] = guest
    plan, files = render_lab(overrides)
    guests = {n.name: new_guest(guest, n) for n in plan.nodes[:2]}  # the master and one node
    master = plan.master
    for node, stage in runner_order(plan):
        if stage.receives:
            run_etcd_twice(plan, files, guests[master.name], guests[node.name], node, stage)
        else:
            run_twice(guests[node.name], plan, files, node, stage.name)
    return plan, files, guests


def runner_order(plan: Plan) -> list[tuple[PlannedNode, Stage]]:
    """The master and the first node's stages in the StageRunner's order: the master's,
    the node's, then the master's `after_nodes` stages."""
    master, worker = plan.master, plan.workers[0]
    order = [(master, s) for s in plan.stages_for(master) if not s.after_nodes]
    order += [(worker, s) for s in plan.stages_for(worker)]
    order += [(master, s) for s in plan.stages_for(master) if s.after_nodes]
    return order


def run_etcd_twice(
    plan: Plan, files: dict[str, str], master: Guest, guest: Guest, node: PlannedNode, stage: Stage
) -> None:
    """The etcd stage as the host runs it, twice: the bundle shipped before each run."""
    script = script_for(plan, files, node, stage.name)
    first = guest.run(script, receive(master, guest, node, stage))
    assert first.rc == 0, f"etcd on {node.name} failed:\n{first.output[-4000:]}"
    digest = guest.tree_digest()
    second = guest.run(script, receive(master, guest, node, stage))
    assert second.rc == 0, f"etcd on {node.name} failed on the second run:\n{second.output}"
    assert guest.tree_digest() == digest, f"the second run changed files:\n{second.stdout}"
    assert "wrote:" not in second.stdout
    assert not [c for c in second.calls if c.args[:1] in (["restart"], ["install"])]


def receive(master: Guest, guest: Guest, node: PlannedNode, stage: Stage) -> dict[str, str]:
    """What the host does before a stage that receives files (the catalog's `receives`):
    each of `node`'s from the master, 0600; the variables that name them."""
    env = {}
    for item in stage.receives:
        source = master.path(for_node(item.from_master, node))
        assert source is not None, f"the master holds no {item.from_master} for {node.hostname}"
        target = guest.ctl / item.to
        target.write_bytes(source.read_bytes())
        target.chmod(0o600)
        env[item.env] = f"/opt/kubelab-test/ctl/{item.to}"
    return env


@pytest.fixture(scope="module")
def centos7_lab(
    tmp_path_factory: pytest.TempPathFactory, base: Path, harness_layer: Path
) -> tuple[Plan, dict[str, str], dict[str, Guest]]:
    """The master and one node of CentOS 7 through HARDWAY, built once for the tests that
    read it (the pki checks) or go on from a copy of it (the certificates wiped)."""
    folder = tmp_path_factory.mktemp("hardway-centos7")
    return build(guest_factory(folder, base, harness_layer), "centos7")


def test_pki_makes_the_manuals_certificates_and_etcd_gets_its_member(
    centos7_lab: tuple[Plan, dict[str, str], dict[str, Guest]],
) -> None:
    check_pki(*centos7_lab)


def test_pki_and_etcd_on_debian12(new_guest: Any) -> None:
    check_pki(*build(new_guest, "debian12"))


def check_pki(plan: Plan, files: dict[str, str], guests: dict[str, Guest]) -> None:
    master = guests[plan.master.name]
    pki = master.upper / "opt/kubelab/pki"
    members = {n.ip for n in plan.nodes} | {n.hostname for n in plan.nodes}

    # SANs: exactly the members' private IPs and hostnames (no loopback listener).
    assert sans(pki / "server.pem") == members
    assert sans(pki / "peer.pem") == members
    api_sans = sans(pki / "apiserver.pem")
    assert {plan.kubernetes["service_ip"], plan.master.ip, "kubernetes.default.svc"} <= api_sans
    # The chain: each certificate is signed by its CA.
    for ca, names in {
        "ca": ["server", "peer"],
        "kube-ca": ["apiserver", "admin", "kube-proxy", "apiserver-kubelet-client"],
    }.items():
        for name in names:
            out = openssl("verify", "-CAfile", str(pki / f"{ca}.pem"), str(pki / f"{name}.pem"))
            assert out.strip().endswith(": OK"), out
    # The manual's www profile: server and client auth; 87600h = 10 years.
    usage = openssl("x509", "-in", str(pki / "server.pem"), "-noout", "-ext", "extendedKeyUsage")
    assert "TLS Web Server Authentication" in usage and "TLS Web Client Authentication" in usage
    client_usage = openssl(
        "x509", "-in", str(pki / "admin.pem"), "-noout", "-ext", "extendedKeyUsage"
    )
    assert "TLS Web Server Authentication" not in client_usage
    assert "O = system:masters" in openssl(
        "x509", "-in", str(pki / "admin.pem"), "-noout", "-subject"
    )
    assert (
        subprocess.run(  # valid for 9.9 years from now: the 87600h expiry
            [
                "openssl",
                "x509",
                "-in",
                str(pki / "server.pem"),
                "-noout",
                "-checkend",
                str(9 * 365 * 86400),
            ],
            capture_output=True,
        ).returncode
        == 0
    )
    # Private keys 0600, never printed.
    for key in pki.glob("*-key.pem"):
        assert key.stat().st_mode & 0o777 == 0o600, key
    for g in guests.values():
        for run in g.runs:
            assert "PRIVATE KEY" not in run.output

    for node in plan.nodes[:2]:
        g = guests[node.name]
        [pki] = [s for s in plan.stages if s.name == "pki"]
        bundle = master.path(for_node(pki.leaves, node))
        assert bundle is not None
        assert bundle.stat().st_mode & 0o777 == 0o600
        with tarfile.open(bundle) as tar:
            assert tar.getnames() == BUNDLE_FILES
        for name in ("server-key.pem", "peer-key.pem"):
            key = g.upper / "opt/etcd/ssl" / name
            assert key.stat().st_mode & 0o777 == 0o600
        assert not (g.ctl / "pki-bundle.tar").exists()  # the stage deletes what was shipped
        env = g.read("/opt/etcd/cfg/etcd")
        cluster = ",".join(f"{n.hostname}=https://{n.ip}:2380" for n in plan.nodes)
        assert f'ETCD_INITIAL_CLUSTER="{cluster}"' in env
        assert f'ETCD_LISTEN_CLIENT_URLS="https://{node.ip}:2379"' in env
        assert 'ETCD_CLIENT_CERT_AUTH="true"' in env
        assert not [v for v in env.splitlines() if "http://" in v and not v.startswith("#")]
        unit = g.read("/etc/systemd/system/etcd.service")
        assert "EnvironmentFile=/opt/etcd/cfg/etcd" in unit and "User=etcd" in unit
        starts = [c for c in g.runs[-2].calls if c.name == "systemctl" and "--no-block" in c.args]
        assert starts, "etcd starts without waiting for the quorum"
        waited = [c for r in g.runs for c in r.calls if c.name == "etcdctl"]
        if node.is_master:
            assert not waited  # the master's member cannot be healthy before the nodes'
        else:
            assert any(f"--endpoints=https://{node.ip}:2379" in c.args for c in waited)


def test_after_the_certificates_are_wiped_the_stages_rebuild_them_and_etcd_restarts(
    centos7_lab: tuple[Plan, dict[str, str], dict[str, Guest]], tmp_path: Path
) -> None:
    """A student's reset of the PKI (the folder removed, as a fresh start would): the
    pki stage makes a new CA and certificates, and the etcd stage hands them to the
    member and restarts it, on a VM whose member ran with the old ones."""
    plan, files, built = centos7_lab
    guests = {name: guest.clone(tmp_path / name) for name, guest in built.items()}
    master, node = plan.master, plan.workers[0]
    old_ca = guests[master.name].read("/opt/kubelab/pki/ca.pem")
    shutil.rmtree(guests[master.name].upper / "opt/kubelab/pki")

    pki = guests[master.name].run(script_for(plan, files, master, "pki"))
    assert pki.rc == 0, pki.output[-3000:]
    new_ca = guests[master.name].read("/opt/kubelab/pki/ca.pem")
    assert new_ca != old_ca
    member = guests[node.name]
    [etcd_stage] = [s for s in plan.stages if s.name == "etcd"]
    etcd = member.run(
        script_for(plan, files, node, "etcd"),
        receive(guests[master.name], member, node, etcd_stage),
    )
    assert etcd.rc == 0, etcd.output[-3000:]
    assert member.read("/opt/etcd/ssl/ca.pem") == new_ca
    assert "restarting etcd (its configuration changed)" in etcd.stdout
    assert [c for c in etcd.calls if c.name == "systemctl" and "restart" in c.args]


def test_etcd_refuses_to_run_without_its_bundle(new_guest: Any) -> None:
    plan, files = render_lab({"provision.stages": HARDWAY})
    guest = new_guest("centos7", plan.master)
    result = guest.run(script_for(plan, files, plan.master, "etcd"))
    assert result.rc == 1
    assert "no certificate bundle (KUBELAB_PKI_BUNDLE)" in result.stderr


@pytest.mark.parametrize("runtime", ["docker", "containerd"])
def test_flannel_config_in_etcd_flanneld_on_eth1_and_dockers_bridge(
    new_guest: Any, runtime: str
) -> None:
    stages = ["prepare", "repos", "pki", "etcd", "runtime", "flannel-etcd"]
    plan, files, guests = build(new_guest, "centos7", stages, **{"kubernetes.runtime": runtime})
    version = plan.cni["version"]
    for node in plan.nodes[:2]:
        g = guests[node.name]
        kv = g.state / "etcd-kv" / "_coreos.com_network_config"
        assert json.loads(kv.read_text()) == {
            "Network": plan.kubernetes["pod_cidr"],
            "Backend": {"Type": "vxlan"},
        }
        options = g.read("/opt/kubernetes/cfg/flanneld")
        endpoints = ",".join(f"https://{n.ip}:2379" for n in plan.nodes)
        assert f"--etcd-endpoints={endpoints}" in options and "--iface=eth1" in options
        assert "-etcd-keyfile=/opt/etcd/ssl/server-key.pem" in options
        unit = g.read("/etc/systemd/system/flanneld.service")
        assert (
            "ExecStartPost=/opt/kubernetes/bin/mk-docker-opts.sh -k DOCKER_NETWORK_OPTIONS" in unit
        )
        downloads = [c for r in g.runs for c in r.calls if c.name == "curl" and "flannel" in str(c)]
        assert len(downloads) == 1, downloads  # once: the second run finds flanneld in place
        url = f"{plan.mirror['flannel_release']}/{version}/flannel-{version}-linux-amd64.tar.gz"
        assert url in downloads[0].args
        assert (g.state / "active" / "flanneld").exists()
        dropin = "/etc/systemd/system/docker.service.d/flannel.conf"
        if runtime == "docker":
            assert "ExecStart=/usr/bin/dockerd -H fd:// " in g.read(dropin)
            assert "$DOCKER_NETWORK_OPTIONS" in g.read(dropin)
        else:
            assert not g.exists(dropin)
