"""Each student's lab on its host: the lab config and plan, derived from the class's.

Every fact that differs between two labs on one host comes from the student ID and
the slot: the lab folder (hence vagrant-libvirt's prefix, the domain, volume and
network names, see plan.lab_prefix) and the lab network. Libvirt refuses a second
network whose subnet is already routed on the host, so each slot gets its own: the
class config's network moved up by the slot (192.168.56.0/24 -> 192.168.57.0/24 for
slot 1), each VM keeping its last octet (.10 stays .10).
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from pathlib import Path

from kubelab import defaults
from kubelab.classroom.hosts import HostSpec, libvirt_uri
from kubelab.classroom.placement import LabDemand
from kubelab.classroom.state import ClassPaths
from kubelab.config import LabConfig, config_as_dict, validate_config
from kubelab.plan import Plan, make_plan
from kubelab.transport import SSHTarget

MAX_SLOTS = 64
# vagrant-libvirt's management network, made on every host it runs VMs on.
MANAGEMENT_NET = ipaddress.IPv4Network(defaults.MANAGEMENT_CIDR)
SERIAL_LOG_DIR = "/var/log/libvirt/qemu"


@dataclass(frozen=True)
class ClassHost:
    """A host of hosts.yaml with everything derived from it, once."""

    spec: HostSpec
    key: Path
    uri: str
    proxy_command: str  # what vagrant runs to reach a VM through this host
    jump: SSHTarget  # what kubelab's Transport goes through

    @property
    def name(self) -> str:
        return self.spec.name


def class_host(spec: HostSpec, base_dir: Path, paths: ClassPaths) -> ClassHost:
    key = spec.key_path(base_dir)
    ssh = paths.ssh_command.resolve()
    proxy = " ".join(
        [
            shlex.quote(str(ssh)),
            *("-i", shlex.quote(str(key)), "-l", shlex.quote(spec.user)),
            *("-p", str(spec.port), shlex.quote(spec.address), "-W", "%h:%p"),
        ]
    )
    return ClassHost(
        spec=spec,
        key=key,
        uri=libvirt_uri(spec, key, ssh),
        proxy_command=proxy,
        jump=SSHTarget(
            name=spec.name,
            host=spec.address,
            port=spec.port,
            user=spec.user,
            key_file=key,
            known_hosts=paths.known_hosts.resolve(),
        ),
    )


@dataclass(frozen=True)
class BootFiles:
    """The direct-boot box's kernel and initrd, as paths on the libvirt host."""

    kernel: str
    initrd: str


def slot_network(config: LabConfig, slot: int) -> ipaddress.IPv4Network:
    base = ipaddress.IPv4Network(config.network.cidr)
    start = int(base.network_address) + slot * base.num_addresses
    return ipaddress.IPv4Network((start, base.prefixlen))


def usable_slots(config: LabConfig) -> list[int]:
    """Slots whose lab network meets neither the management net nor the cluster's ranges."""
    avoid = [
        MANAGEMENT_NET,
        ipaddress.IPv4Network(config.kubernetes.pod_cidr),
        ipaddress.IPv4Network(config.kubernetes.service_cidr),
    ]
    slots = []
    for slot in range(MAX_SLOTS):
        try:
            net = slot_network(config, slot)
        except ValueError:  # past 255.255.255.255
            break
        if not net.is_private or any(net.overlaps(a) for a in avoid):
            continue
        slots.append(slot)
    return slots


def free_slot(config: LabConfig, taken: set[int]) -> int | None:
    return next((s for s in usable_slots(config) if s not in taken), None)


def demand(student: str, config: LabConfig) -> LabDemand:
    return LabDemand(
        student,
        memory_mib=sum(n.memory for n in config.nodes),
        vcpus=sum(n.cpus for n in config.nodes),
    )


def student_config(
    base: LabConfig,
    student: str,
    host: ClassHost,
    slot: int,
    boot: BootFiles | None,
    stages: list[str] | None = None,
) -> LabConfig:
    """The class config for one student on one host, validated again as a whole."""
    raw = config_as_dict(base)
    net = slot_network(base, slot)
    shift = int(net.network_address) - int(ipaddress.IPv4Network(base.network.cidr).network_address)
    raw["student_id"] = student
    raw["network"]["cidr"] = str(net)
    for node in raw["nodes"]:
        node["ip"] = str(ipaddress.IPv4Address(int(ipaddress.IPv4Address(node["ip"])) + shift))
    raw["libvirt"].update(
        uri=host.uri,
        storage_pool=host.spec.pool,
        serial_log_dir=SERIAL_LOG_DIR,
        proxy_command=host.proxy_command,
        kernel=boot.kernel if boot else "",
        initrd=boot.initrd if boot else "",
    )
    if stages is not None:
        raw["provision"]["stages"] = stages
    return validate_config(raw, source=f"roster {student}")


def host_log_files(plan: Plan) -> dict[str, list[str]]:
    """Each VM's log files on its libvirt host: the serial log (the Vagrantfile's
    lv.serial path: serial_log_dir, the prefix, serial-NODE.log) and libvirt's own
    QEMU log (named after the domain: the prefix and the machine name)."""
    folder = plan.config.libvirt.serial_log_dir or SERIAL_LOG_DIR
    return {
        n.name: [
            f"{folder}/{plan.prefix}serial-{n.name}.log",
            f"{SERIAL_LOG_DIR}/{plan.prefix}{n.name}.log",
        ]
        for n in plan.nodes
    }


def student_plan(config: LabConfig, paths: ClassPaths) -> Plan:
    return make_plan(config, paths.lab_dir(config.student_id).resolve())
