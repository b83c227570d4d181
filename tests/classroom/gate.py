"""A class folder in front of real sshd hosts, for the classroom's netns tests."""

from __future__ import annotations

from pathlib import Path

import paramiko

from kubelab.classroom.state import ClassPaths, prepare
from tests.support.netns_hosts import NetnsHosts


def class_with_pinned_gate(sshd: NetnsHosts, folder: Path, address: str) -> ClassPaths:
    """A prepared class folder whose known_hosts pins the sshd host "gate" at `address`,
    as `invoke class.hosts` leaves it after first contact."""
    paths = ClassPaths(folder)
    prepare(paths)
    gate_key = paramiko.Ed25519Key.from_private_key_file(
        str(sshd.host("gate").dir / "ssh_host_ed25519_key")
    )
    pinned = paramiko.HostKeys()
    pinned.add(address, gate_key.get_name(), gate_key)
    pinned.save(str(paths.known_hosts))
    return paths
