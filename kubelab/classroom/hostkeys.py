"""Host keys of the libvirt hosts: pinned at first contact, checked every time after.

kubelab keeps its own known_hosts file in the class folder (never ~/.ssh): the first
`invoke class.hosts` records each host's key, and every later contact, by kubelab
(paramiko) or by the ssh that libvirt and vagrant run (the wrapper from
vagrant/classroom/ssh-pinned.sh.j2, StrictHostKeyChecking yes), must meet that key.
A changed key is an error that names the host and both fingerprints; kubelab never
replaces a pinned key on its own.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko

from kubelab.errors import KubelabError


@dataclass(frozen=True)
class KeyCheck:
    host: str
    fingerprint: str  # SHA256:... as ssh-keygen -l prints it
    status: str  # "pinned now" | "matches" | "CHANGED"


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def offered_key(address: str, port: int, timeout: float) -> paramiko.PKey:
    """The host key the server offers (ed25519 first, as OpenSSH asks), no login."""
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        raise KubelabError(f"{address}:{port}: cannot connect ({_why(exc, timeout)})") from None
    transport = paramiko.Transport(sock)
    try:
        options = transport.get_security_options()
        preferred = [k for k in ("ssh-ed25519",) if k in options.key_types]
        options.key_types = tuple(preferred + [k for k in options.key_types if k not in preferred])
        transport.banner_timeout = timeout
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise KubelabError(f"{address}:{port}: no SSH handshake ({_why(exc, timeout)})") from None
    finally:
        transport.close()


def check_or_pin(known_hosts: Path, name: str, key: paramiko.PKey) -> KeyCheck:
    """Compare `key` with the pinned one for `name` (known_hosts spelling); pin if none."""
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    # The hosts are checked at once (threads, or another teacher's command on the same
    # class): read, pin and write are one step under a lock on the folder, or two first
    # contacts would each write the file without the other's key, or both rename the
    # same temporary file.
    with _folder_locked(known_hosts.parent):
        pinned = _load(known_hosts)
        entry = pinned.lookup(name)
        shown = fingerprint(key)
        if entry is not None and key.get_name() in entry:
            if entry[key.get_name()] == key:
                return KeyCheck(name, shown, "matches")
            return KeyCheck(name, shown, "CHANGED")
        if entry:
            # A key of another type is pinned: a new type is a change too.
            return KeyCheck(name, shown, "CHANGED")
        pinned.add(name, key.get_name(), key)
        fd, partial = tempfile.mkstemp(dir=known_hosts.parent, prefix=f".{known_hosts.name}.")
        os.close(fd)  # 0600 from mkstemp
        try:
            pinned.save(partial)
            os.replace(partial, known_hosts)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
        return KeyCheck(name, shown, "pinned now")


@contextlib.contextmanager
def _folder_locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # and with it the lock


def pinned_fingerprint(known_hosts: Path, name: str) -> str:
    entry = _load(known_hosts).lookup(name)
    return ", ".join(fingerprint(k) for k in entry.values()) if entry else "none"


def _load(path: Path) -> paramiko.HostKeys:
    keys = paramiko.HostKeys()
    if path.exists():
        keys.load(str(path))
    return keys


def _why(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g} s"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
