"""Every rendered stage script, run for real under bash in an isolated root.

For each guest family and mirror profile a small cluster is built the way the
runner builds it (the master's stages, a node's, then the master's after-node
stages), every script twice: the second run must change no file and install
nothing. Then the files written and the commands recorded are checked against
what the lab config asks for. See harness.py for what is real and what is a stub.
"""

from __future__ import annotations

import configparser
import json
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubelab.plan import Plan, PlannedNode
from tests.provision.harness import (
    JOIN_CA_HASH,
    JOIN_TOKEN,
    Call,
    Guest,
    join_command,
    render_lab,
    scenarios,
    script_for,
)

pytestmark = pytest.mark.integration

INSTALL_VERBS = {("yum", "install"), ("apt-get", "install")}


def installs(calls: list[Call]) -> list[Call]:
    return [
        c
        for c in calls
        if (c.name, next((a for a in c.args if not a.startswith("-")), "")) in INSTALL_VERBS
    ]


def calls_named(calls: list[Call], name: str, *prefix: str) -> list[Call]:
    return [c for c in calls if c.name == name and c.args[: len(prefix)] == list(prefix)]


def run_twice(
    guest: Guest,
    plan: Plan,
    files: dict[str, str],
    node: PlannedNode,
    stage: str,
    stdin: str | None = None,
) -> None:
    """Run a stage, then again: the second run must succeed and change nothing."""
    script = script_for(plan, files, node, stage)
    first = guest.run(script, stdin=stdin)
    assert first.rc == 0, f"{stage} on {node.name} failed:\n{first.output[-4000:]}"
    assert f"[{node.name}/{stage}] step:" in first.stdout  # each step is logged
    digest = guest.tree_digest()
    second = guest.run(script, stdin=stdin)
    assert second.rc == 0, f"{stage} on {node.name} failed on the second run:\n{second.output}"
    assert guest.tree_digest() == digest, (
        f"{stage} on {node.name}: the second run changed files:\n{second.stdout}"
    )
    assert "wrote:" not in second.stdout
    assert not installs(second.calls), f"{stage}: second run installed {installs(second.calls)}"
    rerun = [
        c
        for c in second.calls
        if (c.name == "kubeadm" and c.args[:1] in (["init"], ["join"]))
        or c.name in ("hostnamectl", "setenforce")
    ]
    assert not rerun, f"{stage}: second run called {rerun}"


class Cluster:
    """A master and one node built through every stage of the plan."""

    def __init__(
        self, plan: Plan, files: dict[str, str], master: Guest, node: Guest, worker: PlannedNode
    ) -> None:
        self.plan, self.files, self.master, self.node, self.worker = (
            plan,
            files,
            master,
            node,
            worker,
        )

    def guests(self) -> list[tuple[PlannedNode, Guest]]:
        return [(self.plan.master, self.master), (self.worker, self.node)]


def build_cluster(
    new_guest: Any,
    guest_name: str,
    overrides: dict[str, Any],
    hostname_before: dict[str, str] | None = None,
    extra_files: dict[str, str] | None = None,
) -> Cluster:
    plan, files = render_lab(overrides)
    worker = plan.workers[0]
    before = hostname_before or {}
    master = new_guest(guest_name, plan.master, before.get(plan.master.name), extra_files)
    node = new_guest(guest_name, worker, before.get(worker.name), extra_files)
    for stage in plan.stages_for(plan.master):
        if not stage.after_nodes:
            run_twice(master, plan, files, plan.master, stage.name)
    for stage in plan.stages_for(worker):
        stdin = join_command(plan) + "\n" if stage.needs_join_command else None
        run_twice(node, plan, files, worker, stage.name, stdin)
    # What the API server would know by now: every node joined (the stub cluster
    # lives in the master's state; the nodes ran in their own roots).
    nodes_file = master.state / "kube" / "nodes"
    nodes_file.write_text("".join(f"{n.hostname}\n" for n in plan.nodes))
    for stage in plan.stages_for(plan.master):
        if stage.after_nodes:
            run_twice(master, plan, files, plan.master, stage.name)
    return Cluster(plan, files, master, node, worker)


# --- what the files and commands must be --------------------------------------


def check_hosts(guest: Guest, plan: Plan, node: PlannedNode) -> None:
    hosts = guest.read("/etc/hosts")
    lines = [line.split() for line in hosts.splitlines() if line.strip()]
    lab_names = {n.hostname for n in plan.nodes} | {n.name for n in plan.nodes}
    for words in lines:
        if words[0].startswith("127.") or words[0] == "::1":
            assert not lab_names & set(words[1:]), f"loopback line names a lab node: {words}"
    assert lines[0][:2] == ["127.0.0.1", "localhost"]  # the box's localhost line stays
    for n in plan.nodes:
        assert [n.ip, n.hostname] == next(w for w in lines if w[0] == n.ip)[:2]
    assert guest.state_text("hostname").strip() == node.hostname


def check_kernel_settings(guest: Guest, plan: Plan) -> None:
    assert guest.read("/etc/modules-load.d/k8s.conf").split("\n")[-3:] == [
        "overlay",
        "br_netfilter",
        "",
    ]
    loaded = guest.state_text("modules").split()
    assert {"overlay", "br_netfilter"} <= set(loaded)
    settings = {}
    for line in guest.read("/etc/sysctl.d/k8s.conf").splitlines():
        if line and not line.startswith("#"):
            key, value = (part.strip() for part in line.split("="))
            settings[key] = value
    expected = {
        "net.bridge.bridge-nf-call-iptables": "1",
        "net.bridge.bridge-nf-call-ip6tables": "1",
        "net.ipv4.ip_forward": "1",
    }
    assert settings == expected
    for key, value in expected.items():  # applied now, not only at boot
        assert guest.state_text(f"sysctl/{key}").strip() == value
    assert guest.state_text("swap").strip() == "off"
    for line in guest.read("/etc/fstab").splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#"):
            assert fields[2] != "swap", f"swap still in /etc/fstab: {line}"
    if plan.kubernetes["proxy_mode"] == "ipvs":
        modules = [
            m
            for m in guest.read("/etc/modules-load.d/ipvs.conf").splitlines()
            if m and not m.startswith("#")
        ]
        assert {"ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack"} <= set(modules)
        assert set(modules) <= set(loaded)
        assert {"ipset", "ipvsadm"} <= installed(guest)
    else:
        assert not guest.exists("/etc/modules-load.d/ipvs.conf")


def installed(guest: Guest) -> set[str]:
    return {line.split()[0] for line in guest.state_text("packages").splitlines()}


def installed_version(guest: Guest, name: str) -> str:
    for line in guest.state_text("packages").splitlines():
        if line.split()[0] == name:
            return line.split()[1]
    raise AssertionError(f"{name} not installed")


def check_selinux(guest: Guest) -> None:
    config = guest.read("/etc/selinux/config")
    assert "SELINUX=permissive" in config.splitlines()
    assert "SELINUX=enforcing" not in config
    assert "SELINUXTYPE=targeted " in config  # the rest of the file untouched
    assert guest.state_text("selinux").strip() == "Permissive"


def check_firewall(guest: Guest, plan: Plan, node: PlannedNode) -> None:
    if plan.kubernetes["firewall"] == "disabled":
        assert not (guest.state / "active" / "firewalld").exists()
        return
    ports = set(guest.state_text("firewalld/ports").split())
    expected = {"10250/tcp", "30000-32767/tcp", "8472/udp"}
    if node.is_master:
        expected |= {"6443/tcp", "2379-2380/tcp", "10257/tcp", "10259/tcp"}
    assert ports == expected
    assert set(guest.state_text("firewalld/trusted-sources").split()) == {
        plan.kubernetes["pod_cidr"],
        plan.kubernetes["service_cidr"],
    }
    assert (guest.state / "enabled" / "firewalld").exists()


def yum_repos(guest: Guest, name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(guest.read(f"/etc/yum.repos.d/{name}"))
    return parser


def check_repos(guest: Guest, plan: Plan) -> None:
    mirror, minor = plan.mirror, plan.kubernetes["minor"]
    if guest.family == "rhel":
        base = yum_repos(guest, "CentOS-Base.repo")
        assert base.sections() == ["base", "updates", "extras"]
        for section, path in (("base", "os"), ("updates", "updates"), ("extras", "extras")):
            assert base[section]["baseurl"] == f"{mirror['centos_vault']}/{path}/$basearch/"
            assert "mirrorlist" not in base[section]
        kube = yum_repos(guest, "kubernetes.repo")["kubernetes"]
        kube_base = mirror["kubernetes_rpm"].rstrip("/")
        assert f"v{minor}" in kube_base
        assert kube["baseurl"] == f"{kube_base}/"
        assert kube["gpgkey"] == f"{kube_base}/repodata/repomd.xml.key"
        assert kube["exclude"].split() == [
            "kubelet",
            "kubeadm",
            "kubectl",
            "cri-tools",
            "kubernetes-cni",
        ]
        docker = yum_repos(guest, "docker-ce.repo")["docker-ce-stable"]
        assert docker["baseurl"] == mirror["docker_ce_rpm"].rstrip("/") + "/"
        assert docker["gpgkey"] == mirror["docker_ce_rpm_gpg"]
    else:
        distro = guest.read("/etc/apt/sources.list").splitlines()
        archive = mirror["debian_archive"]
        assert f"deb {archive} bookworm main" in distro
        assert f"deb {mirror['debian_security']} bookworm-security main" in distro
        kube_base = mirror["kubernetes_deb"].rstrip("/")
        assert guest.read("/etc/apt/sources.list.d/kubernetes.list").splitlines()[-1] == (
            f"deb [signed-by=/etc/apt/keyrings/kubernetes.asc] {kube_base}/ /"
        )
        assert "BEGIN PGP PUBLIC KEY BLOCK" in guest.read("/etc/apt/keyrings/kubernetes.asc")
        fetched = [c.args[-3] for c in calls_named(guest.calls(), "curl")]
        assert f"{kube_base}/Release.key" in fetched
        has_docker = guest.exists("/etc/apt/sources.list.d/docker-ce.list")
        assert has_docker == (plan.runtime["name"] == "docker")


def containerd_default(guest: Guest) -> dict[str, Any]:
    out = subprocess.run(
        ["chroot", str(guest.base), "/usr/bin/containerd", "config", "default"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return tomllib.loads(out)


def check_runtime(guest: Guest, plan: Plan) -> None:
    pause = f"{plan.mirror['image_registry']}/pause:{plan.kubernetes['pause']}"
    crictl = yaml.safe_load(guest.read("/etc/crictl.yaml"))
    assert crictl["runtime-endpoint"] == crictl["image-endpoint"] == plan.runtime["socket"]
    enabled = {p.name for p in (guest.state / "enabled").iterdir()}
    if plan.runtime["name"] == "containerd":
        config = tomllib.loads(guest.read("/etc/containerd/config.toml"))
        cri = config["plugins"]["io.containerd.grpc.v1.cri"]
        assert cri["sandbox_image"] == pause
        assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
        assert config["disabled_plugins"] == []
        # Everything else is containerd's own default, untouched.
        default = containerd_default(guest)
        default_cri = default["plugins"]["io.containerd.grpc.v1.cri"]
        default_cri["sandbox_image"] = pause
        default_cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] = True
        assert config == default
        assert "containerd" in enabled
        if guest.family == "rhel":
            assert installed_version(guest, "containerd.io") == plan.runtime["package_version"]
        else:
            assert "containerd" in installed(guest)
    else:
        daemon = json.loads(guest.read("/etc/docker/daemon.json"))
        assert daemon["exec-opts"] == ["native.cgroupdriver=systemd"]
        service = guest.read("/etc/systemd/system/cri-docker.service")
        assert f"--pod-infra-container-image={pause}" in service
        assert "ListenStream=%t/cri-dockerd.sock" in guest.read(
            "/etc/systemd/system/cri-docker.socket"
        )
        assert guest.path("/usr/local/bin/cri-dockerd").stat().st_mode & 0o777 == 0o755
        assert {"docker", "cri-docker", "cri-docker.socket"} <= enabled
        version = plan.runtime["cri_dockerd_version"]
        url = (
            f"{plan.mirror['cri_dockerd_release'].rstrip('/')}/v{version}/"
            f"cri-dockerd-{version}.amd64.tgz"
        )
        assert url in {c.args[-3] for c in calls_named(guest.calls(), "curl")}
        docker_version = installed_version(guest, "docker-ce")
        assert plan.runtime["package_version"] in docker_version


def check_kube_packages(guest: Guest, plan: Plan, node: PlannedNode) -> None:
    version = plan.kubernetes["version"]
    calls = guest.calls()
    if guest.family == "rhel":
        expected = [f"kubelet-{version}", f"kubeadm-{version}", f"kubectl-{version}"]
        pinned = [c for c in calls_named(calls, "yum", "install") if expected[0] in c.args]
        assert len(pinned) == 1 and "--disableexcludes=kubernetes" in pinned[0].args
        assert pinned[0].args[-3:] == expected
        env_file = "/etc/sysconfig/kubelet"
    else:
        expected = [f"kubelet={version}-1.1", f"kubeadm={version}-1.1", f"kubectl={version}-1.1"]
        pinned = [c for c in calls_named(calls, "apt-get") if expected[0] in c.args]
        assert len(pinned) == 1 and pinned[0].args[-3:] == expected
        assert set(guest.state_text("held").split()) == {"kubelet", "kubeadm", "kubectl"}
        env_file = "/etc/default/kubelet"
    for name in ("kubelet", "kubeadm", "kubectl"):
        assert installed_version(guest, name).startswith(version)
    env_lines = [
        line for line in guest.read(env_file).splitlines() if line and not line.startswith("#")
    ]
    assert env_lines == [f"KUBELET_EXTRA_ARGS=--node-ip={node.ip}"]
    assert (guest.state / "enabled" / "kubelet").exists()
    pulls = calls_named(calls, "kubeadm", "config", "images", "pull")
    if node.is_master:
        assert len(pulls) == 2  # one per run, before init
        args = pulls[0].args
        assert args[args.index("--kubernetes-version") + 1] == f"v{version}"
        assert args[args.index("--image-repository") + 1] == plan.mirror["image_registry"]
        assert args[args.index("--cri-socket") + 1] == plan.runtime["socket"]
        first_init = next(
            i for i, c in enumerate(calls) if c.name == "kubeadm" and c.args[:1] == ["init"]
        )
        assert calls.index(pulls[0]) < first_init
    else:
        assert not pulls


def kubeadm_documents(guest: Guest) -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all(guest.read("/etc/kubernetes/kubeadm-config.yaml"))
    return {d["kind"]: d for d in docs}


def check_master(cluster: Cluster) -> None:
    guest, plan = cluster.master, cluster.plan
    calls = guest.calls()
    inits = calls_named(calls, "kubeadm", "init")
    assert [c.args for c in inits] == [["init", "--config", "/etc/kubernetes/kubeadm-config.yaml"]]
    docs = kubeadm_documents(guest)
    init, cluster_cfg = docs["InitConfiguration"], docs["ClusterConfiguration"]
    assert init["localAPIEndpoint"]["advertiseAddress"] == plan.master.ip
    assert init["nodeRegistration"]["name"] == plan.master.hostname
    assert init["nodeRegistration"]["criSocket"] == plan.runtime["socket"]
    ignored = init["nodeRegistration"].get("ignorePreflightErrors", [])
    assert ignored == (
        ["SystemVerification"] if plan.kubernetes["ignore_system_verification"] else []
    )
    assert cluster_cfg["kubernetesVersion"] == f"v{plan.kubernetes['version']}"
    assert cluster_cfg["imageRepository"] == plan.mirror["image_registry"]
    assert cluster_cfg["networking"]["podSubnet"] == plan.kubernetes["pod_cidr"]
    assert cluster_cfg["networking"]["serviceSubnet"] == plan.kubernetes["service_cidr"]
    assert docs["KubeletConfiguration"]["cgroupDriver"] == "systemd"
    assert docs["KubeProxyConfiguration"]["mode"] == plan.kubernetes["proxy_mode"]
    assert guest.path("/etc/kubernetes/kubeadm-config.yaml").stat().st_mode & 0o777 == 0o600

    admin = guest.read("/etc/kubernetes/admin.conf")
    user_config = guest.path("/home/vagrant/.kube/config")
    assert user_config.read_text() == admin == guest.read("/root/.kube/config")
    st = user_config.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 1000, 0o600)

    manifest = "/etc/kubernetes/kubelab/kube-flannel.yml"
    applied = calls_named(calls, "kubectl", "apply", "-f", manifest)
    assert len(applied) == 1  # the second run sees it applied and unchanged
    flannel = list(yaml.safe_load_all(guest.read(manifest)))
    daemonset = next(d for d in flannel if d["kind"] == "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    registry = plan.mirror["flannel_registry"]
    assert pod["containers"][0]["image"] == f"{registry}/flannel:{plan.cni['version']}"
    assert pod["initContainers"][0]["image"] == (
        f"{registry}/flannel-cni-plugin:{plan.cni['cni_plugin_version']}"
    )
    assert "--iface=eth1" in pod["containers"][0]["args"]
    net_conf = json.loads(
        next(d for d in flannel if d["kind"] == "ConfigMap")["data"]["net-conf.json"]
    )
    assert net_conf["Network"] == plan.kubernetes["pod_cidr"]
    waits = calls_named(calls, "kubectl", "wait")
    assert f"node/{plan.master.hostname}" in waits[0].args

    # exercise2: the master untainted, so pods run on master and nodes.
    assert guest.state_text(f"kube/taints-{plan.master.hostname}").strip() == ""
    untaint = calls_named(calls, "kubectl", "taint", "nodes", plan.master.hostname)
    assert [c.args[-1] for c in untaint] == ["node-role.kubernetes.io/control-plane:NoSchedule-"]
    # cluster-ready waited for every node by name.
    asked = {c.args[2] for c in calls_named(calls, "kubectl", "get", "node") if len(c.args) == 3}
    assert asked >= {n.hostname for n in plan.nodes}


def check_join(cluster: Cluster) -> None:
    guest, plan, worker = cluster.node, cluster.plan, cluster.worker
    joins = calls_named(guest.calls(), "kubeadm", "join")
    assert len(joins) == 1  # the second run finds the node known to the API server
    assert joins[0].args == ["join", "--config", "/etc/kubernetes/kubeadm-join.yaml"]
    given = yaml.safe_load((guest.ctl / "join-config.yaml").read_text())
    assert given["kind"] == "JoinConfiguration"
    assert given["discovery"]["bootstrapToken"] == {
        "apiServerEndpoint": f"{plan.master.ip}:6443",
        "token": JOIN_TOKEN,
        "caCertHashes": [JOIN_CA_HASH],
    }
    registration = given["nodeRegistration"]
    assert registration["name"] == worker.hostname
    assert registration["criSocket"] == plan.runtime["socket"]
    assert ("SystemVerification" in registration.get("ignorePreflightErrors", [])) == bool(
        plan.kubernetes["ignore_system_verification"]
    )
    # The token never sat in an argv (the calls log holds every stub's argv), and
    # the 0600 file that carried it is gone.
    assert JOIN_TOKEN not in guest.calls_log.read_text()
    assert not guest.exists("/etc/kubernetes/kubeadm-join.yaml")
    assert not calls_named(guest.calls(), "kubeadm", "init")
    assert not guest.exists("/etc/kubernetes/kubeadm-config.yaml")


@pytest.mark.parametrize("name", sorted(scenarios()))
def test_cluster_build_in_isolated_roots(name: str, new_guest: Any) -> None:
    scenario = scenarios()[name]
    overrides = scenario["config"]
    hostname_before = None
    if overrides.get("student_id"):
        # A VM still named without the ID: prepare must rename it.
        plan, _ = render_lab(overrides)
        hostname_before = {n.name: n.name for n in plan.nodes}
    cluster = build_cluster(new_guest, scenario["guest"], overrides, hostname_before)
    plan = cluster.plan
    for node, guest in cluster.guests():
        check_hosts(guest, plan, node)
        check_kernel_settings(guest, plan)
        check_firewall(guest, plan, node)
        check_repos(guest, plan)
        check_runtime(guest, plan)
        check_kube_packages(guest, plan, node)
        if guest.family == "rhel":
            check_selinux(guest)
            fstab = guest.read("/etc/fstab")
            assert "# /dev/mapper/centos-swap swap                    swap    defaults" in fstab
        renamed = calls_named(guest.calls(), "hostnamectl", "set-hostname")
        if hostname_before:
            assert [c.args[-1] for c in renamed] == [node.hostname]
            assert guest.read("/etc/hostname").strip() == node.hostname
        else:
            assert not renamed
    check_master(cluster)
    check_join(cluster)


@pytest.mark.parametrize("guest_name", ["centos7", "debian12"])
def test_local_package_folder_replaces_every_remote_repository(
    guest_name: str, new_guest: Any, tmp_path: Path
) -> None:
    host_folder = tmp_path / "packages"
    host_folder.mkdir()
    overrides: dict[str, Any] = {"mirror.local_repo": str(host_folder)}
    if guest_name == "debian12":
        overrides["box.guest"] = "debian12"
    plan, files = render_lab(overrides)
    # What the runner unpacks into the VM: a yum repository or a flat apt one.
    index = (
        "var/lib/kubelab/local-repo/repodata/repomd.xml"
        if guest_name == "centos7"
        else "var/lib/kubelab/local-repo/Packages"
    )
    guest = new_guest(guest_name, plan.master, extra_files={index: "stub index\n"})
    for stage in ("prepare", "repos", "runtime"):
        run_twice(guest, plan, files, plan.master, stage)
    written = guest.written()
    if guest_name == "centos7":
        local = yum_repos(guest, "kubelab-local.repo")["kubelab-local"]
        assert local["baseurl"] == "file:///var/lib/kubelab/local-repo"
        assert guest.exists("/etc/yum.repos.d/kubelab-disabled/CentOS-Base.repo")
        assert "/etc/yum.repos.d/CentOS-Base.repo" in guest.deleted()
        repo_files = {
            p
            for p in written
            if p.startswith("/etc/yum.repos.d/")
            and p.endswith(".repo")
            and "/kubelab-disabled/" not in p
        }
        assert repo_files == {"/etc/yum.repos.d/kubelab-local.repo"}
    else:
        assert guest.read("/etc/apt/sources.list.d/kubelab-local.list").splitlines()[-1] == (
            "deb [trusted=yes] file:/var/lib/kubelab/local-repo ./"
        )
        assert not guest.exists("/etc/apt/sources.list")
        assert guest.exists("/etc/apt/sources.list.kubelab-disabled")
        assert not any(p.startswith("/etc/apt/keyrings/") for p in written)
    assert not calls_named(guest.calls(), "curl")  # nothing fetched from the network


def test_local_package_folder_must_have_an_index(new_guest: Any, tmp_path: Path) -> None:
    plan, files = render_lab({"mirror.local_repo": str(tmp_path)})
    guest = new_guest(
        "centos7", plan.master, extra_files={"var/lib/kubelab/local-repo/kubelet.rpm": "x"}
    )
    result = guest.run(script_for(plan, files, plan.master, "prepare"))
    assert result.rc != 0
    assert "has no repodata/" in result.output
    assert not installs(result.calls)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "kubeadm join 192.168.56.10:6443 --token abcdef.0123456789abcdef "
        "--discovery-token-ca-cert-hash sha256:00; touch /pwned",
        "kubeadm init --token abcdef.0123456789abcdef",
        # The classic Vagrant failure: the master advertised its NAT address.
        f"kubeadm join 10.0.2.15:6443 --token {JOIN_TOKEN} --discovery-token-ca-cert-hash "
        f"{JOIN_CA_HASH}",
    ],
)
def test_join_refuses_a_missing_or_malformed_join_command(bad: str, new_guest: Any) -> None:
    plan, files = render_lab({})
    worker = plan.workers[0]
    guest = new_guest("centos7", worker)
    result = guest.run(script_for(plan, files, worker, "join"), stdin=bad + "\n")
    assert result.rc != 0
    assert "error:" in result.stderr
    assert not calls_named(guest.calls(), "kubeadm")
    assert not guest.exists("/pwned")


def test_exercise2_tolerates_a_master_without_taints(new_guest: Any) -> None:
    plan, files = render_lab({})
    guest = new_guest("centos7", plan.master)
    (guest.state / "kube").mkdir(parents=True)
    (guest.state / "kube" / "nodes").write_text("".join(f"{n.hostname}\n" for n in plan.nodes))
    run_twice(guest, plan, files, plan.master, "exercise2")
    assert not calls_named(guest.calls(), "kubectl", "taint")


def test_exercise2_removes_both_taint_generations(new_guest: Any) -> None:
    plan, files = render_lab({})
    guest = new_guest("centos7", plan.master)
    (guest.state / "kube").mkdir(parents=True)
    (guest.state / "kube" / "nodes").write_text(plan.master.hostname + "\n")
    taints = guest.state / "kube" / f"taints-{plan.master.hostname}"
    # A pre-1.25 control plane carries both; another taint is left alone.
    taints.write_text(
        "node-role.kubernetes.io/master:NoSchedule\n"
        "node-role.kubernetes.io/control-plane:NoSchedule\n"
        "example.com/gpu:NoSchedule\n"
    )
    run_twice(guest, plan, files, plan.master, "exercise2")
    assert taints.read_text() == "example.com/gpu:NoSchedule\n"


def test_prepare_rewrites_only_lab_names_on_loopback_lines(new_guest: Any) -> None:
    """A CentOS-style hosts file with the name on the 127.0.0.1 line keeps localhost."""
    plan, files = render_lab({})
    guest = new_guest("centos7", plan.master)
    hosts = guest.seed / "rootfs" / "etc" / "hosts"
    original = hosts.read_text()
    hosts.write_text(
        original.replace(
            "127.0.0.1   localhost", f"127.0.0.1   {plan.master.hostname} localhost", 1
        )
        + "10.1.2.3 teacher-box # kept\n"
    )
    run_twice(guest, plan, files, plan.master, "prepare")
    lines = guest.read("/etc/hosts").splitlines()
    assert lines[0].split() == [
        "127.0.0.1",
        "localhost",
        "localhost.localdomain",
        "localhost4",
        "localhost4.localdomain4",
    ]
    assert "10.1.2.3 teacher-box # kept" in lines
    assert not any(line.startswith("127.0.1.1") for line in lines)
