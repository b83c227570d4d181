"""class.hosts against real libvirt hosts (libvirtd + sshd in namespaces), no VMs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
        # Host a leaves the network.
        mh.set_link("a", up=False)
        changed = mh.run_teacher(args, cwd=REPO, timeout=300)
        print(changed.stdout, changed.stderr)
        assert changed.returncode == 1
        assert "CHANGED" in changed.stdout
        assert "not usable: a, b" in changed.stdout + changed.stderr
