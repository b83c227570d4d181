"""The hard way's control-plane and node-components stages, run in the isolated root.

No Kubernetes server binary exists here: the release tarballs are built by the
test, their binaries the recording stub (kubectl's `config` answers as a stand-in
that writes one line per call). The catalog's sha512 is set to the stand-in's for
the runs that must install it, and left as the real release's for the run that must
refuse it. The real cfssl makes the certificates (pki), as in test_hardway_in_root.
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import hashlib
import io
import ipaddress
import shutil
import tarfile
from typing import Any

import pytest
import yaml

from kubelab.config import catalog
from kubelab.plan import Plan, PlannedNode, Stage
from kubelab.render import render
from tests.provision.harness import STUB_DIR_IN_ROOT, Guest, render_lab, script_for
from tests.provision.test_hardway_in_root import receive, runner_order
from tests.provision.test_stages_in_root import run_twice

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("cfssl"), reason="golang-cfssl is not installed here"),
]

HARDWAY = catalog()["builds"]["hardway"]
LOCAL_REPO = "var/lib/kubelab/local-repo"
SERVER_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
NODE_BINARIES = ("kubelet", "kube-proxy", "kubectl")


def release_tarball(part: str, binaries: tuple[str, ...]) -> bytes:
    """The release's layout (kubernetes/<part>/bin/<binary>), each binary the stub."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for binary in binaries:
            info = tarfile.TarInfo(f"kubernetes/{part}/bin/{binary}")
            info.type = tarfile.SYMTYPE
            info.linkname = f"{STUB_DIR_IN_ROOT}/kubelab-stub"
            info.mode = 0o755
            tar.addfile(info)
    return gzip.compress(raw.getvalue(), mtime=0)


TARBALLS = {"server": release_tarball("server", SERVER_BINARIES)}
TARBALLS["node"] = release_tarball("node", NODE_BINARIES)


def pinned_to_stand_ins(plan: Plan) -> Plan:
    """The plan with the catalog's sha512 of each tarball set to the stand-in's."""
    hardway = copy.deepcopy(plan.hardway)
    for part, data in TARBALLS.items():
        hardway["kube_release"][part]["sha512"] = hashlib.sha512(data).hexdigest()
    return dataclasses.replace(plan, hardway=hardway)


def put_in_local_repo(guest: Guest, plan: Plan) -> None:
    for part, data in TARBALLS.items():
        path = guest.upper / LOCAL_REPO / plan.hardway["kube_release"][part]["tarball"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def run_shipped_twice(
    plan: Plan, files: dict[str, str], master: Guest, guest: Guest, node: PlannedNode, stage: Stage
) -> None:
    """A stage the host ships the bundle to, twice, as StageRunner runs it."""
    script = script_for(plan, files, node, stage.name)
    first = guest.run(script, receive(master, guest, node, stage))
    assert first.rc == 0, f"{stage} on {node.name} failed:\n{first.output[-4000:]}"
    digest = guest.tree_digest()
    second = guest.run(script, receive(master, guest, node, stage))
    assert second.rc == 0, f"{stage} on {node.name} failed on the second run:\n{second.output}"
    assert guest.tree_digest() == digest, f"the second run changed files:\n{second.stdout}"
    assert "wrote:" not in second.stdout
    assert not [c for c in second.calls if c.args[:1] in (["restart"], ["install"])]


def build(new_guest: Any, guest: str, runtime: str) -> tuple[Plan, dict[str, Guest]]:
    """The hard way's build on the master and one node, in the runner's order, each stage twice."""
    overrides = {"provision.stages": HARDWAY, "kubernetes.runtime": runtime}
    if guest != "centos7":
        overrides["box.guest"] = guest
    plan = pinned_to_stand_ins(render_lab(overrides)[0])
    files = render(plan)
    guests = {n.name: new_guest(guest, n) for n in plan.nodes[:2]}
    for g in guests.values():
        put_in_local_repo(g, plan)
    master = plan.master
    for node, stage in runner_order(plan):
        if stage.receives:
            run_shipped_twice(plan, files, guests[master.name], guests[node.name], node, stage)
        else:
            run_twice(guests[node.name], plan, files, node, stage.name)
    return plan, guests


def unit_flags(text: str) -> list[str]:
    """The flags of a unit's ExecStart (continuation lines joined)."""
    start = text.split("ExecStart=", 1)[1].split("\nRestart=", 1)[0]
    return start.replace("\\\n", " ").split()[1:]


@pytest.mark.parametrize(("guest", "runtime"), [("centos7", "docker"), ("debian12", "containerd")])
def test_the_control_plane_and_the_nodes_from_the_release(
    new_guest: Any, guest: str, runtime: str
) -> None:
    plan, guests = build(new_guest, guest, runtime)
    master, node = guests[plan.master.name], guests[plan.workers[0].name]
    pki = "/opt/kubelab/pki"
    etcd_servers = ",".join(f"https://{n.ip}:2379" for n in plan.nodes)

    # The master: the server binaries, installed once, from the local package folder.
    for binary in SERVER_BINARIES:
        assert (master.upper / "opt/kubernetes/bin" / binary).stat().st_mode & 0o777 == 0o755
    apiserver = unit_flags(master.read("/etc/systemd/system/kube-apiserver.service"))
    for flag in (
        "--secure-port=6443",
        f"--advertise-address={plan.master.ip}",
        "--enable-bootstrap-token-auth=true",
        "--token-auth-file=/opt/kubernetes/cfg/token.csv",
        f"--client-ca-file={pki}/kube-ca.pem",
        f"--tls-cert-file={pki}/apiserver.pem",
        f"--tls-private-key-file={pki}/apiserver-key.pem",
        f"--etcd-servers={etcd_servers}",
        "--etcd-certfile=/opt/etcd/ssl/server.pem",
        f"--service-cluster-ip-range={plan.kubernetes['service_cidr']}",
        "--authorization-mode=Node,RBAC",
    ):
        assert flag in apiserver, flag
    for path in [f.split("=", 1)[1] for f in apiserver if f.split("=", 1)[0].endswith("-file")]:
        assert master.exists(path), f"kube-apiserver names {path}, which no stage made"
    for unit, port in (("kube-controller-manager", 10257), ("kube-scheduler", 10259)):
        flags = unit_flags(master.read(f"/etc/systemd/system/{unit}.service"))
        kubeconfig = f"--kubeconfig=/opt/kubernetes/cfg/{unit}.kubeconfig"
        assert {f"--secure-port={port}", "--leader-elect=true", kubeconfig} <= set(flags)
        assert (master.state / "active" / unit).exists()
    assert (master.state / "active" / "kube-apiserver").exists()

    # The bootstrap token: one, in token.csv (0600) and in the node's bootstrap kubeconfig.
    token_file = master.upper / "opt/kubelab/pki/bootstrap-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text()
    assert len(token) == 32 and int(token, 16) >= 0
    token_csv = master.upper / "opt/kubernetes/cfg/token.csv"
    assert token_csv.stat().st_mode & 0o777 == 0o600
    assert token_csv.read_text() == f'{token},kubelet-bootstrap,10001,"system:kubelet-bootstrap"\n'

    # Kubeconfigs by kubectl config: cluster, credentials, context, in that order; 0600.
    scheduler = master.upper / "opt/kubernetes/cfg/kube-scheduler.kubeconfig"
    assert scheduler.stat().st_mode & 0o777 == 0o600
    calls = [line.split()[2] for line in scheduler.read_text().splitlines()]
    assert calls == ["set-cluster", "set-credentials", "set-context", "use-context"]
    assert f"--server=https://{plan.master.ip}:6443" in scheduler.read_text()
    assert f"--client-certificate={pki}/kube-scheduler.pem@sha256:" in scheduler.read_text()

    # TLS bootstrapping's RBAC, applied after the API server answered the admin.
    bindings = master.state_text("kube/applied-stdin").splitlines()
    assert (
        "ClusterRoleBinding kubelab-kubelet-bootstrap system:node-bootstrapper "
        "system:kubelet-bootstrap"
    ) in bindings
    assert any(
        "certificatesigningrequests:nodeclient system:kubelet-bootstrap" in b for b in bindings
    )
    assert any("selfnodeclient system:nodes" in b for b in bindings)

    # CoreDNS (manual 001's add-on): 2 replicas of the mirror's image at kubeadm's version,
    # its Service at the IP every kubelet's clusterDNS names; applied as the admin.
    manifest = master.state_text("kube/applied-coredns.yaml")
    assert manifest == master.read("/opt/kubernetes/cfg/coredns.yaml")
    objects = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(manifest)}
    deployment = objects[("Deployment", "coredns")]
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["k8s-app"] == "kube-dns"  # what verify's dns check finds
    assert pod["spec"]["containers"][0]["image"] == plan.spec.component_images["coredns"]
    service = objects[("Service", "kube-dns")]
    assert service["spec"]["clusterIP"] == plan.kubernetes["dns_service_ip"]
    assert ipaddress.ip_address(service["spec"]["clusterIP"]) in ipaddress.ip_network(
        plan.kubernetes["service_cidr"]
    )
    assert "kubernetes cluster.local" in objects[("ConfigMap", "coredns")]["data"]["Corefile"]

    # The node: its binaries, kube-proxy's key 0600, the kubeconfigs, the ports.
    for binary in NODE_BINARIES:
        assert (node.upper / "opt/kubernetes/bin" / binary).exists()
    assert not (node.upper / "opt/kubernetes/bin/kube-apiserver").exists()
    key = node.upper / "opt/kubernetes/ssl/kube-proxy-key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    bootstrap = node.upper / "opt/kubernetes/cfg/bootstrap.kubeconfig"
    assert bootstrap.stat().st_mode & 0o777 == 0o600
    assert f"set-credentials kubelet-bootstrap --token={token}" in bootstrap.read_text()
    kubelet = unit_flags(node.read("/etc/systemd/system/kubelet.service"))
    assert "--bootstrap-kubeconfig=/opt/kubernetes/cfg/bootstrap.kubeconfig" in kubelet
    assert f"--container-runtime-endpoint={plan.runtime['socket']}" in kubelet
    config = node.read("/opt/kubernetes/cfg/kubelet-config.yaml")
    assert "port: 10250" in config and "healthzPort: 10248" in config
    assert "clientCAFile: /opt/kubernetes/ssl/kube-ca.pem" in config
    assert yaml.safe_load(config)["clusterDNS"] == [plan.kubernetes["dns_service_ip"]]
    proxy = unit_flags(node.read("/etc/systemd/system/kube-proxy.service"))
    assert "--healthz-bind-address=0.0.0.0:10256" in proxy
    assert "--kubeconfig=/opt/kubernetes/cfg/kube-proxy.kubeconfig" in proxy
    for unit in ("kubelet", "kube-proxy"):
        assert (node.state / "active" / unit).exists()
    assert not (node.ctl / "pki-bundle.tar").exists()  # the stage deletes what was shipped

    # Neither the token nor a key is in any stage's output; nothing was downloaded.
    for g in guests.values():
        for run in g.runs:
            assert token not in run.output and "PRIVATE KEY" not in run.output
            assert not [c for c in run.calls if c.name == "curl" and "dl.k8s.io" in str(c)]


def test_a_tarball_whose_sha512_is_not_the_pinned_one_installs_nothing(new_guest: Any) -> None:
    # The real release's sum, pinned in the catalog; the mirror answers with something else.
    plan, files = render_lab({"provision.stages": HARDWAY})
    guest = new_guest("centos7", plan.master)
    script = script_for(plan, files, plan.master, "control-plane")
    # The stage checks its certificates first: give it what pki and etcd leave behind.
    needed = ["kube-ca.pem", "apiserver.pem", "apiserver-key.pem", "kube-controller-manager.pem"]
    needed += ["kube-scheduler.pem", "admin.pem", "service-account.pem", "bootstrap-token"]
    for name in needed:
        path = guest.upper / "opt/kubelab/pki" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("stand-in\n")
    etcd_key = guest.upper / "opt/etcd/ssl/server-key.pem"
    etcd_key.parent.mkdir(parents=True, exist_ok=True)
    etcd_key.write_text("stand-in\n")

    result = guest.run(script)

    assert result.rc == 1
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    release = plan.hardway["kube_release"]
    tarball, version = release["server"]["tarball"], release["version"]
    assert f"{tarball} {version}: sha512 " in errors[0]
    assert "is not the pinned one (catalog hardway.kube_release); nothing installed" in errors[0]
    url = f"{plan.mirror['kubernetes_release']}/{version}/{tarball}"
    assert [c for c in result.calls if c.name == "curl" and url in c.args]
    # No binary, and no download left behind in a temporary folder.
    bin_dir = guest.upper / "opt/kubernetes/bin"
    assert not bin_dir.exists() or not list(bin_dir.iterdir())
    assert not list((guest.upper / "tmp").glob("tmp.*/*"))
