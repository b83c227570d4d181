"""Students reach their own lab only: real sshd hosts in a namespace of the test's own.

A libvirt host (gate) with two students' VMs behind it (vm1 for S001, vm2 for S002).
kubelab writes each student's key and its restricted authorized_keys entry on the gate
(kubelab/classroom/access.py, the script in vagrant/classroom/); the student's own
ssh_config reaches their VM with the real OpenSSH client, and the same key can neither
reach the other student's VM through the gate nor run a command on the gate. The test
sshd is Debian's (newer than CentOS 7's 7.4); the options used exist since 7.2.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from kubelab.classroom import access
from kubelab.classroom.hosts import load_hosts
from kubelab.classroom.run import _copy_host_key, ssh_config_text
from kubelab.classroom.seating import class_host
from kubelab.config import load_config
from kubelab.plan import make_plan
from kubelab.transport import Transport, TransportError
from tests.classroom.gate import class_with_pinned_gate
from tests.support.netns_hosts import NetnsHosts, missing_requirements

_missing = missing_requirements()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.netns,
    pytest.mark.skipif(_missing is not None, reason=f"real sshd hosts: {_missing}"),
]
DATA = Path(__file__).resolve().parents[1] / "data" / "classroom"
ADDRESSES = {"gate": "10.77.5.11", "vm1": "10.77.5.20", "vm2": "10.77.5.21"}
SEATED = {"S001": "vm1", "S002": "vm2"}


def test_a_students_key_reaches_their_own_lab_only(tmp_path: Path) -> None:
    with NetnsHosts("clsaccess", list(ADDRESSES.values()), names=list(ADDRESSES)) as sshd:
        # The gate's login user keeps its keys where sshd looks by default.
        home = sshd.root / "home"
        (home / ".ssh").mkdir(mode=0o700)
        (home / ".ssh" / "authorized_keys").write_text((sshd.root / "authorized_keys").read_text())
        for path in (home / ".ssh", home / ".ssh" / "authorized_keys"):
            shutil.chown(path, sshd.user, sshd.user)
        (sshd.root / "authorized_keys").unlink()
        (sshd.root / "authorized_keys").symlink_to(home / ".ssh" / "authorized_keys")

        paths = class_with_pinned_gate(sshd, tmp_path / "class", ADDRESSES["gate"])
        hosts_yaml = tmp_path / "hosts.yaml"
        hosts_yaml.write_text(
            f"hosts:\n  - {{name: gate, address: {ADDRESSES['gate']}, user: {sshd.user}, "
            f"key_file: {sshd.key_file}}}\n"
        )
        specs, base = load_hosts(hosts_yaml)
        gate = class_host(specs[0], base, paths)
        targets = sshd.targets()
        config = load_config(DATA / "class-lab.yaml")

        configs = {}
        entries = {}
        for student, vm in SEATED.items():
            # The student's lab: its master at the VM's address.
            raw = config.model_dump()
            raw["nodes"][0]["ip"] = ADDRESSES[vm]
            raw["network"]["cidr"] = "10.77.5.0/24"
            raw["student_id"] = student
            plan = make_plan(type(config).model_validate(raw), tmp_path / "labs" / student)
            key = access.student_key(paths, student)
            known_hosts = paths.ssh_config(student).with_name("known_hosts")
            _copy_host_key(paths.known_hosts, specs[0].known_hosts_name, known_hosts)
            text = ssh_config_text(student, gate, key, known_hosts, plan, [targets[vm]])
            paths.ssh_config(student).write_text(text)
            configs[student] = (paths.ssh_config(student), plan.nodes[0].hostname)
            entries[access.marker(paths, student)] = access.entry(paths, student, [ADDRESSES[vm]])

        def grant(entries: dict[str, str]) -> None:
            with Transport({"gate": gate.jump}, connect_timeout=5) as transport:
                access.set_entries(transport, "gate", entries)

        sshd.call_in_ns(grant, entries)
        sshd.call_in_ns(grant, entries)  # a rerun replaces, never adds
        lines = (home / ".ssh" / "authorized_keys").read_text().splitlines()
        for mark in entries:
            assert sum(line.endswith(" " + mark) for line in lines) == 1, lines
        # The private key is the student's file alone, and never in what kubelab wrote.
        key_file = access.student_key(paths, "S001")
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert "PRIVATE KEY" not in configs["S001"][0].read_text()

        def ssh(student: str, host: str, *command: str) -> tuple[int, str]:
            config_file, _ = configs[student]
            done = sshd.run_in_ns(
                ["ssh", "-F", str(config_file), "-o", "BatchMode=yes", host, *command],
                capture_output=True,
                text=True,
                timeout=60,
            )
            return done.returncode, done.stdout.strip() or done.stderr

        # Each student's own config, with the real OpenSSH client: their VM answers.
        for student, vm in SEATED.items():
            rc, out = ssh(student, configs[student][1], "hostname")
            assert rc == 0 and out == vm, out

        # S001's key through the gate to S002's VM: refused by the gate.
        student_jump = dataclasses.replace(gate.jump, key_file=key_file)

        def reach(vm: str) -> str:
            target = dataclasses.replace(targets[vm], jump=student_jump)
            with Transport({vm: target}, connect_timeout=5) as transport:
                return transport.run(vm, "hostname").stdout.strip()

        assert sshd.call_in_ns(reach, "vm1") == "vm1"
        with pytest.raises(TransportError) as caught:
            sshd.call_in_ns(reach, "vm2")
        # sshd's answer to a permitopen it does not list.
        assert "vm2" in caught.value.message and "prohibited" in caught.value.message

        # Nor a command on the gate itself: the entry's command is /bin/false.
        def on_gate() -> tuple[int, str]:
            with Transport({"gate": student_jump}, connect_timeout=5) as transport:
                result = transport.run("gate", "hostname")
                return result.rc, result.stdout

        rc, out = sshd.call_in_ns(on_gate)
        assert rc != 0 and "gate" not in out

        # class.down's revoke: S001's key is gone from the gate, S002's still works.
        sshd.call_in_ns(grant, {access.marker(paths, "S001"): ""})
        assert ssh("S001", configs["S001"][1], "hostname")[0] != 0
        rc, out = ssh("S002", configs["S002"][1], "hostname")
        assert rc == 0 and out == "vm2", out
