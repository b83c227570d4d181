"""A class of three on three libvirt hosts, end to end, with real VMs.

Three libvirt hosts and a teacher in network namespaces of the test's own
(tests/support/multihost.py). The teacher runs the real tasks: class.hosts pins the
host keys, class.up places one lab per student (one VM each, stage smoke) across the
hosts and boots them over qemu+ssh, class.verify reaches every VM through its host,
then one host is taken off the network: class.status, class.grade, class.verify and
class.down name its student as the error while the others finish (class.grade grades
the other two through their hosts); once it is back, class.down
ends with nothing of the class on any host, checked over qemu+ssh with libvirt-python.

Run it alone, under the VM lock:
    flock /tmp/kubelab-vm.lock python -m pytest tests/classroom/test_class_e2e.py -s
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from kubelab.backend import libvirt_inspect
from kubelab.classroom.hosts import load_hosts
from kubelab.classroom.seating import class_host
from kubelab.classroom.state import ClassPaths, load_seats
from tests.support.multihost import MultiHost, missing_requirements

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

DATA = Path(__file__).resolve().parents[1] / "data" / "classroom"
REPO = Path(__file__).resolve().parents[2]
HOSTS = ["a", "b", "c"]
BOX_NAME = "kubelab-e2e/debian12"
TASK_DEADLINE = 1800


def _invoke(mh: MultiHost, log: Path, *args: str) -> tuple[int, str, float]:
    started = time.monotonic()
    done = mh.run_teacher(
        [sys.executable, "-m", "invoke", *args], cwd=REPO, timeout=TASK_DEADLINE, log=log
    )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def test_a_class_across_three_hosts(offline_box: Path, tmp_path: Path) -> None:
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    box_file = offline_box
    log = tmp_path / "tasks.log"
    figures: list[str] = []
    with MultiHost(HOSTS) as mh:
        class_dir = mh.teacher_dir / "class"
        hosts_yaml = mh.teacher_dir / "hosts.yaml"
        hosts_yaml.write_text(
            "hosts:\n"
            + "".join(
                f"  - {{name: {h.name}, address: {h.address}, key_file: {mh.key}, "
                "reserve_memory_mib: 0, reserve_vcpus: 0}\n"
                for h in mh.hosts.values()
            )
        )
        common = ["--hosts", str(hosts_yaml), "--class-dir", str(class_dir)]
        config = ["--config", str(DATA / "class-lab.yaml")]
        added = mh.run_teacher(["vagrant", "box", "add", "--name", BOX_NAME, str(box_file)])
        assert added.returncode == 0, added.stderr

        # class.hosts: first contact pins each host key, the second finds them matching.
        rc, out, secs = _invoke(mh, log, "class.hosts", *common, *config)
        assert rc == 0, out
        assert out.count("pinned now") == len(HOSTS), out
        figures.append(f"class.hosts (first contact, pins keys): {secs:.1f} s")
        rc, out, secs = _invoke(mh, log, "class.hosts", *common, *config)
        assert rc == 0 and out.count("matches") == len(HOSTS), out
        figures.append(f"class.hosts (keys pinned): {secs:.1f} s")
        print(out)

        paths = ClassPaths(class_dir)
        specs, base = load_hosts(hosts_yaml)
        uris = {s.name: class_host(s, base, paths).uri for s in specs}

        def inventory() -> dict[str, dict[str, list[str]]]:
            return {name: libvirt_inspect.everything(uri) for name, uri in uris.items()}

        before = mh.call_teacher(inventory)

        # class.up: the plan first, then every lab on its host.
        rc, out, secs = _invoke(
            mh, log, "class.up", *common, *config, "--roster", str(DATA / "roster.csv")
        )
        print(out)
        assert rc == 0, out
        figures.append(f"class.up, 3 labs of 1 VM on 3 hosts: {secs:.0f} s")
        seats = load_seats(paths)
        assert sorted(seats) == ["S001", "S002", "S003"]
        assert sorted(seat.host for seat in seats.values()) == HOSTS  # one lab per host
        during = mh.call_teacher(inventory)
        for student, seat in seats.items():
            mine = [d for d in during[seat.host]["domains"] if f"-{student.lower()}-" in d]
            assert mine, f"{student}'s VM is not on host {seat.host}: {during[seat.host]}"
            others = [h for h in HOSTS if h != seat.host]
            assert not any(
                f"-{student.lower()}-" in d for h in others for d in during[h]["domains"]
            )
        # Libvirt could not open the box's kernel on the teacher's disk: it was uploaded.
        assert all(
            any(v.startswith("kubelab-boot/vmlinuz-") for v in during[h]["volumes"]) for h in HOSTS
        )

        # Reach every lab through its host.
        rc, out, secs = _invoke(mh, log, "class.verify", *common)
        print(out)
        assert rc == 0, out
        for student in seats:
            assert f"master-{student.lower()}" in out
        figures.append(f"class.verify (reach every VM through its host): {secs:.1f} s")
        ssh_config = paths.ssh_config("S001").read_text()
        assert "ProxyJump kubelab-host-" in ssh_config

        # Each student's own ssh_config and key reach their VM, with the real ssh client;
        # S001's key reaches nothing else: not S002's host, not another address.
        def ssh(config_file: Path, *argv: str) -> tuple[int, str]:
            done = mh.run_teacher(
                ["ssh", "-F", str(config_file), "-o", "BatchMode=yes", *argv], timeout=120
            )
            return done.returncode, done.stdout.strip() or done.stderr.strip()

        started = time.monotonic()
        for student in seats:
            rc, out = ssh(paths.ssh_config(student), f"master-{student.lower()}", "hostname")
            assert rc == 0 and out == f"master-{student.lower()}", (student, out)
        figures.append(
            f"ssh to each student's VM with their own config: {time.monotonic() - started:.1f} s"
        )
        own_host = mh.hosts[seats["S001"].host].address
        other_host = mh.hosts[seats["S002"].host].address
        key = paths.ssh_config("S001").with_name("id_ed25519")
        rc, out = ssh(
            paths.ssh_config("S001"),
            "-i",
            str(key),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            f"root@{other_host}",
            "true",
        )
        assert rc != 0 and "Permission denied" in out, out
        rc, out = ssh(
            paths.ssh_config("S001"),
            "-o",
            f"HostName={own_host}",
            "-o",
            "User=root",
            "-o",
            "ProxyJump=kubelab-host-" + seats["S001"].host,
            "master-s001",
            "true",
        )
        assert rc != 0 and "prohibited" in out, out

        # One host leaves the network: its student is named, the others go on.
        lost = seats["S003"].host
        mh.set_link(lost, up=False)
        rc, out, secs = _invoke(mh, log, "class.status", *common)
        print(out)
        assert rc == 1 and "S003" in out.split("no answer for", 1)[-1], out
        figures.append(f"class.status with host {lost} down: {secs:.1f} s")
        # Graded live through their hosts (the smoke lab has no cluster: graded, not
        # errors); the lost host's student is an error row, the grader does not crash.
        rc, out, secs = _invoke(
            mh, log, "class.grade", *common, "--exercise", "1", "--deadline", "300"
        )
        print(out)
        assert rc == 1 and "not graded: S003" in out, out
        grades = {
            g["student"]: g
            for g in (
                json.loads(p.read_text()) for p in (class_dir / "grades" / "results").glob("*.json")
            )
        }
        assert sorted(grades) == ["S001", "S002", "S003"], grades.keys()
        assert grades["S003"]["status"] == "error", grades["S003"]
        assert all(grades[s]["status"] == "graded" for s in ("S001", "S002")), grades
        figures.append(f"class.grade with host {lost} down (2 labs graded): {secs:.1f} s")
        rc, out, secs = _invoke(mh, log, "class.verify", *common)
        assert rc == 1 and "failed for S003" in out, out
        rc, out, secs = _invoke(mh, log, "class.down", *common, *config, "--box-volumes")
        print(out)
        assert rc == 1 and "failed for S003" in out, out
        figures.append(f"class.down with host {lost} down (2 labs): {secs:.0f} s")
        assert sorted(load_seats(paths)) == ["S003"]

        # Back on the network: the rerun finishes the class.
        mh.set_link(lost, up=True)
        rc, out, secs = _invoke(mh, log, "class.down", *common, *config, "--box-volumes")
        print(out)
        assert rc == 0, out
        figures.append(f"class.down of the last lab: {secs:.0f} s")
        assert load_seats(paths) == {}
        after = mh.call_teacher(inventory)
        for host in HOSTS:
            for kind in ("domains", "networks", "volumes"):
                assert after[host][kind] == before[host][kind], (host, kind, after[host])
            assert libvirt_inspect.BOOT_POOL not in after[host]["pools"]
            # Nor on the host's disk: the VMs' serial and QEMU logs went with their labs.
            logs = Path(f"/proc/{mh.hosts[host].libvirt.pid}/root/var/log/libvirt/qemu")
            assert not list(logs.glob("kubelab-cls-*")), (host, list(logs.iterdir()))
        figures.append(
            "pools before/after: "
            + json.dumps({h: [before[h]["pools"], after[h]["pools"]] for h in HOSTS})
        )

    for line in figures:
        print(f"[figure] {line}")
    for line in log.read_text().splitlines():
        if "uploaded" in line or " up in " in line or "class up in" in line:
            print(f"[figure] {line.strip()}")
