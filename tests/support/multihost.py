"""A teacher and several libvirt hosts, each in network namespaces of the test's own.

The topology of ../shared/MULTIHOST_LIBVIRT_HERE.md, built from NetnsLibvirt:

* a teacher namespace with a bridge (10.77.0.1/24) and nothing else: no libvirtd, so
  everything the teacher does to a host goes over qemu+ssh;
* per host, a NetnsLibvirt (its own libvirtd and virtlogd, libvirt state copied into a
  folder of its own) plus a real OpenSSH sshd started in that host's network AND mount
  namespace (so `virt-ssh-helper` finds that host's libvirtd socket), root login with
  the teacher's key only, its own ed25519 host key; a veth from the teacher's bridge is
  the host's eth0 (10.77.0.11, .12, ...);
* the teacher's class folder and Vagrant home are hidden from every host under an
  empty tmpfs: a host really cannot open a file on the teacher's disk.

`run_teacher(argv)` runs a program in the teacher namespace (invoke class.*);
`call_teacher(fn)` runs fn in a thread that joined it (libvirt-python over qemu+ssh:
the ssh it starts inherits the thread's namespace). `set_link(host, up)` takes a
host off the network and back. Teardown is by pid, and runs after a failed test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tests.support.libvirt_netns import NetnsLibvirt, _read_pid, _terminate
from tests.support.libvirt_netns import missing_requirements as libvirt_missing
from tests.support.netns import call_in_netns

T = TypeVar("T")
SUBNET = "10.77.0"
SSHD = "/usr/sbin/sshd"
START_DEADLINE = 120.0


def missing_requirements() -> str | None:
    reason = libvirt_missing()
    if reason:
        return reason
    for tool in (SSHD, "ssh-keygen", "virt-ssh-helper"):
        if shutil.which(tool) is None:
            return f"missing {tool} (apt-get install openssh-server libvirt-daemon)"
    return None


@dataclass
class LibvirtHost:
    name: str
    address: str
    libvirt: NetnsLibvirt
    ssh_dir: Path

    @property
    def sshd_pid_file(self) -> Path:
        return self.ssh_dir / "sshd.pid"


class MultiHost:
    """Teacher + N libvirt hosts with sshd; a context manager."""

    def __init__(self, names: Sequence[str], tag: str = "mh") -> None:
        self.names = list(names)
        self.tag = f"{tag}{os.getpid() % 100000}"
        self.teacher_ns = f"{self.tag}-t"
        self.root = Path(tempfile.mkdtemp(prefix=f"kubelab-{self.tag}-", dir="/var/tmp"))
        self.teacher_dir = self.root / "teacher"
        self.key = self.teacher_dir / "keys" / "id_ed25519"
        self.hosts: dict[str, LibvirtHost] = {}
        self._stack = ExitStack()
        self._made_ns = False

    @property
    def vagrant_home(self) -> Path:
        return self.teacher_dir / "vagrant.d"

    def teacher_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "LIBVIRT_DEFAULT_URI"}
        return {
            **env,
            "VAGRANT_HOME": str(self.vagrant_home),
            "VAGRANT_CHECKPOINT_DISABLE": "1",  # no network beyond the namespaces
            "COLUMNS": "200",  # tables whole in the captured output
            **(extra or {}),
        }

    # -- start and stop -------------------------------------------------------

    def __enter__(self) -> MultiHost:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start(self) -> None:
        self.vagrant_home.mkdir(parents=True)
        self.key.parent.mkdir(parents=True)
        _check(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)])
        _check(["ip", "netns", "add", self.teacher_ns])
        self._made_ns = True
        t = ["ip", "-n", self.teacher_ns]
        _check([*t, "link", "set", "lo", "up"])
        _check([*t, "link", "add", "br0", "type", "bridge"])
        _check([*t, "addr", "add", f"{SUBNET}.1/24", "dev", "br0"])
        _check([*t, "link", "set", "br0", "up"])
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation
        for index, name in enumerate(self.names):
            self._start_host(name, f"{SUBNET}.{11 + index}")
        deadline = time.monotonic() + START_DEADLINE
        for host in self.hosts.values():
            self._wait_for_sshd(host, deadline)

    def _start_host(self, name: str, address: str) -> None:
        libvirt = NetnsLibvirt(f"{self.tag}-{name}")
        libvirt.start()
        self._stack.callback(libvirt.stop)
        ssh_dir = self.root / name / "ssh"
        ssh_dir.mkdir(parents=True)
        host = LibvirtHost(name, address, libvirt, ssh_dir)
        self.hosts[name] = host
        veth = f"vt-{self.tag}-{name}"[:15]
        t = ["ip", "-n", self.teacher_ns]
        _check(
            [*t, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", libvirt.name]
        )
        _check([*t, "link", "set", veth, "master", "br0", "up"])
        h = ["ip", "-n", libvirt.name]
        _check([*h, "addr", "add", f"{address}/24", "dev", "eth0"])
        _check([*h, "link", "set", "eth0", "up"])
        # The VMs' management network NATs out through eth0, as on a real host.
        _check([*h, "route", "add", "default", "via", f"{SUBNET}.1"])
        _check(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_dir / "host_key")])
        shutil.copy(self.key.with_suffix(".pub"), ssh_dir / "authorized_keys")
        (ssh_dir / "sshd_config").write_text(
            "\n".join(
                [
                    f"ListenAddress {address}",
                    f"HostKey {ssh_dir / 'host_key'}",
                    f"PidFile {self.sshd_pid_file(host)}",
                    # The teacher's key, then the login user's own file, where kubelab
                    # puts the students' restricted entries (as on a real host).
                    f"AuthorizedKeysFile {ssh_dir / 'authorized_keys'} .ssh/authorized_keys",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "AllowTcpForwarding yes",
                    "MaxStartups 50:30:100",
                    "MaxSessions 50",
                    "Subsystem sftp /usr/lib/openssh/sftp-server",
                ]
            )
            + "\n"
        )
        inside = ["nsenter", "-t", str(libvirt.pid), "-m", "-n", "--"]
        # The host must not see the teacher's files (box kernel, class folder).
        _check([*inside, "mount", "-t", "tmpfs", "-o", "size=1m", "hidden", str(self.teacher_dir)])
        # root's home on this host is a folder of the test's: what kubelab writes to
        # ~/.ssh there never reaches the machine's own /root.
        (ssh_dir / "root-home").mkdir(mode=0o700)
        _check([*inside, "mount", "--bind", str(ssh_dir / "root-home"), "/root"])
        _check([*inside, SSHD, "-f", str(ssh_dir / "sshd_config"), "-E", str(ssh_dir / "sshd.log")])

    @staticmethod
    def sshd_pid_file(host: LibvirtHost) -> Path:
        return host.sshd_pid_file

    def _wait_for_sshd(self, host: LibvirtHost, deadline: float) -> None:
        import socket

        def probe() -> bool:
            with socket.create_connection((host.address, 22), timeout=5) as sock:
                return sock.recv(4).startswith(b"SSH-")

        while time.monotonic() < deadline:
            with suppress(OSError):
                if call_in_netns(self.teacher_ns, probe):
                    return
            time.sleep(0.5)
        raise RuntimeError(f"sshd of {host.name} did not answer; see {host.ssh_dir / 'sshd.log'}")

    def stop(self) -> None:
        for host in self.hosts.values():
            if host.sshd_pid_file.exists():
                with suppress(ValueError, OSError):
                    _terminate(_read_pid(host.sshd_pid_file))
        self._stack.close()  # each NetnsLibvirt: domains, networks, daemons, namespace
        if self._made_ns:
            pids = subprocess.run(
                ["ip", "netns", "pids", self.teacher_ns], capture_output=True, text=True
            ).stdout.split()
            for pid in pids:
                _terminate(int(pid))
            subprocess.run(["ip", "netns", "del", self.teacher_ns], capture_output=True)
            self._made_ns = False
        shutil.rmtree(self.root, ignore_errors=True)

    # -- using it ---------------------------------------------------------------

    def set_link(self, name: str, up: bool) -> None:
        host = self.hosts[name]
        _check(["ip", "-n", host.libvirt.name, "link", "set", "eth0", "up" if up else "down"])

    def run_teacher(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | str | None = None,
        timeout: float | None = None,
        log: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """argv in the teacher's namespace; output appended to log (if given) and returned."""
        command = ["ip", "netns", "exec", self.teacher_ns, *argv]
        done = subprocess.run(
            command,
            env=self.teacher_env(),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if log is not None:
            with log.open("a") as out:
                out.write(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}rc={done.returncode}\n")
        return done

    def call_teacher(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return call_in_netns(self.teacher_ns, fn, *args, **kwargs)


def _check(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)
