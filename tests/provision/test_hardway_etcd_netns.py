"""What the pki and etcd stages make, run as a real etcd cluster at the lab addresses.

The pki stage runs in the isolated root with the real cfssl; the etcd stage's
rendered /opt/etcd/cfg/etcd for each VM is then handed, with those certificates,
to the real etcd of this machine (Debian's etcd-server 3.4), one member per lab
address inside a network namespace of the test's own (tests/support/netns_hosts.py).
So the stage's configuration and certificates are proven to form a 3-member
cluster over TLS, to refuse a client without a certificate, to keep a quorum of
2, and to lose it with 2 members down. The VMs do the same through systemd
(tests/e2e/test_hardway_vms.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubelab.plan import Plan, PlannedNode
from tests.provision.harness import render_lab, script_for
from tests.provision.test_hardway_in_root import HARDWAY
from tests.support.netns_hosts import NetnsHosts, missing_requirements

pytestmark = [
    pytest.mark.integration,
    pytest.mark.netns,
    pytest.mark.skipif(
        not (shutil.which("etcd") and shutil.which("etcdctl") and shutil.which("cfssl")),
        reason="needs etcd-server, etcd-client and golang-cfssl installed here",
    ),
]

SSL = "/opt/etcd/ssl"
ENV_FILE = re.compile(r"put_file \"\$etcd_config\" 0644 <<'KUBELAB_EOF'\n(.*?)\nKUBELAB_EOF", re.S)
WRAPPER = re.compile(r"put_file \"\$etcdctl\" 0755 <<'KUBELAB_EOF'\n(.*?)\nKUBELAB_EOF", re.S)
DEADLINE = 120.0  # seconds for a cold, busy machine to elect a leader


def member_env(script: str, ssl: Path, data: Path) -> dict[str, str]:
    """The ETCD_* variables the etcd stage writes for a VM, its paths moved to `ssl`/`data`."""
    found = ENV_FILE.search(script)
    assert found, "the etcd stage writes no etcd settings file"
    env = {}
    for line in found.group(1).splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value.strip('"').replace(SSL, str(ssl))
    env["ETCD_DATA_DIR"] = str(data)
    return env


class Cluster:
    def __init__(self, hosts: NetnsHosts, plan: Plan, files: dict[str, str], pki: Path) -> None:
        self.hosts, self.plan, self.files, self.pki = hosts, plan, files, pki
        self.members: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, node: PlannedNode) -> None:
        env = member_env(
            script_for(self.plan, self.files, node, "etcd"),
            self.pki,
            self.pki / f"data-{node.name}",
        )
        log = (self.pki / f"{node.name}.log").open("ab")
        self.members[node.name] = subprocess.Popen(
            ["ip", "netns", "exec", self.hosts.netns, "env", *(f"{k}={v}" for k, v in env.items()),
             "etcd"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip

    def stop(self, node: PlannedNode) -> None:
        process = self.members.pop(node.name)
        process.terminate()
        process.wait(timeout=30)

    def etcdctl(self, *args: str, endpoints: list[PlannedNode] | None = None) -> Any:
        """The stage's own my_etcdctl (its paths moved to the test's), every member or some.

        Some members are chosen the way a student and verify choose them: the wrapper's
        own `--endpoints` flag, which must replace its list of every member.
        """
        wrapper = self.pki / "my_etcdctl"
        if not wrapper.exists():
            found = WRAPPER.search(script_for(self.plan, self.files, self.plan.master, "etcd"))
            assert found, "the etcd stage writes no /opt/etcd/bin/my_etcdctl"
            wrapper.write_text(found.group(1).replace(SSL, str(self.pki)) + "\n")
        urls = ",".join(f"https://{n.ip}:2379" for n in endpoints or [])
        return self.hosts.run_in_ns(
            ["bash", str(wrapper), "--dial-timeout=3s", "--command-timeout=5s",
             *([f"--endpoints={urls}"] if urls else []), *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def wait_healthy(self, nodes: list[PlannedNode]) -> None:
        deadline = time.monotonic() + DEADLINE
        while (health := self.etcdctl("endpoint", "health", endpoints=nodes)).returncode:
            assert time.monotonic() < deadline, (
                health.stderr[-2000:],
                (self.pki / "master.log").read_text()[-3000:],
            )
            time.sleep(1)


@pytest.fixture
def cluster(new_guest: Any, tmp_path: Path) -> Iterator[Cluster]:
    why = missing_requirements()
    if why:
        pytest.skip(why)
    plan, files = render_lab({"provision.stages": HARDWAY})
    master = new_guest("centos7", plan.master)
    result = master.run(script_for(plan, files, plan.master, "pki"))
    assert result.rc == 0, result.output[-3000:]
    pki = tmp_path / "pki"
    shutil.copytree(master.upper / "opt/kubelab/pki", pki)
    names = [n.hostname for n in plan.nodes]
    with NetnsHosts("etcd", [n.ip for n in plan.nodes], names=names) as hosts:
        running = Cluster(hosts, plan, files, pki)
        try:
            yield running
        finally:
            for node in list(plan.nodes):
                if node.name in running.members:
                    running.stop(node)


def test_the_stages_config_and_certificates_form_a_tls_cluster_that_survives_one_loss(
    cluster: Cluster,
) -> None:
    plan = cluster.plan
    started = time.monotonic()
    for node in plan.nodes:
        cluster.start(node)
    cluster.wait_healthy(list(plan.nodes))
    print(f"3 members healthy over TLS after {time.monotonic() - started:.1f} s")
    listed = cluster.etcdctl("member", "list", "-w", "simple")
    assert listed.returncode == 0, listed.stderr
    assert sorted(line.split(", ")[2] for line in listed.stdout.splitlines()) == sorted(
        n.hostname for n in plan.nodes
    )
    # A client without a certificate is refused by the TLS handshake.
    no_cert = cluster.hosts.run_in_ns(
        ["curl", "-sS", "--max-time", "5", "--cacert", f"{cluster.pki}/ca.pem",
         f"https://{plan.master.ip}:2379/health"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert no_cert.returncode != 0 and "health" not in no_cert.stdout, no_cert
    # The flannel network config, written and read back over TLS.
    put = cluster.etcdctl("put", "/coreos.com/network/config", '{"Network": "10.244.0.0/16"}')
    assert put.returncode == 0 and put.stdout.strip() == "OK", put.stderr
    got = cluster.etcdctl("get", "/coreos.com/network/config", "--print-value-only",
                          endpoints=[plan.workers[1]])  # fmt: skip
    assert got.stdout.strip() == '{"Network": "10.244.0.0/16"}', got.stderr

    node1, node2 = plan.workers
    cluster.stop(node2)
    cluster.wait_healthy([plan.master, node1])  # a quorum of 2 of 3
    down = cluster.etcdctl("endpoint", "health", endpoints=[node2])
    assert down.returncode != 0 and f"https://{node2.ip}:2379 is unhealthy" in down.stderr
    # Asked of one member, the wrapper reports that member alone (etcdctl would append a
    # second --endpoints to the wrapper's list, and verify would read the others' health).
    assert down.stderr.count(" is unhealthy: ") == 1 and " is healthy: " not in down.stderr
    alive = cluster.etcdctl("endpoint", "health", endpoints=[node1])
    assert alive.returncode == 0 and alive.stderr.count(" is healthy: ") == 1, alive.stderr
    cluster.stop(node1)
    lost = cluster.etcdctl("endpoint", "health", endpoints=[plan.master])
    assert lost.returncode != 0 and "is unhealthy" in lost.stderr  # no quorum
    cluster.start(node1)
    cluster.start(node2)
    cluster.wait_healthy(list(plan.nodes))
