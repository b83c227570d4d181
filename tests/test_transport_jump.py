"""Transport through a jump host (SSHTarget.jump): real sshd hosts in a namespace.

The jump is how kubelab reaches a VM on a remote libvirt host: one connection to the
host, a direct-tcpip channel in it per VM, the host's key pinned in a known_hosts file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import paramiko
import pytest

from kubelab.transport import SSHTarget, Transport, TransportError
from tests.support.netns_hosts import NetnsHosts, missing_requirements

_missing = missing_requirements()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.netns,
    pytest.mark.skipif(_missing is not None, reason=f"real sshd hosts: {_missing}"),
]
ADDRESSES = {"gate": "10.77.1.11", "vm1": "192.168.121.20", "vm2": "192.168.121.21"}


def _pin(hosts: NetnsHosts, name: str, known_hosts: Path, key_of: str | None = None) -> None:
    """known_hosts holding host `name`'s key (or, with key_of, another host's key)."""
    folder = hosts.host(key_of or name).dir
    key = paramiko.Ed25519Key.from_private_key_file(str(folder / "ssh_host_ed25519_key"))
    pinned = paramiko.HostKeys()
    pinned.add(hosts.host(name).address, key.get_name(), key)
    pinned.save(str(known_hosts))


def _accepted(hosts: NetnsHosts, name: str) -> int:
    return hosts.host(name).log.read_text().count("Accepted publickey")


def _jumping(hosts: NetnsHosts, known_hosts: Path) -> dict[str, SSHTarget]:
    targets = hosts.targets()
    gate = dataclasses.replace(targets["gate"], known_hosts=known_hosts)
    return {n: dataclasses.replace(targets[n], jump=gate) for n in ("vm1", "vm2")}


def test_vms_behind_a_host_share_one_pinned_connection_to_it(tmp_path: Path) -> None:
    with NetnsHosts("jump", list(ADDRESSES.values()), names=list(ADDRESSES)) as hosts:
        known_hosts = tmp_path / "known_hosts"
        _pin(hosts, "gate", known_hosts)
        before = _accepted(hosts, "gate")

        def body() -> list[str]:
            with Transport(_jumping(hosts, known_hosts), connect_timeout=5) as transport:
                return [transport.run(n, "hostname").stdout.strip() for n in ("vm1", "vm2") * 3]

        answers = hosts.call_in_ns(body)
        assert answers == ["vm1", "vm2"] * 3
        assert _accepted(hosts, "gate") - before == 1


def test_a_jump_host_with_another_key_is_refused(tmp_path: Path) -> None:
    with NetnsHosts("jumpbad", list(ADDRESSES.values()), names=list(ADDRESSES)) as hosts:
        known_hosts = tmp_path / "known_hosts"
        _pin(hosts, "gate", known_hosts, key_of="vm1")  # someone else's key

        def body() -> str:
            with Transport(_jumping(hosts, known_hosts), connect_timeout=5) as transport:
                transport.run("vm1", "true")
            return "connected"

        with pytest.raises(TransportError) as caught:
            hosts.call_in_ns(body)
        assert "gate" in caught.value.message
        assert _accepted(hosts, "vm1") == 0


def test_a_dead_vm_behind_a_live_host_fails_within_the_timeout(tmp_path: Path) -> None:
    with NetnsHosts(
        "jumpdead", list(ADDRESSES.values()), names=list(ADDRESSES), behaviors={"vm2": "refuse"}
    ) as hosts:
        known_hosts = tmp_path / "known_hosts"
        _pin(hosts, "gate", known_hosts)

        def body() -> tuple[str, str]:
            with Transport(_jumping(hosts, known_hosts), connect_timeout=5) as transport:
                ok = transport.run("vm1", "hostname").stdout.strip()
                try:
                    transport.run("vm2", "true")
                except TransportError as exc:
                    return ok, exc.message
            return ok, ""

        ok, error = hosts.call_in_ns(body)
        assert ok == "vm1"
        assert "through" in error and "vm2" in error
