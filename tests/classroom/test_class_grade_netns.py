"""class.grade's path on real sshd hosts: the inventory kubelab writes, graded through jumps.

A "libvirt host" (gate) with two students' VMs behind it, each an sshd only the gate
reaches on the test's network, and a third student whose host has left the network.
The inventory is the one classroom.grading writes; live grading must reach each VM
through the gate (one pinned connection), give one row per student, and end the
student of the lost host in an error row naming that host, not in a crash.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import paramiko
import pytest
import yaml
from rich.console import Console

from kubelab.classroom.grading import inventory_data, lab_entry
from kubelab.classroom.hosts import load_hosts
from kubelab.classroom.seating import class_host
from kubelab.config import load_config
from kubelab.grade.inventory import load_inventory
from kubelab.grade.live import EVIDENCE, HOST_KEYS, fingerprint, grade_inventory
from kubelab.plan import make_plan
from tests.classroom.gate import class_with_pinned_gate
from tests.grade.live_class import rows
from tests.support.netns_hosts import NetnsHosts, missing_requirements

_missing = missing_requirements()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.netns,
    pytest.mark.skipif(_missing is not None, reason=f"real sshd hosts: {_missing}"),
]
DATA = Path(__file__).resolve().parents[1] / "data" / "classroom"
ADDRESSES = {"gate": "10.77.3.11", "vm1": "10.77.3.20", "vm2": "10.77.3.21"}
LOST_HOST = "10.77.4.11"  # on no network of the namespace: the host that went away


def test_class_grade_reaches_each_lab_through_its_host(tmp_path: Path) -> None:
    with NetnsHosts("clsgrade", list(ADDRESSES.values()), names=list(ADDRESSES)) as sshd:
        paths = class_with_pinned_gate(sshd, tmp_path / "class", ADDRESSES["gate"])
        hosts_yaml = tmp_path / "hosts.yaml"
        hosts_yaml.write_text(
            "hosts:\n"
            f"  - {{name: gate, address: {ADDRESSES['gate']}, user: {sshd.user}, "
            f"key_file: {sshd.key_file}}}\n"
            f"  - {{name: lost, address: {LOST_HOST}, user: {sshd.user}, "
            f"key_file: {sshd.key_file}}}\n"
        )
        specs, base = load_hosts(hosts_yaml)
        hosts = {s.name: class_host(s, base, paths) for s in specs}
        plan = make_plan(load_config(DATA / "class-lab.yaml"), tmp_path / "lab")
        targets = sshd.targets()
        labs = {
            "S001": ("gate", lab_entry(plan, "gate", {"master": targets["vm1"]})),
            "S002": ("gate", lab_entry(plan, "gate", {"master": targets["vm2"]})),
            # Its ssh-config could not be read: the plan's address, behind its host.
            "S003": ("lost", lab_entry(plan, "lost", None)),
        }
        inventory_file = tmp_path / "inventory.yaml"
        inventory_file.write_text(yaml.safe_dump(inventory_data(hosts, labs)))
        inventory = load_inventory(inventory_file)
        assert {lab.master.target.jump.name for lab in inventory.students} == {"gate", "lost"}
        before = sshd.host("gate").log.read_text().count("Accepted publickey")

        console = Console(file=io.StringIO(), force_terminal=False, width=200)
        report = sshd.call_in_ns(
            grade_inventory, inventory_file, 1, tmp_path / "out", 4, 30.0, console=console
        )
        by_student = {g.student: g for g in report.grades}
        assert sorted(by_student) == ["S001", "S002", "S003"]
        assert [r["student"] for r in rows(tmp_path / "out")] == ["S001", "S002", "S003"]
        lost = by_student["S003"]
        assert not lost.graded and LOST_HOST in lost.error, lost.error
        for student, vm in (("S001", "vm1"), ("S002", "vm2")):
            grade = by_student[student]
            assert grade.graded, grade.error
            # The key its master offered, as the grader recorded it, is the VM's own.
            seen = json.loads((tmp_path / "out" / EVIDENCE / student / HOST_KEYS).read_text())
            vm_key = paramiko.Ed25519Key.from_private_key_file(
                str(sshd.host(vm).dir / "ssh_host_ed25519_key")
            )
            assert seen["master"]["fingerprint"] == fingerprint(vm_key)
        # The students behind the gate went through one pinned connection to it each.
        assert sshd.host("gate").log.read_text().count("Accepted publickey") - before == 2
