"""Provisioning stages 1 and 3 for real on the three VMs, through `invoke up`.

The VMs have no internet: chrony (stage 1), containerd and runc (stage 3) come from
a local folder of Debian packages built on the host (tests/e2e/local_repo.py) and
shipped in by kubelab as mirror.local_repo. Stage 1 (prepare) leaves swap off,
overlay and br_netfilter loaded, the bridge and forwarding sysctls at 1, and every
node resolving the others by name. Stage 3 (runtime) leaves containerd running with
the systemd cgroup driver. That a second run of stage 1 changes no file is proved in
test_hardway_vms.py, in one rerun with stage 2 and the hard way's stages.

Stages 4-7 need kubeadm, kubelet and kubectl, which no registry reachable here
carries; tests/provision runs those scripts in isolated roots instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kubelab.plan import Plan
from kubelab.transport import CommandResult, Transport
from tests.e2e.lab import FIGURES, NODES, E2ELab, TaskRun

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.incremental]

MODULES = ("overlay", "br_netfilter")
SYSCTLS = ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables",
           "net.ipv4.ip_forward")  # fmt: skip
CONTAINERD_CONFIG = "/etc/containerd/config.toml"


@pytest.fixture(scope="module")
def prepare_config(e2e_lab: E2ELab, local_repo: Path) -> Path:
    return e2e_lab.config("prepare")


def stage_logs(lab: E2ELab, script: str) -> dict[str, Path]:
    return {node: lab.lab_dir / "logs" / node / f"{script}.log" for node in NODES}


def assert_ran_master_first(run: TaskRun, logs: dict[str, Path]) -> None:
    for node, log in logs.items():
        text = log.read_text()
        assert re.match(rf"# scripts/{node}/\S+ on {node}: rc=0 ", text), f"{log}:\n{text[-3000:]}"
    assert all(logs["master"].stat().st_mtime < logs[n].stat().st_mtime
               for n in ("node1", "node2")), run  # fmt: skip


def test_prepare_runs_on_every_vm(e2e_lab: E2ELab, prepare_config: Path) -> None:
    up = e2e_lab.up(prepare_config)
    assert up.rc == 0, up
    FIGURES["invoke up, stage 1 (prepare) on 3 VMs (wall)"] = f"{up.seconds:.0f} s"
    assert_ran_master_first(up, stage_logs(e2e_lab, "01-prepare"))


def test_after_prepare_swap_is_off_modules_loaded_sysctls_set(e2e_lab: E2ELab) -> None:
    def look(t: Transport) -> dict[str, dict[str, CommandResult]]:
        return {node: {
            "swap": t.run(node, "swapon", "--show", sudo=True),
            "fstab": t.run(node, "cat", "/etc/fstab"),
            # sysctl and lsmod live in /usr/sbin, on root's PATH only.
            "lsmod": t.run(node, "lsmod", sudo=True),
            "sysctl": t.run(node, "sysctl", "-n", *SYSCTLS, sudo=True),
            "modules-load": t.run(node, "cat", "/etc/modules-load.d/k8s.conf"),
            "sysctl.d": t.run(node, "cat", "/etc/sysctl.d/k8s.conf"),
            "chrony": t.run(node, "systemctl", "is-active", "chrony"),
        } for node in NODES}  # fmt: skip

    for node, got in e2e_lab.on_vms(look).items():
        assert got["swap"].rc == 0 and got["swap"].stdout.strip() == "", (node, got["swap"])
        assert not [
            line
            for line in got["fstab"].stdout.splitlines()
            if not line.lstrip().startswith("#") and " swap " in f" {line} "
        ], node
        loaded = {line.split()[0] for line in got["lsmod"].stdout.splitlines()[1:]}
        assert set(MODULES) <= loaded, (node, sorted(loaded))
        assert got["sysctl"].stdout.split() == ["1"] * len(SYSCTLS), (node, got["sysctl"])
        # ... and at every boot.
        assert set(MODULES) <= set(got["modules-load"].stdout.split()), node
        for key in SYSCTLS:
            assert re.search(rf"^{re.escape(key)}\s*=\s*1$", got["sysctl.d"].stdout, re.M), key
        assert got["chrony"].stdout.strip() == "active", (node, got["chrony"])


def test_after_prepare_the_nodes_resolve_each_other_by_name(
    e2e_lab: E2ELab, prepare_config: Path
) -> None:
    plan: Plan = e2e_lab.plan(prepare_config)
    names = [n.hostname for n in plan.nodes]

    # IPv4 first, as kubelet and etcd resolve: on this box (like CentOS 7) `getent
    # hosts` answers the VM's own name with nss-myhostname's IPv6 address.
    script = (
        'for name in "$@"; do getent ahostsv4 "$name" | '
        "awk -v n=\"$name\" '{ print n, $1; exit }'; done"
    )

    def look(t: Transport) -> dict[str, tuple[CommandResult, CommandResult]]:
        return {n: (t.run(n, "sh -c", script, "resolve", *names), t.run(n, "cat", "/etc/hosts"))
                for n in NODES}  # fmt: skip

    for node, (getent, hosts) in e2e_lab.on_vms(look).items():
        assert getent.rc == 0, (node, getent)
        resolved = dict(line.split() for line in getent.stdout.splitlines())
        assert resolved == {n.hostname: n.ip for n in plan.nodes}, (node, getent.stdout)
        # Vagrant's 127.0.x.1 line for the VM's own name is gone (kubelet would use it).
        hostname = plan.node(node).hostname
        for line in hosts.stdout.splitlines():
            fields = line.split("#")[0].split()
            if fields and fields[0].startswith("127."):
                assert hostname not in fields[1:], (node, line)


@pytest.mark.timeout(1800)
def test_runtime_stage_runs_containerd_with_the_systemd_cgroup_driver(
    e2e_lab: E2ELab, local_repo: Path
) -> None:
    config = e2e_lab.config("runtime")
    plan = e2e_lab.plan(config)
    up = e2e_lab.up(config)
    assert up.rc == 0, up
    FIGURES["invoke up, stages 2-3 (repos, runtime) on 3 VMs (wall)"] = f"{up.seconds:.0f} s"
    for node in NODES:  # stage 1 was done already, by the same script
        assert f"{node}: skipped | prepare (already done)" in up.output, up
    assert_ran_master_first(up, stage_logs(e2e_lab, "03-runtime"))

    def look(t: Transport) -> dict[str, dict[str, CommandResult]]:
        return {node: {
            "config": t.run(node, "cat", CONTAINERD_CONFIG, sudo=True),
            "active": t.run(node, "systemctl", "is-active", "containerd"),
            "ctr": t.run(node, "ctr", "version", sudo=True, timeout=60),
            "runc": t.run(node, "runc", "--version", sudo=True),  # /usr/sbin
            "crictl": t.run(node, "cat", "/etc/crictl.yaml"),
        } for node in NODES}  # fmt: skip

    pause = f"{plan.mirror['image_registry']}/pause:{plan.kubernetes['pause']}"
    socket = plan.runtime["socket"]
    for node, got in e2e_lab.on_vms(look).items():
        config_toml = got["config"].stdout
        assert re.search(r"^\s*SystemdCgroup = true$", config_toml, re.M), node
        assert not re.search(r"^\s*SystemdCgroup = false$", config_toml, re.M), node
        assert f'sandbox_image = "{pause}"' in config_toml, node
        assert re.search(r"^disabled_plugins = \[\]$", config_toml, re.M), node
        assert got["active"].stdout.strip() == "active", (node, got["active"])
        ctr = got["ctr"]
        assert ctr.rc == 0 and re.search(r"^Server:\s*\n\s*Version:", ctr.stdout, re.M), ctr
        assert got["runc"].rc == 0, (node, got["runc"])
        assert socket in got["crictl"].stdout, (node, got["crictl"])
