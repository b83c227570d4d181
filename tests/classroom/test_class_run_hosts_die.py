"""A host that dies during class.up or class.reset stops only its own labs, named; a
rerun continues. class.up --exercise N snapshots each lab once; class.reset reverts it.

Doubles at the boundary that cannot exist here without VMs: vagrant-libvirt's
commands for one lab (VagrantDriver), libvirt's snapshot calls and the stream upload
of the boot files on a host, and the SSH to a lab's VMs. They fail the way the real
ones do when a host leaves the network (../shared/MULTIHOST_LIBVIRT_HERE.md, section 8: libvirt's
"Cannot recv data: ssh: connect to host ... No route to host").
"""

from __future__ import annotations

import string
from pathlib import Path

import paramiko
import pytest

from kubelab.classroom import run
from kubelab.classroom.hosts import load_hosts
from kubelab.classroom.run import HostCheck
from kubelab.classroom.seating import class_host
from kubelab.classroom.state import ClassPaths, Seat, prepare, save_seats
from kubelab.config import load_config
from kubelab.errors import KubelabError
from kubelab.labs import Exercise, load_exercise, snapshot_name
from kubelab.lifecycle import RUNNING
from kubelab.progress import Reporter
from kubelab.transport import CommandResult

DATA = Path(__file__).resolve().parents[1] / "data" / "classroom"
SSH_CONFIG = Path(__file__).resolve().parents[1] / "support" / "stubs" / "ssh-config-host.template"
VM_KEY = "/home/teacher/.vagrant.d/insecure_private_keys/vagrant.key.ed25519"
ADDRESSES = {"a": "10.77.0.11", "b": "10.77.0.12", "c": "10.77.0.13"}
SEATS = {"S001": Seat("a", 0), "S002": Seat("b", 0), "S003": Seat("c", 0)}


def _lost(address: str) -> KubelabError:
    return KubelabError(
        "Error while connecting to Libvirt: Error making a connection to libvirt URI "
        f"qemu+ssh://root@{address}/system: Call to virConnectOpen failed: Cannot recv "
        f"data: ssh: connect to host {address} port 22: No route to host"
    )


class Hosts:
    """Which hosts are on the network, and every VM each one runs."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.dies_during_up: set[str] = set()
        self.running: dict[str, set[str]] = {name: set() for name in ADDRESSES}
        self.booted: list[str] = []
        self.snapshots: list[tuple[str, str]] = []
        self.snapshot_hosts: list[str] = []
        self.reverted: list[tuple[str, str]] = []
        self.authorized: dict[str, dict[str, str]] = {}  # host -> marker -> entry
        self.class_hosts: dict[str, object] = {}


class Driver:
    """One lab's vagrant-libvirt, on its host."""

    def __init__(self, hosts: Hosts, host: str, lab: str) -> None:
        self.hosts, self.host, self.lab = hosts, host, lab

    def _reach(self) -> None:
        if self.host in self.hosts.down:
            raise _lost(ADDRESSES[self.host])

    def status(self) -> dict[str, str]:
        self._reach()
        return {"master": RUNNING} if self.lab in self.hosts.running[self.host] else {}

    def ssh_config(self, name: str) -> str:
        """`vagrant ssh-config NAME`, in vagrant's format (tests/support/stubs)."""
        self._reach()
        return string.Template(SSH_CONFIG.read_text()).substitute(
            name=name, address="192.168.121.50", user="vagrant", port=22, key_file=VM_KEY
        )

    def up(self, vm_names: list[str], provision: bool) -> None:
        self._reach()
        if self.host in self.hosts.dies_during_up:
            self.hosts.down.add(self.host)
            raise _lost(ADDRESSES[self.host])
        self.hosts.booted.append(self.lab)
        self.hosts.running[self.host].add(self.lab)


class Inspector:
    """libvirt on one host (LibvirtInspector's snapshot calls)."""

    def __init__(self, hosts: Hosts, uri: str) -> None:
        self.hosts = hosts
        self.host = next(n for n, a in ADDRESSES.items() if f"@{a}/" in uri)

    def _reach(self) -> None:
        if self.host in self.hosts.down:
            raise _lost(ADDRESSES[self.host])

    def snapshot(self, domain: str, name: str, description: str = "") -> None:
        self._reach()
        self.hosts.snapshots.append((domain, name))
        self.hosts.snapshot_hosts.append(self.host)

    def revert(self, domain: str, name: str) -> None:
        self._reach()
        if (domain, name) not in self.hosts.snapshots:
            raise KubelabError(f"{domain} has no snapshot {name!r}")
        self.hosts.reverted.append((domain, name))


class HostShell:
    """kubelab's SSH to a host itself: records the authorized_keys updates it runs."""

    def __init__(self, hosts: Hosts, host: str) -> None:
        self.hosts, self.host = hosts, host

    def __enter__(self) -> HostShell:
        if self.host in self.hosts.down:
            raise KubelabError(f"{self.host}: cannot connect: No route to host")
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def run(self, node: str, cmd: str, *args: str, **options: object) -> CommandResult:
        self.hosts.authorized.setdefault(self.host, {})[args[1]] = args[2]
        return CommandResult(node, cmd, 0, "", "", 0.1)


class VMs:
    """SSH to a lab's VMs through its host: each answers with its lab address."""

    def __init__(self, hosts: Hosts, host: str, ip: str) -> None:
        self.hosts, self.host, self.ip = hosts, host, ip

    def __enter__(self) -> VMs:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def run(self, node: str, cmd: str, *args: object, **options: object) -> CommandResult:
        if self.host in self.hosts.down:
            raise KubelabError(f"{node}: cannot connect: No route to host")
        if cmd != "ip":
            return CommandResult(node, cmd, 0, "", "", 0.1)  # no stage has run: no markers
        line = f"3: eth1    inet {self.ip}/24 brd 0.0.0.0 scope global eth1\n"
        return CommandResult(node, cmd, 0, line, "", 0.1)


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    paths = ClassPaths(tmp_path / "class")
    prepare(paths)
    save_seats(paths, SEATS)
    key = tmp_path / "teacher-key"
    key.write_text("not read: no host is contacted\n")
    hosts_yaml = tmp_path / "hosts.yaml"
    hosts_yaml.write_text(
        "hosts:\n"
        + "".join(
            f"  - {{name: {n}, address: {a}, key_file: {key}}}\n" for n, a in ADDRESSES.items()
        )
    )
    specs, base_dir = load_hosts(hosts_yaml)
    hosts = {s.name: class_host(s, base_dir, paths) for s in specs}
    base = load_config(DATA / "class-lab.yaml")
    configs = run.student_configs(base, SEATS, sorted(SEATS), hosts, {}, [])
    world = Hosts()
    host_of_lab = {str(paths.lab_dir(s).resolve()): seat.host for s, seat in SEATS.items()}
    fetched: list[str] = []

    def driver_for(plan):  # type: ignore[no-untyped-def]
        plan.log_dir.mkdir(parents=True, exist_ok=True)
        return Driver(world, host_of_lab[str(plan.lab_dir)], str(plan.lab_dir))

    def upload(uri: str, boot: object) -> None:
        for name, address in ADDRESSES.items():
            if address in uri and name in world.down:
                raise _lost(address)

    monkeypatch.setattr(run.lifecycle, "driver_for", driver_for)
    monkeypatch.setattr(run.libvirt_inspect, "stage_boot_files", upload)
    monkeypatch.setattr(
        run.lifecycle, "inspector_for", lambda plan: Inspector(world, plan.config.libvirt.uri)
    )
    monkeypatch.setattr(
        run,
        "lab_transport",
        lambda plan, driver, host: VMs(world, host.name, plan.nodes[0].ip),
    )
    monkeypatch.setattr(run, "fetch_host_logs", lambda plan, host: fetched.append(host.name))
    monkeypatch.setattr(run, "host_transport", lambda host: HostShell(world, host.name))
    checks = {name: HostCheck(host) for name, host in hosts.items()}
    world.class_hosts = hosts

    def up(boot: dict[str, Path], exercise: Exercise | None = None) -> dict[str, run.LabOutcome]:
        outcomes, _ = run.class_up(
            paths, hosts, checks, configs, SEATS, boot, Reporter(), exercise=exercise
        )
        return {o.student: o for o in outcomes}

    def reset(number: int) -> dict[str, run.LabOutcome]:
        return {o.student: o for o in run.class_reset(paths, number)}

    return world, up, fetched, reset, paths


def test_a_host_that_dies_during_up_stops_only_its_labs(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    world, up, fetched, _, _ = lab
    world.dies_during_up.add("c")
    outcomes = up({})
    assert outcomes["S001"].ok and outcomes["S002"].ok, outcomes
    lost = outcomes["S003"]
    assert not lost.ok and lost.host == "c" and "No route to host" in lost.detail
    assert fetched == ["c"]  # its logs were asked for; the host did not answer

    # Back on the network: the rerun boots only what is missing and finishes the class.
    world.dies_during_up.clear()
    world.down.clear()
    booted_before = list(world.booted)
    outcomes = up({})
    assert all(o.ok for o in outcomes.values()), outcomes
    assert [Path(b).name for b in world.booted[len(booted_before) :]] == ["S003"]


def test_a_host_lost_before_the_upload_names_its_students(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    world, up, _, _, _ = lab
    world.down.add("b")
    boot = {"vmlinuz-0": tmp_path / "vmlinuz", "initrd-0": tmp_path / "initrd"}
    outcomes = up(boot)
    assert outcomes["S001"].ok and outcomes["S003"].ok, outcomes
    assert not outcomes["S002"].ok and "10.77.0.12" in outcomes["S002"].detail
    assert not any(Path(b).name == "S002" for b in world.booted)


def test_class_reset_reverts_every_lab_but_the_lost_hosts(lab) -> None:  # type: ignore[no-untyped-def]
    world, up, _, reset, _ = lab
    exercise = load_exercise(1)
    name = snapshot_name(exercise)
    outcomes = up({}, exercise)
    assert all(o.ok for o in outcomes.values()), outcomes
    # Each lab's VM, on its own host, at the exercise's start.
    assert [n for _, n in world.snapshots] == [name] * 3
    assert len({d for d, _ in world.snapshots}) == 3
    assert sorted(world.snapshot_hosts) == ["a", "b", "c"]
    # A rerun of class.up keeps the start state: no second snapshot over the student's work.
    taken = len(world.snapshots)
    assert all(o.ok for o in up({}, exercise).values())
    assert len(world.snapshots) == taken

    world.down.add("b")
    outcomes = reset(1)
    assert outcomes["S001"].ok and outcomes["S003"].ok, outcomes
    assert not outcomes["S002"].ok and "No route to host" in outcomes["S002"].detail
    assert len(world.reverted) == 2
    # Another exercise's start was never taken: every lab says so, none is touched.
    world.down.clear()
    outcomes = reset(2)
    assert not any(o.ok for o in outcomes.values())
    assert all("class.up --exercise 2" in o.detail for o in outcomes.values()), outcomes
    assert len(world.reverted) == 2


def test_each_student_gets_a_config_and_an_entry_on_their_host_only(lab) -> None:  # type: ignore[no-untyped-def]
    world, up, _, _, paths = lab
    assert all(o.ok for o in up({}).values())
    pinned = paramiko.HostKeys()  # as class.hosts left it: every host's key pinned
    for address in ADDRESSES.values():
        key = paramiko.RSAKey.generate(2048)
        pinned.add(address, key.get_name(), key)
    pinned.save(str(paths.known_hosts))
    world.down.add("c")
    failed = run.write_ssh_configs(paths, world.class_hosts)
    assert sorted(failed) == ["S003"] and "No route to host" in failed["S003"]
    assert "c" not in world.authorized
    for student in ("S001", "S002"):
        ((mark, line),) = world.authorized[SEATS[student].host].items()
        assert mark.endswith(f"-{student}") and line.endswith(" " + mark)
        assert line.startswith("restrict,port-forwarding,")
        assert 'permitopen="192.168.56.10:22",command="/bin/false" ssh-ed25519 ' in line
        config = paths.ssh_config(student).read_text()
        assert "HostName 192.168.56.10" in config and f"IdentityFile {VM_KEY}" in config
        assert str(paths.ssh_config(student).with_name("id_ed25519").resolve()) in config
        assert "PRIVATE KEY" not in config + line
