"""Plan: what a validated config means for this host.

A plan resolves everything the templates and the backend need: each VM's
hostname, the libvirt names that keep two labs apart, the catalog entries for
the pinned versions, the mirror profile with its placeholders filled, and the
ordered provisioning stages. It is pure: it reads only the config and the
catalog data files.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubelab.config import LabConfig, catalog, hostname_for, mirror_profiles
from kubelab.errors import KubelabError

LAB_ROOT_NAME = ".lab"


@dataclass(frozen=True)
class PlannedNode:
    name: str  # the Vagrant machine name (master, node1, ...)
    hostname: str  # the VM's hostname, carrying the student ID when set
    role: str  # master | node
    ip: str  # the private (lab network) address, on eth1
    cpus: int
    memory: int

    @property
    def is_master(self) -> bool:
        return self.role == "master"


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    # all | master | nodes: which VMs run it. Stages marked `after_nodes` run on
    # the master once the nodes are done (waiting for the whole cluster).
    runs_on: str
    deadline: int  # seconds
    template: str  # path under provision/
    after_nodes: bool = False
    needs_join_command: bool = False
    # The host copies this VM's certificate bundle from the master before it runs.
    ships_bundle: bool = False


@dataclass(frozen=True)
class Plan:
    config: LabConfig
    lab_dir: Path
    prefix: str  # vagrant-libvirt default_prefix: domains and volumes start with it
    network_name: str  # the libvirt network of the lab (private, no DHCP)
    nodes: tuple[PlannedNode, ...]
    stages: tuple[Stage, ...]
    kubernetes: dict[str, Any]
    runtime: dict[str, Any]
    cni: dict[str, Any]
    guest: dict[str, Any]
    mirror: dict[str, str]
    network: dict[str, str] = field(default_factory=dict)
    # The exercise the lab was started for (`invoke lab`), or None. In an exercise lab
    # Vagrant sets plain hostnames: carrying the student ID is the student's step.
    exercise: int | None = None
    hardway: dict[str, Any] = field(default_factory=dict)  # the catalog's pinned hard-way parts

    @property
    def master(self) -> PlannedNode:
        return next(n for n in self.nodes if n.is_master)

    @property
    def workers(self) -> tuple[PlannedNode, ...]:
        return tuple(n for n in self.nodes if not n.is_master)

    def node(self, name: str) -> PlannedNode:
        for candidate in self.nodes:
            if name in (candidate.name, candidate.hostname):
                return candidate
        raise KubelabError(
            f"no node named {name!r} in this lab",
            hint=f"use one of {', '.join(n.name for n in self.nodes)}",
            code=2,
        )

    def stages_for(self, node: PlannedNode) -> list[Stage]:
        return [s for s in self.stages if _runs_on(s, node)]

    @property
    def log_dir(self) -> Path:
        return self.lab_dir / "logs"


def _runs_on(stage: Stage, node: PlannedNode) -> bool:
    return (
        stage.runs_on == "all"
        or (stage.runs_on == "master" and node.is_master)
        or (stage.runs_on == "nodes" and not node.is_master)
    )


def default_lab_dir(repo_root: Path, config: LabConfig) -> Path:
    suffix = f"-{config.student_id.lower()}" if config.student_id else ""
    return repo_root / LAB_ROOT_NAME / f"{config.name}{suffix}"


def lab_prefix(config: LabConfig, lab_dir: Path) -> str:
    """A default_prefix no other lab on this host shares.

    The lab name and student ID make it readable; a short digest of the lab
    folder's absolute path keeps two folders with the same config apart.
    """
    digest = hashlib.sha256(os.fsencode(lab_dir)).hexdigest()[:6]
    student = f"-{config.student_id.lower()}" if config.student_id else ""
    return f"kubelab-{config.name}{student}-{digest}-"


def stage_catalog() -> list[dict[str, Any]]:
    return list(catalog()["stages"])


def resolve_stages(names: list[str] | None) -> tuple[Stage, ...]:
    entries = stage_catalog()
    if names is None:
        names = [s["name"] for s in entries if not s.get("optional")]
    order = [s["name"] for s in entries]
    chosen = sorted(set(names), key=order.index)
    stages = []
    for entry in entries:
        if entry["name"] not in chosen:
            continue
        stages.append(
            Stage(
                name=entry["name"],
                title=entry["title"],
                runs_on=entry["runs_on"],
                deadline=int(entry["deadline"]),
                template=f"stages/{entry['name']}.sh.j2",
                after_nodes=bool(entry.get("after_nodes", False)),
                needs_join_command=bool(entry.get("needs_join_command", False)),
                ships_bundle=bool(entry.get("ships_bundle", False)),
            )
        )
    return tuple(stages)


def resolve_mirror(config: LabConfig, minor: str) -> dict[str, str]:
    profiles = mirror_profiles()
    resolved = dict(profiles["official"])
    resolved.update(profiles.get(config.mirror.profile) or {})
    if config.mirror.profile == "custom":
        resolved.update(config.mirror.custom)
    resolved = {key: value.replace("{minor}", minor) for key, value in resolved.items()}
    resolved["profile"] = config.mirror.profile
    return resolved


def make_plan(config: LabConfig, lab_dir: Path, exercise: int | None = None) -> Plan:
    """Resolve a validated config for a lab folder. `lab_dir` should be absolute."""
    cat = catalog()
    version = config.kubernetes.version or cat["default_kubernetes"]
    k8s_entry = cat["kubernetes"][version]
    kubernetes = {
        "version": version,
        **k8s_entry,
        "pod_cidr": config.kubernetes.pod_cidr,
        "service_cidr": config.kubernetes.service_cidr,
        # The Service IP of the API server (kubernetes.default): the CIDR's first host.
        "service_ip": str(next(ipaddress.IPv4Network(config.kubernetes.service_cidr).hosts())),
        "proxy_mode": config.kubernetes.proxy_mode,
        "firewall": config.kubernetes.firewall,
        "runtime": config.kubernetes.runtime,
        "cni": config.kubernetes.cni,
    }
    prefix = lab_prefix(config, lab_dir)
    lab_net = ipaddress.IPv4Network(config.network.cidr)
    nodes = tuple(
        PlannedNode(
            name=n.name,
            hostname=hostname_for(n.name, config.student_id),
            role=n.role,
            ip=n.ip,
            cpus=n.cpus,
            memory=n.memory,
        )
        # The master first: everything that iterates nodes does it in this order.
        for n in sorted(config.nodes, key=lambda n: n.role != "master")
    )
    return Plan(
        config=config,
        lab_dir=lab_dir,
        prefix=prefix,
        network_name=f"{prefix}net",
        nodes=nodes,
        stages=resolve_stages(config.provision.stages),
        kubernetes=kubernetes,
        runtime={"name": config.kubernetes.runtime, **cat["runtimes"][config.kubernetes.runtime]},
        cni={"name": config.kubernetes.cni, **cat["cnis"][config.kubernetes.cni]},
        guest={"name": config.box.guest, **cat["guests"][config.box.guest]},
        mirror=resolve_mirror(config, k8s_entry["minor"]),
        network={
            "cidr": str(lab_net),
            "netmask": str(lab_net.netmask),
            "host_ip": str(next(lab_net.hosts())),
        },
        exercise=exercise,
        hardway=dict(cat.get("hardway") or {}),
    )


def load_plan(
    config_path: Path | None,
    overrides: dict[str, Any] | None,
    *,
    repo_root: Path,
    lab_dir: Path | None = None,
    exercise: int | None = None,
) -> Plan:
    """Config file (or lab.yaml beside tasks.py) + flag overrides -> a plan."""
    from kubelab.config import load_config

    config = load_config(config_path, overrides, search_dir=repo_root)
    folder = (lab_dir or default_lab_dir(repo_root, config)).resolve()
    return make_plan(config, folder, exercise)
