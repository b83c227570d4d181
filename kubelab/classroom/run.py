"""A class's labs across the libvirt hosts: check hosts, up, status, verify, down.

Each student's lab is a lab folder of its own (one Vagrantfile, its host's URI), so
one dead host stops only its own labs: every operation runs per student, concurrently,
and ends in one outcome per student (ok, or the error that names it), never in an
exception that hides the others.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import paramiko
from rich.console import Console

from kubelab import atomicfile, labs, lifecycle
from kubelab.backend import libvirt_inspect
from kubelab.backend.libvirt_inspect import LibvirtInspector
from kubelab.backend.vagrant_driver import VagrantDriver
from kubelab.classroom import access
from kubelab.classroom.hostkeys import KeyCheck, check_or_pin, offered_key
from kubelab.classroom.placement import HostCapacity, Placement, place
from kubelab.classroom.seating import (
    BootFiles,
    ClassHost,
    demand,
    free_slot,
    host_log_files,
    student_config,
    student_plan,
)
from kubelab.classroom.state import CONNECT_TIMEOUT, ClassPaths, Seat, load_seats, save_seats
from kubelab.config import LabConfig, validate_config
from kubelab.errors import ConfigError, KubelabError
from kubelab.plan import Plan, make_plan
from kubelab.progress import Reporter
from kubelab.provision import StageRunner
from kubelab.render import MANIFEST_NAME
from kubelab.transport import SSHTarget, Transport, targets_from_ssh_config

T = TypeVar("T")
DEFAULT_PARALLEL = 8


# --- hosts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HostCheck:
    """One host as `class.hosts` found it. `problem` empty: usable."""

    host: ClassHost
    key: KeyCheck | None = None
    figures: libvirt_inspect.HostFigures | None = None
    problem: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problem

    def capacity(self) -> HostCapacity:
        spec = self.host.spec
        return HostCapacity(
            name=spec.name,
            memory_mib=self.figures.offered_memory_mib if self.figures else 0,
            vcpus=self.figures.offered_vcpus if self.figures else 0,
            reserve_memory_mib=spec.reserve_memory_mib,
            reserve_vcpus=spec.reserve_vcpus,
            reachable=self.ok,
        )


def check_host(host: ClassHost, paths: ClassPaths, box_name: str) -> HostCheck:
    """Reachable, host key pinned (first contact) or matching, libvirtd answering, figures."""
    started = time.monotonic()
    spec = host.spec
    try:
        key = check_or_pin(
            paths.known_hosts,
            spec.known_hosts_name,
            offered_key(spec.address, spec.port, CONNECT_TIMEOUT),
        )
    except KubelabError as exc:
        return HostCheck(host, problem=exc.message, seconds=time.monotonic() - started)
    if key.status == "CHANGED":
        return HostCheck(
            host,
            key=key,
            problem=f"host key CHANGED: offered {key.fingerprint}, not the key pinned in "
            f"{paths.known_hosts} (a new install, or someone in the middle); if the host was "
            "reinstalled, delete its line there and run class.hosts again",
            seconds=time.monotonic() - started,
        )
    try:
        figures = libvirt_inspect.read_figures(
            host.uri, spec.pool, libvirt_inspect.box_volume_prefix(box_name)
        )
    except KubelabError as exc:
        return HostCheck(host, key=key, problem=exc.message, seconds=time.monotonic() - started)
    return HostCheck(host, key=key, figures=figures, seconds=time.monotonic() - started)


def check_hosts(
    hosts: Iterable[ClassHost], paths: ClassPaths, box_name: str
) -> dict[str, HostCheck]:
    hosts = list(hosts)
    checks = _each(hosts, lambda h: check_host(h, paths, box_name))
    return {h.name: c for h, c in zip(hosts, checks, strict=True)}


# --- outcomes --------------------------------------------------------------------------


@dataclass
class LabOutcome:
    student: str
    host: str
    ok: bool
    detail: str
    timings: dict[str, float] = field(default_factory=dict)


def _each(items: list[T], fn: Callable[[T], object], parallel: int = DEFAULT_PARALLEL) -> list:  # type: ignore[type-arg]
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(parallel, len(items))) as pool:
        return list(pool.map(fn, items))


# --- up --------------------------------------------------------------------------------


@dataclass
class UpReport:
    placement: Placement
    checks: dict[str, HostCheck]
    outcomes: list[LabOutcome]
    upload_seconds: dict[str, float]
    seconds: float


def plan_class(
    base: LabConfig,
    students: list[str],
    hosts: Mapping[str, ClassHost],
    checks: Mapping[str, HostCheck],
    paths: ClassPaths,
) -> tuple[Placement, dict[str, Seat]]:
    """Placement (students already seated stay) and a slot for each student on its host."""
    seats = load_seats(paths)
    fixed = {s: seat.host for s, seat in seats.items() if s in students}
    placement = place(
        [demand(s, base) for s in students],
        [checks[name].capacity() for name in hosts],
        fixed=fixed,
    )
    for student, host in placement.by_student.items():
        if student in seats:
            continue
        taken = {seat.slot for seat in seats.values() if seat.host == host}
        slot = free_slot(base, taken)
        if slot is None:
            raise KubelabError(
                f"host {host} has no lab network left for {student}",
                hint="place fewer labs on one host, or give the class config a smaller "
                "network.cidr (each lab on a host takes its own)",
            )
        seats[student] = Seat(host, slot)
    return placement, seats


def boot_files_for(box_dir: Path | None) -> dict[str, Path]:
    """The box's kernel and initrd by the volume name they get on a host; none for a
    box that boots with its own loader."""
    if box_dir is None:
        return {}
    kernel, initrd = box_dir / "vmlinuz", box_dir / "initrd.img"
    if not (kernel.is_file() and initrd.is_file()):
        return {}
    return {
        libvirt_inspect.boot_volume_name("vmlinuz", kernel): kernel,
        libvirt_inspect.boot_volume_name("initrd", initrd): initrd,
    }


def box_folder(config: LabConfig, vagrant_home: Path) -> Path | None:
    """Where Vagrant keeps the class box's files for libvirt, or None if not added."""
    root = vagrant_home / "boxes" / config.box.name.replace("/", "-VAGRANTSLASH-")
    versions = [config.box.version] if config.box.version else None
    if versions is None:
        found = sorted(p.name for p in root.glob("*") if (p / "libvirt").is_dir())
        versions = found[-1:]
    for version in versions:
        folder = root / version / "libvirt"
        if folder.is_dir():
            return folder
    return None


def boot_paths(boot: Mapping[str, Path]) -> BootFiles | None:
    """Where the uploaded kernel and initrd sit on every host (volume names carry a digest)."""
    if not boot:
        return None
    by_role = {name.split("-", 1)[0]: name for name in boot}
    folder = libvirt_inspect.BOOT_POOL_DIR
    return BootFiles(
        kernel=f"{folder}/{by_role['vmlinuz']}", initrd=f"{folder}/{by_role['initrd']}"
    )


def student_configs(
    base: LabConfig,
    seats: Mapping[str, Seat],
    students: list[str],
    hosts: Mapping[str, ClassHost],
    boot: Mapping[str, Path],
    stages: list[str] | None,
) -> dict[str, LabConfig]:
    """Every student's lab config, or one ConfigError listing every student's problems."""
    paths_on_host = boot_paths(boot)
    configs: dict[str, LabConfig] = {}
    problems: list[str] = []
    for student in students:
        seat = seats[student]
        try:
            configs[student] = student_config(
                base, student, hosts[seat.host], seat.slot, paths_on_host, stages
            )
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return configs


def class_up(
    paths: ClassPaths,
    hosts: Mapping[str, ClassHost],
    checks: Mapping[str, HostCheck],
    configs: Mapping[str, LabConfig],
    seats: Mapping[str, Seat],
    boot: Mapping[str, Path],
    reporter: Reporter,
    parallel: int = DEFAULT_PARALLEL,
    exercise: labs.Exercise | None = None,
) -> tuple[list[LabOutcome], dict[str, float]]:
    """Upload the boot files to each host in use, then bring every lab up, concurrently;
    with an exercise, snapshot each lab at its start (class.reset goes back to it)."""
    in_use = sorted({seats[s].host for s in configs})
    uploads: dict[str, float] = {}
    host_errors: dict[str, str] = {}

    def upload(name: str) -> None:
        if not checks[name].ok:
            host_errors[name] = f"host {name} unusable: {checks[name].problem}"
            return
        if not boot:
            return
        started = time.monotonic()
        try:
            libvirt_inspect.stage_boot_files(hosts[name].uri, boot)
        except KubelabError as exc:
            host_errors[name] = exc.message
            return
        uploads[name] = time.monotonic() - started
        reporter.info(f"{name}: kernel and initrd uploaded in {uploads[name]:.1f} s")

    _each(in_use, upload)

    def one(student: str) -> LabOutcome:
        host = seats[student].host
        if host in host_errors:
            return LabOutcome(student, host, False, host_errors[host])
        plan = student_plan(configs[student], paths)
        return up_lab(plan, hosts[host], reporter, student, exercise)

    return _each(sorted(configs), one, parallel), uploads


def up_lab(
    plan: Plan,
    host: ClassHost,
    reporter: Reporter,
    student: str,
    exercise: labs.Exercise | None = None,
) -> LabOutcome:
    timings: dict[str, float] = {}
    started = time.monotonic()
    log = plan.log_dir / "class.log"
    try:
        files = lifecycle.render_lab(plan)
        with log.open("a") as out:
            # The stage-by-stage lines of this lab go to its own log; the terminal
            # gets one line per student and step.
            own = Reporter(Console(file=out, highlight=False, force_terminal=False))
            driver = lifecycle.driver_for(plan)
            states = driver.status()
            down = [n.name for n in plan.nodes if states.get(n.name) != lifecycle.RUNNING]
            if down:
                reporter.info(f"{student} on {host.name}: boot {', '.join(down)}")
                driver.up(vm_names=down, provision=False)
                timings["boot"] = time.monotonic() - started
            reporter.info(f"{student} on {host.name}: provision through the host")
            with lab_transport(plan, driver, host) as transport:
                lifecycle.confirm_addresses(plan, transport)
                provision_started = time.monotonic()
                StageRunner(plan, files, transport, own).run()
                timings["provision"] = time.monotonic() - provision_started
            if exercise is not None:
                snapshot_started = time.monotonic()
                if start_snapshot(plan, exercise, student):
                    timings["snapshot"] = time.monotonic() - snapshot_started
        timings["total"] = time.monotonic() - started
    except KubelabError as exc:
        reporter.info(f"{student} on {host.name}: FAILED {exc.message.splitlines()[0]}")
        with suppress(KubelabError):  # the host may be the thing that failed
            fetch_host_logs(plan, host)
        return LabOutcome(student, host.name, False, _one_line(exc.message), timings)
    # The first lab on a host also waits for vagrant-libvirt to upload the box image there.
    boot = f" (boot {timings['boot']:.0f} s)" if "boot" in timings else ""
    reporter.info(f"{student} on {host.name}: up in {timings['total']:.0f} s{boot}")
    return LabOutcome(student, host.name, True, "up", timings)


def start_snapshot(plan: Plan, exercise: labs.Exercise, student: str) -> bool:
    """Snapshot every VM at the exercise's start, over the host's URI (the lab config's),
    once: a rerun of class.up must not replace the start state with the student's work."""
    name = labs.snapshot_name(exercise)
    state = labs.read_state(plan.lab_dir)
    if state is not None and state.exercise == exercise.number and state.snapshot == name:
        return False
    inspector = lifecycle.inspector_for(plan)
    for node in plan.nodes:
        inspector.snapshot(
            labs.domain_name(plan, node.name),
            name,
            f"kubelab: exercise {exercise.number} start state for {student}",
        )
    labs.write_state(
        plan.lab_dir,
        labs.LabState(exercise.number, student, started_at=labs.now(), snapshot=name),
    )
    return True


def class_reset(
    paths: ClassPaths, exercise: int, parallel: int = DEFAULT_PARALLEL
) -> list[LabOutcome]:
    """Every lab back to the exercise's start snapshot (labs.reset, over its host's URI)."""
    seats = load_seats(paths)

    def one(student: str) -> LabOutcome:
        host = seats[student].host
        try:
            plan = existing_plan(paths, student)
            state = labs.read_state(plan.lab_dir)
            if state is None or state.exercise != exercise or not state.snapshot:
                raise KubelabError(
                    f"no start-state snapshot of exercise {exercise} "
                    f"(class.up --exercise {exercise} takes it)"
                )
            with (plan.log_dir / "class.log").open("a") as out:
                own = Reporter(Console(file=out, highlight=False, force_terminal=False))
                _, took = labs.reset(plan, state, own)
        except KubelabError as exc:
            return LabOutcome(student, host, False, _one_line(exc.message))
        return LabOutcome(student, host, True, f"reverted to {state.snapshot}", {"total": took})

    return _each(sorted(seats), one, parallel)


def lab_transport(plan: Plan, driver: VagrantDriver, host: ClassHost) -> Transport:
    """SSH to each VM of the lab through its host: one connection to the host, shared."""
    targets = {}
    for node in plan.nodes:
        parsed = targets_from_ssh_config(driver.ssh_config(node.name))
        if node.name not in parsed:
            raise KubelabError(f"vagrant gave no SSH settings for {node.name}")
        targets[node.name] = dataclasses.replace(parsed[node.name], jump=host.jump)
    return Transport(targets)


# --- the labs that exist ---------------------------------------------------------------


def existing_plan(paths: ClassPaths, student: str) -> Plan:
    """A student's lab as it was rendered: its manifest's config, its folder."""
    lab_dir = paths.lab_dir(student).resolve()
    try:
        manifest = json.loads((lab_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError) as exc:
        raise KubelabError(f"{student}: no lab rendered at {lab_dir} ({exc})") from None
    return make_plan(validate_config(manifest["config"], source=str(lab_dir)), lab_dir)


@dataclass
class LabStatus:
    student: str
    host: str
    network: str
    states: dict[str, str]
    error: str = ""


def class_status(
    paths: ClassPaths, hosts: Mapping[str, ClassHost], parallel: int = DEFAULT_PARALLEL
) -> list[LabStatus]:
    seats = load_seats(paths)

    def one(student: str) -> LabStatus:
        seat = seats[student]
        try:
            plan = existing_plan(paths, student)
            states = lifecycle.driver_for(plan).status()
        except KubelabError as exc:
            return LabStatus(student, seat.host, "", {}, _one_line(exc.message))
        return LabStatus(student, seat.host, plan.config.network.cidr, states)

    return _each(sorted(seats), one, parallel)


def class_reach(
    paths: ClassPaths,
    hosts: Mapping[str, ClassHost],
    command: str,
    parallel: int = DEFAULT_PARALLEL,
) -> list[LabOutcome]:
    """Run `command` on every VM of every lab through its host; one outcome per student."""
    seats = load_seats(paths)

    def one(student: str) -> LabOutcome:
        seat = seats[student]
        started = time.monotonic()
        try:
            plan = existing_plan(paths, student)
            driver = lifecycle.running_driver(plan)
            with lab_transport(plan, driver, hosts[seat.host]) as transport:
                lines = []
                for node in plan.nodes:
                    result = transport.run(node.name, command, timeout=60)
                    if not result.ok:
                        raise KubelabError(f"{node.name}: rc={result.rc} {result.tail(2)}")
                    lines.append(f"{node.name}: {result.stdout.strip()}")
        except KubelabError as exc:
            return LabOutcome(student, seat.host, False, _one_line(exc.message))
        return LabOutcome(
            student, seat.host, True, "; ".join(lines), {"total": time.monotonic() - started}
        )

    return _each(sorted(seats), one, parallel)


# --- down ------------------------------------------------------------------------------


@dataclass
class DownReport:
    outcomes: list[LabOutcome]
    host_cleanup: dict[str, list[str]]  # host -> what was removed (boot files, box volumes)
    seconds: float


def class_down(
    paths: ClassPaths,
    hosts: Mapping[str, ClassHost],
    reporter: Reporter,
    *,
    box_name: str = "",
    parallel: int = DEFAULT_PARALLEL,
) -> DownReport:
    """Destroy every lab; check on its host that nothing of it is left; then, on each
    host with no lab left, remove the boot files (and the box's volume with box_name)."""
    started = time.monotonic()
    seats = load_seats(paths)

    def one(student: str) -> LabOutcome:
        seat = seats[student]
        host = hosts.get(seat.host)
        if host is None:
            return LabOutcome(student, seat.host, False, f"host {seat.host} not in hosts.yaml")
        try:
            plan = existing_plan(paths, student)
            if labs.read_state(plan.lab_dir) is not None:
                # libvirt refuses to undefine a domain that has snapshots.
                LibvirtInspector(host.uri).delete_snapshots(plan.prefix)
            if (plan.lab_dir / "Vagrantfile").is_file():
                lifecycle.driver_for(plan).destroy()
            left = LibvirtInspector(host.uri).leftovers(
                plan.prefix, [plan.network_name], plan.config.libvirt.storage_pool
            )
            if not left:
                remove_host_logs(plan, host)
                revoke_access(paths, host, student)
        except KubelabError as exc:
            reporter.info(f"{student} on {host.name}: FAILED {exc.message.splitlines()[0]}")
            return LabOutcome(student, host.name, False, _one_line(exc.message))
        if left:
            return LabOutcome(student, host.name, False, "left behind: " + ", ".join(left))
        reporter.info(f"{student} on {host.name}: destroyed, nothing left")
        return LabOutcome(student, host.name, True, "destroyed")

    outcomes = _each(sorted(seats), one, parallel)
    remaining = {o.student: seats[o.student] for o in outcomes if not o.ok}
    save_seats(paths, remaining)
    busy = {seat.host for seat in remaining.values()}
    cleanup: dict[str, list[str]] = {}

    def tidy(name: str) -> None:
        uri = hosts[name].uri
        try:
            removed = libvirt_inspect.remove_boot_files(uri)
            if box_name:
                removed += libvirt_inspect.remove_box_volumes(
                    uri, hosts[name].spec.pool, libvirt_inspect.box_volume_prefix(box_name)
                )
        except KubelabError as exc:
            removed = [f"FAILED: {_one_line(exc.message)}"]
        cleanup[name] = removed

    used = {seat.host for seat in seats.values()}
    _each(sorted(n for n in hosts if n not in busy and (n in used or box_name)), tidy)
    return DownReport(outcomes, cleanup, time.monotonic() - started)


# --- files on the hosts' disks ---------------------------------------------------------

LOG_TAIL_BYTES = 65536


def host_transport(host: ClassHost) -> Transport:
    """kubelab's SSH to the host itself (its pinned key), for its files: serial logs."""
    return Transport({host.name: host.jump}, connect_timeout=CONNECT_TIMEOUT)


def fetch_host_logs(plan: Plan, host: ClassHost) -> list[Path]:
    """Copy the tail of each VM's logs from the host into the lab's logs folder."""
    fetched = []
    plan.log_dir.mkdir(parents=True, exist_ok=True)
    with host_transport(host) as transport:
        for files in host_log_files(plan).values():
            for remote in files:
                result = transport.run(host.name, "tail -c", LOG_TAIL_BYTES, remote, timeout=30)
                if result.ok:
                    local = plan.log_dir / f"host-{remote.rsplit('/', 1)[-1]}"
                    local.write_text(result.stdout)
                    fetched.append(local)
    return fetched


def remove_host_logs(plan: Plan, host: ClassHost) -> None:
    """Delete the lab's VM logs from the host's disk (libvirt has no call for it)."""
    paths = [path for files in host_log_files(plan).values() for path in files]
    with host_transport(host) as transport:
        result = transport.run(host.name, "rm -f --", *paths, timeout=30)
    if not result.ok:
        raise KubelabError(f"could not delete the lab's logs on {host.name}: {result.tail(2)}")


# --- students' ssh configs -------------------------------------------------------------


def write_ssh_configs(paths: ClassPaths, hosts: Mapping[str, ClassHost]) -> dict[str, str]:
    """students/<id>/: an ssh_config naming each VM <node>-<id> by its lab address,
    reached through the lab's host with the student's own key, and that key allowed on
    the host for those addresses only. Returns student -> the error, for those not done."""
    written: dict[str, list[str]] = {}  # host -> students
    entries: dict[str, dict[str, str]] = {}
    failed: dict[str, str] = {}
    for student, seat in sorted(load_seats(paths).items()):
        host = hosts[seat.host]
        try:
            plan = existing_plan(paths, student)
            driver = lifecycle.running_driver(plan)
            targets = [
                targets_from_ssh_config(driver.ssh_config(n.name))[n.name] for n in plan.nodes
            ]
            known_hosts = paths.ssh_config(student).with_name("known_hosts")
            known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _copy_host_key(paths.known_hosts, host.spec.known_hosts_name, known_hosts)
        except KubelabError as exc:
            failed[student] = _one_line(exc.message)
            continue
        key = access.student_key(paths, student)
        text = ssh_config_text(student, host, key, known_hosts, plan, targets)
        out = paths.ssh_config(student)
        atomicfile.write_atomic(out, text, mode=0o644)
        entries.setdefault(host.name, {})[access.marker(paths, student)] = access.entry(
            paths, student, [n.ip for n in plan.nodes]
        )
        written.setdefault(host.name, []).append(student)

    def grant(name: str) -> None:
        try:
            with host_transport(hosts[name]) as transport:
                access.set_entries(transport, name, entries[name])
        except KubelabError as exc:
            for student in written[name]:
                failed[student] = _one_line(exc.message)

    _each(sorted(entries), grant)
    return failed


def ssh_config_text(
    student: str,
    host: ClassHost,
    key: Path,
    known_hosts: Path,
    plan: Plan,
    targets: list[SSHTarget],
) -> str:
    """The student's ssh_config: each VM by its lab address, through the host, own key."""
    jump = f"kubelab-host-{host.name}"
    lines = [
        f"# Written by kubelab for {student}: the lab on host {host.name}.",
        f"Host {jump}",
        f"  HostName {host.spec.address}",
        f"  Port {host.spec.port}",
        f"  User {host.spec.user}",
        f"  IdentityFile {key.resolve()}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {known_hosts.resolve()}",
        "  StrictHostKeyChecking yes",
        f"  ConnectTimeout {CONNECT_TIMEOUT}",
    ]
    for node, target in zip(plan.nodes, targets, strict=True):
        lines += [
            f"Host {node.hostname}",
            # The lab address, as the host's authorized_keys entry permits it.
            f"  HostName {node.ip}",
            f"  User {target.user}",
            *(f"  IdentityFile {k}" for k in target.key_files),
            "  IdentitiesOnly yes",
            f"  ProxyJump {jump}",
            # Throwaway VMs: a new key each `up`, as vagrant's own ssh-config says.
            "  UserKnownHostsFile /dev/null",
            "  StrictHostKeyChecking no",
        ]
    return "\n".join(lines) + "\n"


def revoke_access(paths: ClassPaths, host: ClassHost, student: str) -> None:
    """Remove the student's entry from the host's authorized_keys."""
    with host_transport(host) as transport:
        access.set_entries(transport, host.name, {access.marker(paths, student): ""})


def _copy_host_key(known_hosts: Path, name: str, out: Path) -> None:
    """The student's known_hosts: only their host's pinned key."""
    pinned = paramiko.HostKeys(str(known_hosts)).lookup(name)
    if not pinned:
        raise KubelabError(f"no pinned host key for {name} in {known_hosts}: run class.hosts")
    mine = paramiko.HostKeys()
    for key_type, key in pinned.items():
        mine.add(name, key_type, key)
    mine.save(str(out))


def _one_line(message: str) -> str:
    lines = [line for line in message.splitlines() if line.strip()]
    return (lines[0] if lines else message)[:300]
