"""Place whole labs on libvirt hosts by capacity: a pure function, no I/O.

A lab never spans hosts (its private network, DHCP and Kubernetes overlay then work
as on one machine). Each host keeps its reserve of memory and vCPUs. Labs go, the
largest first, to the host with the most memory left that still fits them, so a
class spreads out and no host runs full while another idles. A class that does not
fit is refused as a whole, naming every student left out: half a class is not a plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kubelab.errors import KubelabError


@dataclass(frozen=True)
class HostCapacity:
    """What one host can give to labs, from its own figures (see probe.py).

    memory_mib: memory not yet promised to a domain (total minus every defined
    domain's maxMem); vcpus: vCPUs not yet promised. `reachable` False: the host did
    not answer, and gets no lab.
    """

    name: str
    memory_mib: int
    vcpus: int
    reserve_memory_mib: int = 0
    reserve_vcpus: int = 0
    reachable: bool = True

    @property
    def usable_memory_mib(self) -> int:
        return max(self.memory_mib - self.reserve_memory_mib, 0) if self.reachable else 0

    @property
    def usable_vcpus(self) -> int:
        return max(self.vcpus - self.reserve_vcpus, 0) if self.reachable else 0


@dataclass(frozen=True)
class LabDemand:
    """One student's whole lab: the sum of its VMs."""

    student: str
    memory_mib: int
    vcpus: int


@dataclass(frozen=True)
class HostLoad:
    host: str
    students: tuple[str, ...]
    memory_mib: int  # given to the labs placed here
    vcpus: int
    memory_left_mib: int  # usable memory still free after them (reserve kept)
    vcpus_left: int


@dataclass(frozen=True)
class Placement:
    by_student: Mapping[str, str]  # student -> host
    hosts: tuple[HostLoad, ...] = field(default=())

    def students_on(self, host: str) -> list[str]:
        return [s for s, h in self.by_student.items() if h == host]


class PlacementError(KubelabError):
    """The class does not fit on the hosts; `unplaced` names the students left out."""

    def __init__(self, message: str, unplaced: Sequence[str], hint: str) -> None:
        super().__init__(message, hint=hint, code=1)
        self.unplaced = tuple(unplaced)


def place(
    labs: Sequence[LabDemand],
    hosts: Sequence[HostCapacity],
    fixed: Mapping[str, str] | None = None,
) -> Placement:
    """Every lab on exactly one host, or PlacementError naming who does not fit.

    `fixed`: students already placed (a rerun); they stay on their host, and their
    demand is counted there first, even when that host is now unreachable (its labs
    are its own; they are not moved).
    """
    fixed = dict(fixed or {})
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise ValueError(f"host names must be distinct: {names}")
    students = [lab.student for lab in labs]
    if len(set(students)) != len(students):
        raise ValueError("each student must appear once")
    memory = {h.name: h.usable_memory_mib for h in hosts}
    vcpus = {h.name: h.usable_vcpus for h in hosts}
    chosen: dict[str, str] = {}

    for lab in labs:
        host = fixed.get(lab.student)
        if host is None:
            continue
        if host not in memory:
            raise PlacementError(
                f"{lab.student} is placed on host {host!r}, which hosts.yaml no longer lists",
                [lab.student],
                hint="put the host back in hosts.yaml, or `invoke class.down` that lab first",
            )
        chosen[lab.student] = host
        memory[host] -= lab.memory_mib
        vcpus[host] -= lab.vcpus

    unplaced = []
    # Largest first, then by student ID: the same input always gives the same plan.
    for lab in sorted(labs, key=lambda x: (-x.memory_mib, -x.vcpus, x.student)):
        if lab.student in chosen:
            continue
        fitting = [
            h.name
            for h in hosts
            if h.reachable and memory[h.name] >= lab.memory_mib and vcpus[h.name] >= lab.vcpus
        ]
        if not fitting:
            unplaced.append(lab.student)
            continue
        best = max(fitting, key=lambda n: (memory[n], vcpus[n], -names.index(n)))
        chosen[lab.student] = best
        memory[best] -= lab.memory_mib
        vcpus[best] -= lab.vcpus

    if unplaced:
        total_mem = sum(lab.memory_mib for lab in labs)
        total_cpu = sum(lab.vcpus for lab in labs)
        free_mem = sum(h.usable_memory_mib for h in hosts)
        free_cpu = sum(h.usable_vcpus for h in hosts)
        down = [h.name for h in hosts if not h.reachable]
        raise PlacementError(
            f"the class does not fit: no host has room for {', '.join(sorted(unplaced))} "
            f"(the class needs {total_mem} MiB and {total_cpu} vCPUs; the hosts have "
            f"{free_mem} MiB and {free_cpu} vCPUs beyond their reserve"
            + (f"; unreachable: {', '.join(down)}" if down else "")
            + ")",
            sorted(unplaced),
            hint="add a host to hosts.yaml, lower the reserve, or give the labs smaller VMs",
        )

    order = {lab.student: i for i, lab in enumerate(labs)}
    by_student = dict(sorted(chosen.items(), key=lambda kv: order[kv[0]]))
    loads = []
    for h in hosts:
        here = tuple(s for s in by_student if by_student[s] == h.name)
        loads.append(
            HostLoad(
                host=h.name,
                students=here,
                memory_mib=sum(lab.memory_mib for lab in labs if lab.student in here),
                vcpus=sum(lab.vcpus for lab in labs if lab.student in here),
                memory_left_mib=memory[h.name],
                vcpus_left=vcpus[h.name],
            )
        )
    return Placement(by_student=by_student, hosts=tuple(loads))
