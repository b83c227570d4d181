"""How `invoke verify` reaches a lab: the ssh-config `invoke up` kept, else one Vagrant run.

A fake Vagrant driver stands in for vagrant (no VM here) and counts its
`ssh-config` calls; a kept file that reaches the lab is exercised against real sshd
hosts at the lab addresses in a namespace (support/netns_hosts.py), a stale one
against a loopback port nobody listens on.
"""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from kubelab import REPO_ROOT, lifecycle
from kubelab.errors import KubelabError
from kubelab.plan import Plan, load_plan
from kubelab.progress import Reporter
from kubelab.transport import LocalTarget
from kubelab.verify.collect import HOST
from kubelab.verify.lab import _lab_transport
from tests.support.netns_hosts import NetnsHosts, missing_requirements

CONFIG = REPO_ROOT / "tests" / "data" / "verify_netns" / "lab.yaml"
SSH_CONFIG_CAPTURE = REPO_ROOT / "tests" / "data" / "transport" / "vagrant-ssh-config.txt"


class FakeDriver:
    """`vagrant ssh-config` and `vagrant status` as the lab's Vagrant answers them."""

    def __init__(self, plan: Plan, down: set[str] | None = None) -> None:
        self.plan = plan
        self.down = down or set()
        self.ssh_config_calls = 0

    def status(self) -> dict[str, str]:
        return {n.name: "shutoff" if n.name in self.down else "running" for n in self.plan.nodes}

    def ssh_config(self, vm_name: str | None = None) -> str:
        self.ssh_config_calls += 1
        if self.down:
            # What the driver raises when vagrant exits non-zero.
            raise KubelabError(
                "`vagrant ssh-config` failed (exit 1): The provider for this Vagrant-managed "
                "machine is reporting that it is not yet ready for SSH."
            )
        return SSH_CONFIG_CAPTURE.read_text()


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    plan = load_plan(CONFIG, {}, repo_root=REPO_ROOT, lab_dir=tmp_path / "lab")
    plan.lab_dir.mkdir(parents=True)
    (plan.lab_dir / "Vagrantfile").write_text("# rendered by invoke up\n")
    return plan


def use_driver(monkeypatch: pytest.MonkeyPatch, driver: FakeDriver) -> None:
    monkeypatch.setattr(lifecycle, "driver_for", lambda _plan: driver)


def quiet() -> tuple[Reporter, io.StringIO]:
    out = io.StringIO()
    return Reporter(Console(file=out, width=400, highlight=False)), out


def test_no_kept_file_asks_vagrant_once_and_says_so(
    plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = FakeDriver(plan)
    use_driver(monkeypatch, driver)
    reporter, out = quiet()
    with _lab_transport(plan, reporter, {}) as transport:  # lazy: no packet is sent
        assert set(transport.targets) == {n.name for n in plan.nodes}
    assert driver.ssh_config_calls == 1
    kept = lifecycle.ssh_config_path(plan)
    assert f"no {kept}" in out.getvalue() and "asking Vagrant" in out.getvalue()
    # The answer is kept for the next run.
    assert kept.read_text() == SSH_CONFIG_CAPTURE.read_text()


def test_a_kept_file_without_every_node_asks_vagrant(
    plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = FakeDriver(plan)
    use_driver(monkeypatch, driver)
    kept = lifecycle.ssh_config_path(plan)
    kept.write_text(SSH_CONFIG_CAPTURE.read_text().split("\nHost node2")[0])
    reporter, out = quiet()
    _lab_transport(plan, reporter, {}).close()
    assert driver.ssh_config_calls == 1
    assert f"{kept} has no entry for node2" in out.getvalue()


def test_a_kept_file_that_no_longer_reaches_the_lab_asks_vagrant(
    plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lab was halted and brought up by hand, say: the kept address answers no more.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stale = "".join(
        f"Host {n.name}\n  HostName 127.0.0.1\n  Port {port}\n  User vagrant\n" for n in plan.nodes
    )
    lifecycle.ssh_config_path(plan).write_text(stale)
    driver = FakeDriver(plan)
    use_driver(monkeypatch, driver)
    reporter, out = quiet()
    _lab_transport(plan, reporter, {}).close()
    assert driver.ssh_config_calls == 1
    said = out.getvalue()
    assert "does not reach the lab: master (vagrant@127.0.0.1" in said
    assert "connection refused" in said and "asking Vagrant" in said


def test_a_lab_that_is_down_is_named(plan: Plan, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = FakeDriver(plan, down={"node1"})
    use_driver(monkeypatch, driver)
    with pytest.raises(KubelabError, match="not running: node1"):
        _lab_transport(plan, quiet()[0], {})
    assert driver.ssh_config_calls == 1


@pytest.mark.integration
@pytest.mark.netns
def test_a_kept_file_that_reaches_the_lab_needs_no_vagrant(
    plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    why = missing_requirements()
    if why:
        pytest.skip(why)
    driver = FakeDriver(plan)
    use_driver(monkeypatch, driver)
    nodes = plan.nodes
    with NetnsHosts("kept", [n.ip for n in nodes], names=[n.name for n in nodes]) as hosts:
        lifecycle.ssh_config_path(plan).write_text(hosts.ssh_config_text())
        reporter, out = quiet()

        def verify_side() -> tuple[int, str, str]:
            here = {HOST: LocalTarget(HOST)}
            with _lab_transport(plan, reporter, here) as transport:
                opened = transport.connections_opened  # each VM asked up front
                on_master = transport.run("master", "hostname").stdout.strip()
                on_host = transport.run(HOST, "echo", "here").stdout.strip()
                assert transport.connections_opened == opened  # and reused
                return opened, on_master, on_host

        opened, on_master, on_host = hosts.call_in_ns(verify_side)
    assert driver.ssh_config_calls == 0 and out.getvalue() == ""
    assert opened == len(nodes)
    assert on_master and on_host == "here"


@pytest.mark.integration
@pytest.mark.netns
def test_a_kept_address_another_machine_answers_on_asks_vagrant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # node2 was rebuilt elsewhere; its old address now answers as some other machine,
    # one that does not hold node2's private address.
    why = missing_requirements()
    if why:
        pytest.skip(why)
    config = yaml.safe_load(CONFIG.read_text())
    config["nodes"][2]["ip"] = "192.168.56.13"
    moved = tmp_path / "lab.yaml"
    moved.write_text(yaml.safe_dump(config))
    plan = load_plan(moved, {}, repo_root=REPO_ROOT, lab_dir=tmp_path / "lab")
    plan.lab_dir.mkdir(parents=True)
    (plan.lab_dir / "Vagrantfile").write_text("# rendered by invoke up\n")
    driver = FakeDriver(plan)
    use_driver(monkeypatch, driver)
    addresses = ["192.168.56.10", "192.168.56.11", "192.168.56.12"]
    with NetnsHosts("moved", addresses, names=[n.name for n in plan.nodes]) as hosts:
        lifecycle.ssh_config_path(plan).write_text(hosts.ssh_config_text())
        reporter, out = quiet()
        # Vagrant's answer is the captured lab's: lazy, so nothing is sent to it.
        hosts.call_in_ns(lambda: _lab_transport(plan, reporter, {}).close())
    assert driver.ssh_config_calls == 1
    said = out.getvalue()
    assert "does not reach the lab: node2 does not hold its private address 192.168.56.13" in said
