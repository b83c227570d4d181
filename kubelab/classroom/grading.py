"""The class's grading inventory, written by kubelab: every student's lab behind its host.

`class.grade` hands it to the live grader (kubelab.grade.live), so a class is graded
exactly as a teacher's own inventory is. Each VM is reached through its lab's host
(the inventory's `jumps`, pinned by the class's known_hosts); the VM's address and
keys are what `vagrant ssh-config` says. A lab whose ssh-config cannot be read now
(its host is down, its VMs stopped) keeps the entry the last inventory held, or
gets one from its plan, so every seated student is graded or ends in an error row:
the grader then fails to reach it and says why.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from kubelab import atomicfile, lifecycle
from kubelab.classroom.seating import ClassHost
from kubelab.classroom.state import ClassPaths, load_seats
from kubelab.errors import KubelabError
from kubelab.plan import Plan
from kubelab.transport import SSHTarget, targets_from_ssh_config

INVENTORY = "inventory.yaml"


def inventory_path(paths: ClassPaths) -> Path:
    return paths.root / INVENTORY


def jump_entry(host: ClassHost) -> dict[str, Any]:
    jump = host.jump
    return {
        "host": jump.host,
        "port": jump.port,
        "user": jump.user,
        "key_file": str(jump.key_file),
        "known_hosts": str(jump.known_hosts),
    }


def lab_entry(plan: Plan, host: str, targets: Mapping[str, SSHTarget] | None) -> dict[str, Any]:
    """One student's master and nodes. Without targets (no ssh-config), the plan's
    addresses: the grader's error then names the host or VM that does not answer."""
    machines = []
    for node in plan.nodes:
        entry: dict[str, Any] = {"host": node.ip, "ip": node.ip, "jump": host}
        target = (targets or {}).get(node.name)
        if target is not None:
            entry.update(host=target.host, port=target.port, user=target.user)
            if target.key_file is not None:
                entry["key_file"] = str(target.key_file)
            if target.more_key_files:
                entry["more_key_files"] = [str(k) for k in target.more_key_files]
        machines.append(entry)
    return {"master": machines[0], "nodes": machines[1:]}


def inventory_data(
    hosts: Mapping[str, ClassHost], labs: Mapping[str, tuple[str, dict[str, Any]]]
) -> dict[str, Any]:
    """The inventory: labs maps student -> (host name, master and nodes)."""
    used = sorted({host for host, _ in labs.values()})
    return {
        "jumps": {name: jump_entry(hosts[name]) for name in used},
        "students": {student: entry for student, (_, entry) in sorted(labs.items())},
    }


def read_previous(path: Path) -> dict[str, Any]:
    """The students of the last inventory written ({} when there is none or it is damaged)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    students = data.get("students") if isinstance(data, dict) else None
    return students if isinstance(students, dict) else {}


def write_inventory(
    paths: ClassPaths, hosts: Mapping[str, ClassHost], parallel: int = 8
) -> tuple[Path, dict[str, str]]:
    """Write the class's inventory; also say which students have no lab to grade, and why."""
    from kubelab.classroom.run import existing_plan

    seats = load_seats(paths)
    path = inventory_path(paths)
    previous = read_previous(path)
    unknown: dict[str, str] = {}

    def one(student: str) -> tuple[str, tuple[str, dict[str, Any]] | None]:
        host = seats[student].host
        if host not in hosts:
            unknown[student] = f"host {host} not in hosts.yaml"
            return student, None
        try:
            plan = existing_plan(paths, student)
        except KubelabError as exc:
            unknown[student] = exc.message.splitlines()[0]
            return student, None
        try:
            driver = lifecycle.running_driver(plan)
            targets = {}
            for node in plan.nodes:
                targets.update(targets_from_ssh_config(driver.ssh_config(node.name)))
        except KubelabError:
            # Not readable now: the last entry written held its real address and keys.
            return student, (host, previous.get(student) or lab_entry(plan, host, None))
        return student, (host, lab_entry(plan, host, targets))

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        labs = {s: lab for s, lab in pool.map(one, sorted(seats)) if lab is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomicfile.write_atomic(path, yaml.safe_dump(inventory_data(hosts, labs), sort_keys=False))
    return path, unknown
