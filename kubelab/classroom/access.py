"""Students reach their own lab only: a key of their own, allowed on their host to
open a connection to their lab's VMs and nothing else.

kubelab generates each student's key (students/<id>/id_ed25519, never printed) and
puts its public half in the authorized_keys of the host's login user with OpenSSH's
restrictions (sshd 7.2 and later; CentOS 7 has 7.4):

    restrict,port-forwarding,permitopen="192.168.57.10:22",command="/bin/false" ssh-ed25519 ...

`restrict` turns off every forwarding, the pty, agent and X11; `port-forwarding` turns
TCP forwarding back on, and `permitopen` limits it to the listed address:port, compared
as text with what the client asks for (no name lookup): the student's ssh_config
names each VM by that address. A login or a command gets /bin/false. Each entry ends
in a marker of the class and student, so a rerun replaces it and class.down removes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kubelab import REPO_ROOT, atomicfile
from kubelab.classroom.state import ClassPaths
from kubelab.errors import KubelabError
from kubelab.transport import Transport

SCRIPT = REPO_ROOT / "vagrant" / "classroom" / "authorized-keys.sh"
KEY_NAME = "id_ed25519"
VM_SSH_PORT = 22


def class_tag(paths: ClassPaths) -> str:
    """Tells this class's entries on a host from another class's (another class folder)."""
    return hashlib.sha256(str(paths.root.resolve()).encode()).hexdigest()[:10]


def marker(paths: ClassPaths, student: str) -> str:
    return f"kubelab-class-{class_tag(paths)}-{student}"


def student_key(paths: ClassPaths, student: str) -> Path:
    """The student's private key, made once (0600); its contents are never shown."""
    path = paths.ssh_config(student).with_name(KEY_NAME)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    atomicfile.write_atomic(path, pem)
    return path


def public_line(key_file: Path) -> str:
    key = paramiko.Ed25519Key.from_private_key_file(str(key_file))
    return f"{key.get_name()} {key.get_base64()}"


def entry(paths: ClassPaths, student: str, addresses: Iterable[str]) -> str:
    """The student's authorized_keys line: a jump to these VM addresses, nothing else."""
    opens = ",".join(f'permitopen="{address}:{VM_SSH_PORT}"' for address in addresses)
    key = public_line(student_key(paths, student))
    return f'restrict,port-forwarding,{opens},command="/bin/false" {key} {marker(paths, student)}'


def set_entries(transport: Transport, host: str, entries: dict[str, str]) -> None:
    """On one host, one after the other (one file): marker -> entry, or '' to remove."""
    script = SCRIPT.read_text()
    for mark, line in entries.items():
        result = transport.run(host, "sh", "-s", mark, line, stdin=script, timeout=30)
        if not result.ok:
            raise KubelabError(
                f"could not update authorized_keys on {host}: rc={result.rc} {result.tail(2)}"
            )
