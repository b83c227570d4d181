"""Pinning host keys when a class's hosts are checked at once (kubelab/classroom/hostkeys.py).

`invoke class.up` checks every host on a thread of its own: first contacts pinned at
the same moment must all end in known_hosts, with no temporary file left and no
error (two threads once renamed the same `.partial` file, and the later writer's file
lacked the earlier one's key).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paramiko

from kubelab.classroom import hostkeys

HOSTS = 24


def _keys() -> list[paramiko.PKey]:
    # RSA: paramiko generates no ed25519 key; 1024 bits keeps 24 of them quick.
    return [paramiko.RSAKey.generate(1024) for _ in range(HOSTS)]


def test_first_contacts_at_once_are_all_pinned(tmp_path: Path) -> None:
    known_hosts = tmp_path / "class" / "known_hosts"
    keys = _keys()
    start = threading.Barrier(HOSTS)

    def pin(i: int) -> hostkeys.KeyCheck:
        start.wait()  # every thread reads the file before any has written it
        return hostkeys.check_or_pin(known_hosts, f"[10.0.0.{i}]:2222", keys[i])

    with ThreadPoolExecutor(HOSTS) as pool:
        checks = list(pool.map(pin, range(HOSTS)))

    assert [c.status for c in checks] == ["pinned now"] * HOSTS
    assert sorted(p.name for p in known_hosts.parent.iterdir()) == ["known_hosts"]
    assert known_hosts.stat().st_mode & 0o777 == 0o600
    for i, key in enumerate(keys):
        again = hostkeys.check_or_pin(known_hosts, f"[10.0.0.{i}]:2222", key)
        assert again.status == "matches"
        assert hostkeys.pinned_fingerprint(known_hosts, again.host) == hostkeys.fingerprint(key)


def test_a_changed_key_is_not_pinned_over_the_old(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    old, new = _keys()[:2]
    assert hostkeys.check_or_pin(known_hosts, "host-a", old).status == "pinned now"
    assert hostkeys.check_or_pin(known_hosts, "host-a", new).status == "CHANGED"
    assert hostkeys.pinned_fingerprint(known_hosts, "host-a") == hostkeys.fingerprint(old)
