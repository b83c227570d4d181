"""lifecycle.up's resume logic, against a fake Vagrant and a fake VM transport.

What `invoke up` does on a lab in each state, without a VM: the fake driver says
which VMs run and records boots; the fake transport keeps each VM's stage markers
and runs nothing but records which stage scripts ran. The real stage scripts run in
tests/provision/test_stage_runner_resume.py; the real VMs in tests/e2e.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from kubelab import lifecycle
from kubelab.config import load_config
from kubelab.errors import KubelabError
from kubelab.plan import Plan, make_plan
from kubelab.progress import Reporter
from kubelab.provision import MARKER_DIR
from kubelab.transport import CommandResult, command_line

JOIN = (
    "kubeadm join 192.168.56.10:6443 --token abcdef.0123456789abcdef "
    "--discovery-token-ca-cert-hash sha256:" + "0" * 64
)
_MARKER_WRITE = re.compile(rf"echo ([0-9a-f]{{64}}) > {re.escape(MARKER_DIR)}/(\S+)\.sha256")


class FakeDriver:
    def __init__(self, plan: Plan, running: set[str]) -> None:
        self.plan = plan
        self.running = set(running)
        self.booted: list[list[str]] = []
        self.ssh_config_calls: list[str | None] = []
        self.ssh_config_text = SSH_CONFIG_CAPTURE.read_text()

    def status(self) -> dict[str, str]:
        return {n.name: "running" if n.name in self.running else "shutoff" for n in self.plan.nodes}

    def up(self, vm_names: list[str] | None = None, provision: bool = False) -> None:
        names = list(vm_names or [n.name for n in self.plan.nodes])
        self.booted.append(names)
        self.running |= set(names)

    def ssh_config(self, vm_name: str | None = None) -> str:
        """What `vagrant ssh-config` prints for a three-VM lab (a captured rendering)."""
        self.ssh_config_calls.append(vm_name)
        return self.ssh_config_text


class FakeVMs:
    """run()/put() as the Transport has them; each VM keeps its markers in a dict."""

    def __init__(self, plan: Plan, failing: tuple[str, str] | None = None) -> None:
        self.plan = plan
        self.markers: dict[str, dict[str, str]] = {n.name: {} for n in plan.nodes}
        self.scripts: dict[tuple[str, str], bytes] = {}
        self.ran: list[tuple[str, str]] = []  # (node, script file name)
        self.stdin: dict[tuple[str, str], str] = {}
        self.failing = failing  # (node, script name) that exits 1 once
        self.marker_reads: list[str] = []  # the nodes whose markers were read, in order

    def run(
        self,
        node: str,
        cmd: str,
        *args: object,
        timeout: float = 60.0,
        sudo: bool = False,
        stdin: bytes | str | None = None,
    ) -> CommandResult:
        line = command_line(cmd, *args)
        out, rc = "", 0
        if line.startswith("ip -4 -o addr show"):
            out = f"3: eth1    inet {self.plan.node(node).ip}/24 brd . scope global eth1\n"
        elif "*.sha256" in line:
            self.marker_reads.append(node)
            out = "".join(f"{MARKER_DIR}/{s}.sha256 {d}\n" for s, d in self.markers[node].items())
        elif found := _MARKER_WRITE.search(line):
            self.markers[node][found.group(2)] = found.group(1)
        elif line.startswith("bash /var/tmp/kubelab/"):
            script = line.split("/")[-1]
            self.ran.append((node, script))
            if stdin is not None:
                self.stdin[(node, script)] = stdin if isinstance(stdin, str) else stdin.decode()
            if self.failing == (node, script):
                self.failing, rc = None, 1
        elif "token create" in line:
            out = JOIN + "\n"
        elif line.startswith("cat /etc/kubernetes/admin.conf"):
            out = "apiVersion: v1\nkind: Config\n"
        return CommandResult(node, line, rc, out, "", 0.0)

    def put(self, node: str, data: bytes, remote_path: str, mode: int = 0o644, **_: Any) -> None:
        self.scripts[(node, remote_path)] = data

    def __enter__(self) -> FakeVMs:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    return make_plan(load_config(None, {}), tmp_path / "lab")


def up(
    plan: Plan, monkeypatch: pytest.MonkeyPatch, driver: FakeDriver, vms: FakeVMs
) -> lifecycle.UpResult:
    monkeypatch.setattr(lifecycle, "driver_for", lambda _plan: driver)
    monkeypatch.setattr(lifecycle, "connect", lambda _plan, _driver: vms)
    return lifecycle.up(plan, Reporter(Console(file=open("/dev/null", "w"))))  # noqa: SIM115


def every_script(plan: Plan) -> list[tuple[str, str]]:
    return [
        (n.name, f"{i:02d}-{s.name}.sh")
        for n in plan.nodes
        for i, s in enumerate(plan.stages_for(n), start=1)
    ]


def test_a_lab_from_nothing_boots_every_vm_and_runs_every_stage(
    plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver, vms = FakeDriver(plan, set()), FakeVMs(plan)

    result = up(plan, monkeypatch, driver, vms)

    assert result.changed
    assert driver.booted == [[n.name for n in plan.nodes]]
    assert sorted(vms.ran) == sorted(every_script(plan))
    # The join command reached each node on stdin, never in a command line.
    joins = {node: text for (node, script), text in vms.stdin.items() if "join" in script}
    assert set(joins) == {n.name for n in plan.workers} and set(joins.values()) == {JOIN + "\n"}
    assert not any("abcdef.0123456789abcdef" in c for c in map(str, vms.scripts))


def test_a_finished_lab_is_left_alone(plan: Plan, monkeypatch: pytest.MonkeyPatch) -> None:
    driver, vms = FakeDriver(plan, set()), FakeVMs(plan)
    up(plan, monkeypatch, driver, vms)
    vms.ran.clear()

    again = up(plan, monkeypatch, driver, vms)

    assert not again.changed
    assert driver.booted == [[n.name for n in plan.nodes]]  # only the first up booted
    assert vms.ran == []


def test_a_failed_stage_stops_up_and_the_next_up_resumes_there(
    plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = FakeDriver(plan, set())
    vms = FakeVMs(plan, failing=("master", "05-init-master.sh"))
    with pytest.raises(KubelabError, match="init-master"):
        up(plan, monkeypatch, driver, vms)
    ran_first = list(vms.ran)
    assert ran_first[-1] == ("master", "05-init-master.sh")
    assert not any(node != "master" for node, _ in ran_first)  # nodes wait for the master
    vms.ran.clear()
    vms.marker_reads.clear()

    up(plan, monkeypatch, driver, vms)

    # The VMs were up: the done step read each one's markers, provision reused them.
    assert sorted(vms.marker_reads) == sorted(n.name for n in plan.nodes)
    assert vms.ran[0] == ("master", "05-init-master.sh")
    assert ("master", "01-prepare.sh") not in vms.ran
    assert sorted(vms.ran) == sorted(set(every_script(plan)) - set(ran_first[:-1]))


def test_a_vm_that_went_down_is_booted_alone(plan: Plan, monkeypatch: pytest.MonkeyPatch) -> None:
    driver, vms = FakeDriver(plan, set()), FakeVMs(plan)
    up(plan, monkeypatch, driver, vms)
    driver.running.discard("node2")
    vms.ran.clear()

    result = up(plan, monkeypatch, driver, vms)

    assert driver.booted[-1] == ["node2"]
    assert vms.ran == []  # its stages are done (the markers live on the VM)
    assert result.changed


def test_a_vm_without_its_private_address_stops_up_before_any_stage(
    plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    vms = FakeVMs(plan)
    real_run = vms.run

    def no_eth1(node: str, cmd: str, *args: object, **kwargs: Any) -> CommandResult:
        result = real_run(node, cmd, *args, **kwargs)
        if node == "node1" and cmd == "ip":
            return CommandResult(node, result.command, 0, "2: eth0 inet 192.168.121.5/24\n", "", 0)
        return result

    monkeypatch.setattr(vms, "run", no_eth1)
    with pytest.raises(KubelabError, match="node1 does not hold its private address"):
        up(plan, monkeypatch, FakeDriver(plan, set()), vms)
    assert vms.ran == []


SSH_CONFIG_CAPTURE = Path(__file__).parent / "data" / "transport" / "vagrant-ssh-config.txt"


def _files(lab_dir: Path) -> dict[str, tuple[int, int]]:
    """Every file of the lab folder but its logs, with its inode and mtime."""
    return {
        p.relative_to(lab_dir).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in lab_dir.rglob("*")
        if p.is_file() and "logs" not in p.relative_to(lab_dir).parts
    }


def test_up_on_a_lab_that_is_up_rewrites_no_file(
    plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver, vms = FakeDriver(plan, set()), FakeVMs(plan)
    up(plan, monkeypatch, driver, vms)
    before = _files(plan.lab_dir)

    again = up(plan, monkeypatch, driver, vms)

    assert not again.changed
    assert "Vagrantfile" in before and _files(plan.lab_dir) == before


def test_a_changed_plan_rewrites_the_lab_folder(plan: Plan) -> None:
    lifecycle.render_lab(plan)
    (plan.lab_dir / "Vagrantfile").write_text("# edited by hand\n")
    lifecycle.render_lab(plan)
    assert (plan.lab_dir / "Vagrantfile").read_text() != "# edited by hand\n"


def test_connect_asks_vagrant_once_for_every_vm_and_keeps_the_answer(plan: Plan) -> None:
    plan.lab_dir.mkdir(parents=True)
    driver = FakeDriver(plan, {n.name for n in plan.nodes})

    with lifecycle.connect(plan, driver) as transport:  # no command is run: no packet sent
        assert set(transport.targets) == {n.name for n in plan.nodes}
    kept = lifecycle.ssh_config_path(plan)
    assert driver.ssh_config_calls == [None]
    assert kept.read_text() == driver.ssh_config_text
    assert kept.stat().st_mode & 0o777 == 0o600
    stamp = (kept.stat().st_ino, kept.stat().st_mtime_ns)

    lifecycle.connect(plan, driver).close()
    assert (kept.stat().st_ino, kept.stat().st_mtime_ns) == stamp  # the same text: kept


def test_a_vm_vagrant_gives_no_ssh_settings_for_is_named(plan: Plan) -> None:
    plan.lab_dir.mkdir(parents=True)
    driver = FakeDriver(plan, {n.name for n in plan.nodes})
    driver.ssh_config_text = driver.ssh_config_text.split("\nHost node1")[0]

    with pytest.raises(KubelabError, match="node1, node2"):
        lifecycle.connect(plan, driver)
    assert not lifecycle.ssh_config_path(plan).exists()


def test_a_running_lab_with_stages_left_is_connected_to_once(
    plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver, vms = FakeDriver(plan, {n.name for n in plan.nodes}), FakeVMs(plan)
    connects: list[str] = []

    def connect(_plan: Plan, _driver: object) -> FakeVMs:
        connects.append("connect")
        return vms

    monkeypatch.setattr(lifecycle, "driver_for", lambda _plan: driver)
    monkeypatch.setattr(lifecycle, "connect", connect)
    result = lifecycle.up(plan, Reporter(Console(file=open("/dev/null", "w"))))  # noqa: SIM115

    assert result.changed and driver.booted == []
    assert connects == ["connect"]  # the marker check and the stages share one transport
    assert sorted(vms.ran) == sorted(every_script(plan))
