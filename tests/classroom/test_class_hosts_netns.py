"""class.hosts against real libvirt hosts (libvirtd + sshd in namespaces), no VMs."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest

from kubelab.classroom.hostkeys import offered_key
from kubelab.errors import KubelabError
from tests.support.multihost import MultiHost, missing_requirements

pytestmark = [pytest.mark.integration, pytest.mark.netns]
REPO = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).resolve().parents[1] / "data" / "classroom" / "class-lab.yaml"


def test_hosts_are_pinned_checked_and_a_dead_or_changed_host_is_named() -> None:
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    with MultiHost(["a", "b"], tag="mhk") as mh:
        hosts_yaml = mh.teacher_dir / "hosts.yaml"
        hosts_yaml.write_text(
            "hosts:\n"
            + "".join(
                f"  - {{name: {h.name}, address: {h.address}, key_file: {mh.key}}}\n"
                for h in mh.hosts.values()
            )
        )
        args = [
            sys.executable, "-m", "invoke", "class.hosts", "--hosts", str(hosts_yaml),
            "--class-dir", str(mh.teacher_dir / "class"), "--config", str(CONFIG),
        ]  # fmt: skip

        first = mh.run_teacher(args, cwd=REPO, timeout=300)
        print(first.stdout)
        assert first.returncode == 0, first.stdout + first.stderr
        assert first.stdout.count("pinned now") == 2
        assert "libvirt" in first.stdout and "9." in first.stdout  # libvirtd answered

        again = mh.run_teacher(args, cwd=REPO, timeout=300)
        assert again.returncode == 0 and again.stdout.count("matches") == 2, again.stdout

        # Host b gets a new host key (a reinstall, or someone in the middle): refused.
        b = mh.hosts["b"]
        key = b.ssh_dir / "host_key"
        key.unlink()
        key.with_suffix(".pub").unlink()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        subprocess.run(["kill", "-HUP", b.sshd_pid_file.read_text().strip()], check=True)
        # sshd re-executes itself on HUP: wait until it offers the new key.
        new_key = paramiko.Ed25519Key.from_private_key_file(str(key))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(KubelabError):
                if mh.call_teacher(offered_key, b.address, 22, 5) == new_key:
                    break
            time.sleep(0.2)
        # Host a leaves the network.
        mh.set_link("a", up=False)
        changed = mh.run_teacher(args, cwd=REPO, timeout=300)
        print(changed.stdout, changed.stderr)
        assert changed.returncode == 1
        assert "CHANGED" in changed.stdout
        assert "not usable: a, b" in changed.stdout + changed.stderr


def test_the_plan_is_printed_and_a_class_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    roster = tmp_path / "roster.csv"
    with MultiHost(["a", "b"], tag="mhp") as mh:
        hosts_yaml = mh.teacher_dir / "hosts.yaml"
        hosts_yaml.write_text(
            "hosts:\n"
            + "".join(
                f"  - {{name: {h.name}, address: {h.address}, key_file: {mh.key}, "
                "reserve_vcpus: 0}\n"
                for h in mh.hosts.values()
            )
        )
        args = [
            sys.executable, "-m", "invoke", "class.up", "--plan-only", "--hosts", str(hosts_yaml),
            "--class-dir", str(mh.teacher_dir / "class"), "--config", str(CONFIG),
            "--roster", str(roster),
        ]  # fmt: skip
        # Each host has 2 vCPUs here and a lab takes 2: two students fit, a third does not.
        roster.write_text("S001\nS002\n")
        fits = mh.run_teacher(args, cwd=REPO, timeout=300)
        print(fits.stdout)
        assert fits.returncode == 0, fits.stdout + fits.stderr
        assert "S001 (192.168.56.0/24)" in fits.stdout and "S002 (192.168.56.0/24)" in fits.stdout
        assert not (mh.teacher_dir / "class" / "class.json").exists()  # a plan saves nothing

        roster.write_text("S001\nS002\nS003\n")
        refused = mh.run_teacher(args, cwd=REPO, timeout=300)
        print(refused.stdout, refused.stderr)
        assert refused.returncode == 1
        assert "the class does not fit: no host has room for S003" in refused.stderr


def test_boot_files_go_up_through_libvirt_and_come_off_again(tmp_path: Path) -> None:
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    from kubelab.backend import libvirt_inspect
    from kubelab.classroom.hostkeys import check_or_pin, offered_key
    from kubelab.classroom.hosts import HostSpec
    from kubelab.classroom.seating import class_host
    from kubelab.classroom.state import ClassPaths, prepare

    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(bytes(range(256)) * 40_000)  # 10 MB: several stream chunks
    boot = {libvirt_inspect.boot_volume_name("vmlinuz", kernel): kernel}
    (name,) = boot
    with MultiHost(["a"], tag="mhb") as mh:
        paths = ClassPaths(mh.teacher_dir / "class")
        prepare(paths)
        address = mh.hosts["a"].address
        host = class_host(
            HostSpec(name="a", address=address, key_file=str(mh.key)), tmp_path, paths
        )

        def body() -> tuple[dict[str, str], dict[str, list[str]], list[str], dict[str, list[str]]]:
            check_or_pin(paths.known_hosts, address, offered_key(address, 22, 10))
            placed = libvirt_inspect.stage_boot_files(host.uri, boot)
            again = libvirt_inspect.stage_boot_files(host.uri, boot)  # already there: kept
            assert again == placed
            during = libvirt_inspect.everything(host.uri)
            # What libvirtd wrote, seen on the host's own disk (its mount namespace).
            on_host = Path(f"/proc/{mh.hosts['a'].libvirt.pid}/root{placed[name]}")
            assert on_host.read_bytes() == kernel.read_bytes()
            removed = libvirt_inspect.remove_boot_files(host.uri)
            return placed, during, removed, libvirt_inspect.everything(host.uri)

        placed, during, removed, after = mh.call_teacher(body)
        assert placed == {name: f"{libvirt_inspect.BOOT_POOL_DIR}/{name}"}
        assert f"{libvirt_inspect.BOOT_POOL}/{name}" in during["volumes"]
        assert removed == [
            f"volume {libvirt_inspect.BOOT_POOL}/{name}",
            f"pool {libvirt_inspect.BOOT_POOL}",
        ]
        assert libvirt_inspect.BOOT_POOL not in after["pools"]


def test_a_labs_logs_on_the_host_are_fetched_then_removed(tmp_path: Path) -> None:
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    from kubelab.classroom.hostkeys import check_or_pin, offered_key
    from kubelab.classroom.hosts import HostSpec
    from kubelab.classroom.run import fetch_host_logs, remove_host_logs
    from kubelab.classroom.seating import class_host, host_log_files, student_config, student_plan
    from kubelab.classroom.state import ClassPaths, prepare
    from kubelab.config import load_config

    with MultiHost(["a"], tag="mhl") as mh:
        paths = ClassPaths(mh.teacher_dir / "class")
        prepare(paths)
        address = mh.hosts["a"].address
        host = class_host(
            HostSpec(name="a", address=address, key_file=str(mh.key)), tmp_path, paths
        )
        plan = student_plan(student_config(load_config(CONFIG), "S001", host, 0, None), paths)
        on_host = Path(f"/proc/{mh.hosts['a'].libvirt.pid}/root")
        remote = [path for files in host_log_files(plan).values() for path in files]
        for path in remote:
            (on_host / path.lstrip("/")).write_text(f"boot messages of {path}\n" * 5000)
        other = on_host / "var/log/libvirt/qemu/another-lab-serial-master.log"
        other.write_text("not ours\n")

        def body() -> list[Path]:
            check_or_pin(paths.known_hosts, address, offered_key(address, 22, 10))
            fetched = fetch_host_logs(plan, host)
            remove_host_logs(plan, host)
            return fetched

        fetched = mh.call_teacher(body)
        assert len(fetched) == len(remote)
        for local in fetched:
            text = local.read_text()
            assert text.endswith(".log\n") and 0 < len(text) <= 65536  # the tail, capped
        assert not any((on_host / path.lstrip("/")).exists() for path in remote)
        assert other.exists()


def test_a_students_entry_is_honoured_by_the_hosts_sshd_and_removed(tmp_path: Path) -> None:
    """The student's restricted entry in the host user's own ~/.ssh/authorized_keys (on
    the test hosts, a folder of the test's bound over /root, never the machine's)."""
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    import dataclasses

    from kubelab.classroom import access
    from kubelab.classroom.hostkeys import check_or_pin
    from kubelab.classroom.hosts import HostSpec
    from kubelab.classroom.run import host_transport, revoke_access
    from kubelab.classroom.seating import class_host
    from kubelab.classroom.state import ClassPaths, prepare
    from kubelab.transport import SSHTarget, Transport, TransportError

    machine_ssh = Path("/root/.ssh")
    existed = machine_ssh.exists()
    with MultiHost(["a"], tag="mha") as mh:
        paths = ClassPaths(mh.teacher_dir / "class")
        prepare(paths)
        address = mh.hosts["a"].address
        host = class_host(
            HostSpec(name="a", address=address, key_file=str(mh.key)), tmp_path, paths
        )
        # No VM here: the host's own sshd stands in for the student's VM.
        line = access.entry(paths, "S001", [address])
        student = dataclasses.replace(host.jump, key_file=access.student_key(paths, "S001"))

        def reach(to: str) -> str:
            target = SSHTarget("vm", to, 22, "root", key_file=mh.key, jump=student)
            with Transport({"vm": target}, connect_timeout=10) as transport:
                return transport.run("vm", "true").command

        def grant() -> None:
            check_or_pin(paths.known_hosts, address, offered_key(address, 22, 10))
            with host_transport(host) as transport:
                access.set_entries(transport, "a", {access.marker(paths, "S001"): line})

        mh.call_teacher(grant)
        keys = mh.hosts["a"].ssh_dir / "root-home" / ".ssh" / "authorized_keys"
        assert keys.read_text().splitlines() == [line]
        assert mh.call_teacher(reach, address) == "true"
        with pytest.raises(TransportError) as caught:
            mh.call_teacher(reach, "127.0.0.1")
        assert "prohibited" in caught.value.message

        mh.call_teacher(revoke_access, paths, host, "S001")
        assert keys.read_text() == ""
        with pytest.raises(TransportError):
            mh.call_teacher(reach, address)
    assert machine_ssh.exists() == existed
