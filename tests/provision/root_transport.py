"""kubelab's Transport, with isolated roots (harness.Guest) standing in for the VMs.

The StageRunner drives these exactly as it drives VMs over SSH: it reads markers,
uploads scripts, runs them as root with stdin, writes markers and fetches the
kubeconfig. Every command runs inside the node's root (stubs for what needs CentOS
packages, a kernel or a cluster), so resume logic in kubelab/provision.py meets the
real stage scripts and a kubeadm double that fails the way the real one does.
"""

from __future__ import annotations

import shlex

from kubelab.transport import CommandResult, command_line
from tests.provision.harness import Guest

# A guest run is a fresh set of namespaces: never shorter than this, whatever the
# stage's own deadline (the scripts here finish in seconds).
MIN_TIMEOUT = 120.0


class RootTransport:
    """run() and put() as kubelab.transport.Transport has them, per node name."""

    def __init__(self, guests: dict[str, Guest]) -> None:
        self.guests = guests
        self.commands: list[tuple[str, str]] = []  # (node, line) in the order run

    def run(
        self,
        node: str,
        cmd: str,
        *args: object,
        timeout: float = 60.0,
        sudo: bool = False,
        stdin: bytes | str | None = None,
    ) -> CommandResult:
        line = command_line(cmd, *args)
        self.commands.append((node, line))
        result = self.guests[node].run(line, stdin=stdin, timeout=max(timeout, MIN_TIMEOUT))
        return CommandResult(node, line, result.rc, result.stdout, result.stderr, 0.0)

    def put(
        self,
        node: str,
        data: bytes,
        remote_path: str,
        mode: int = 0o644,
        *,
        sudo: bool = False,
        timeout: float | None = None,
    ) -> None:
        path = shlex.quote(remote_path)
        result = self.run(
            node,
            f'mkdir -p "$(dirname {path})" && cat >{path} && chmod {mode:o} {path}',
            stdin=data,
        )
        assert result.ok, result.stderr

    def ran(self, node: str, word: str) -> list[str]:
        return [line for n, line in self.commands if n == node and word in line]
