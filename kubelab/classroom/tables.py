"""What the class tasks print: tables built from results, nothing decided here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rich.table import Table

from kubelab.classroom.placement import Placement
from kubelab.classroom.run import HostCheck, LabOutcome, LabStatus
from kubelab.classroom.state import Seat


def hosts_table(checks: Iterable[HostCheck]) -> Table:
    table = Table(title="libvirt hosts", box=None, pad_edge=False)
    for column in (
        "host",
        "address",
        "host key",
        "libvirt",
        "vCPUs",
        "memory MiB",
        "box",
        "problem",
    ):
        table.add_column(column)
    for check in checks:
        spec, f = check.host.spec, check.figures
        table.add_row(
            spec.name,
            f"{spec.user}@{spec.address}:{spec.port}",
            f"{check.key.status} {check.key.fingerprint}" if check.key else "-",
            f.libvirt_version if f else "-",
            f"{f.offered_vcpus} free of {f.cpus} (reserve {spec.reserve_vcpus})" if f else "-",
            (
                f"{f.offered_memory_mib} free of {f.memory_total_mib} "
                f"(promised {f.promised_memory_mib}, reserve {spec.reserve_memory_mib})"
                if f
                else "-"
            ),
            ("present" if f.box_volumes else "not uploaded yet") if f else "-",
            check.problem or "ok",
        )
    return table


def placement_table(
    placement: Placement, seats: Mapping[str, Seat], networks: Mapping[str, str]
) -> Table:
    table = Table(title="placement (whole labs; reserve kept)", box=None, pad_edge=False)
    for column in ("host", "students (lab network)", "labs take", "left after them"):
        table.add_column(column)
    for load in placement.hosts:
        table.add_row(
            load.host,
            ", ".join(f"{s} ({networks.get(s, '?')})" for s in load.students) or "-",
            f"{load.memory_mib} MiB, {load.vcpus} vCPUs",
            f"{load.memory_left_mib} MiB, {load.vcpus_left} vCPUs",
        )
    return table


def outcomes_table(title: str, outcomes: Iterable[LabOutcome]) -> Table:
    table = Table(title=title, box=None, pad_edge=False)
    for column in ("student", "host", "result", "seconds"):
        table.add_column(column)
    for o in outcomes:
        table.add_row(
            o.student,
            o.host,
            o.detail if o.ok else f"[red]ERROR[/] {o.detail}",
            f"{o.timings['total']:.0f}" if "total" in o.timings else "-",
        )
    return table


def status_table(rows: Iterable[LabStatus]) -> Table:
    table = Table(title="class labs", box=None, pad_edge=False)
    for column in ("student", "host", "lab network", "VMs"):
        table.add_column(column)
    for row in rows:
        vms = ", ".join(f"{n} {s}" for n, s in row.states.items())
        table.add_row(
            row.student,
            row.host,
            row.network or "-",
            f"[red]ERROR[/] {row.error}" if row.error else vms,
        )
    return table
