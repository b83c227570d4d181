"""Real sshd hosts (and a real nginx) at lab addresses, in a network namespace of the test's own.

The machine's own network namespace never sees a lab address: `NetnsHosts` makes a
namespace, a bridge `lab0` inside it holding every host address, and one real OpenSSH
sshd per host (`/usr/sbin/sshd -D -f <its config>`, its own host key, listening on that
host's address only). A test user, created for the run and removed after it, logs in
with a key of the run's own; `ForceCommand` is not used, so commands run for real
(curl, cat, true, ip), except those in the host's own bin folder, first in its PATH:

* `kubectl`, which replays recorded outputs the test chose for that host
  (`set_replies`, usually files from the shared fixtures) and records every call;
* `sudo`, which just runs the command (the test user has no sudo rights).

Each sshd runs in a mount and UTS namespace of its own, so `hostname`,
/etc/machine-id and /proc/sys/kernel/random/boot_id differ per host, as they do
between VMs (evidence records them as the cluster identity).

Misbehaving hosts, for grading tests (`behaviors=` or `set_behavior`):
  "hang"     login works, then every command sleeps forever
  "refuse"   no sshd on that address: the connection is refused
  "drop"     every command prints the start of an answer, then the session is killed
  "garbage"  kubectl prints non-JSON
  "stall"    sshd is stopped (SIGSTOP): TCP connects, the SSH greeting never comes
  "stream"   every command prints without end
`new_host_key(host)` gives a host a new SSH host key (a rebuilt VM, or an impostor).
`Reply(drop_after=N)` drops one chosen kubectl call after N bytes instead.

Clients run inside the namespace as well, in one of two ways:

* `call_in_ns(fn, ...)` runs `fn` in the test process, in a new thread that first joins
  the namespace with setns(2). A network namespace belongs to a thread, and threads
  (and their sockets) started from that thread inherit it, so paramiko's transport
  threads and a thread pool made inside `fn` stay in the namespace, while pytest
  itself never leaves the machine's namespace. Assertions and exceptions work as usual.
  Open every connection inside `fn`: a Transport used later from the main thread would
  open new connections outside the namespace.
* `run_in_ns(argv)` runs a whole program there (`ip netns exec`), e.g. `invoke verify`.

    with NetnsHosts("verify", ["192.168.56.10", "192.168.56.11"],
                    names=["master", "node1"]) as hosts:
        hosts.set_replies("master", [Reply("get nodes -o json", file=fixture("..."))])
        hosts.start_nginx("10.244.1.2")
        result = hosts.call_in_ns(lambda: Transport(hosts.targets()).run("master", "true"))

Teardown (the context manager's exit, also after a failed test) stops every process by
pid, kills whatever is left in the namespace, deletes it, removes the test user and the
temporary folder. A run killed before its teardown leaves a record under STATE_DIR; the
next harness to start cleans up after it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import pwd
import shutil
import signal
import string
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kubelab.transport import SSHTarget
from tests.support.captures import fixture as fixture  # the stub replies' captures
from tests.support.netns import call_in_netns

REPO_ROOT = Path(__file__).resolve().parents[2]
STUBS = Path(__file__).with_name("stubs")
# One record per live harness (namespace, user, folder, pid), for clean-up after a crash.
STATE_DIR = Path("/run/kubelab-test-hosts")
SSHD = "/usr/sbin/sshd"
NGINX = "/usr/sbin/nginx"
BRIDGE = "lab0"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The stock welcome page of Debian's nginx packages (upstream's page, byte for byte).
WELCOME_ROOT = Path("/usr/share/nginx/html")
BEHAVIORS = ("ok", "hang", "refuse", "drop", "garbage", "stall", "stream")
# Generous: 100 sshds starting on a cold, busy 2-core machine take their time.
START_TIMEOUT = 180.0
REQUIRED = ["ip", "unshare", "useradd", "userdel", "timeout", SSHD, "/usr/bin/python3"]

# Each sshd: its own hostname, machine ID and boot ID (bind mounts in its own mount
# namespace, made by `unshare`), then sshd itself in the foreground.
SSHD_START = (
    'hostname "$1" && mount --bind "$2" /etc/machine-id'
    ' && mount --bind "$3" /proc/sys/kernel/random/boot_id'
    ' && { [ ! -e /etc/hostname ] || mount --bind "$4" /etc/hostname; }'
    ' && exec /usr/sbin/sshd -D -e -f "$5"'
)

_counter = itertools.count(1)
T = TypeVar("T")


def missing_requirements(*, nginx: bool = False) -> str | None:
    """Why NetnsHosts cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, a test user, sshd)"
    tools = REQUIRED + ([NGINX] if nginx else [])
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        return (
            f"missing {', '.join(missing)} "
            "(apt-get install openssh-server iproute2 util-linux passwd python3"
            f"{' nginx-light' if nginx else ''})"
        )
    return None


@dataclass(frozen=True)
class Reply:
    """One recorded kubectl answer: `args` is a glob over the arguments joined by spaces."""

    args: str
    file: Path | None = None  # recorded output, printed on stdout
    text: str | None = None  # or inline output
    rc: int = 0
    stderr: str = ""
    delay: float = 0.0
    drop_after: int | None = None  # bytes of output before the session is killed


@dataclass
class FakeHost:
    name: str
    address: str
    dir: Path
    machine_id: str
    boot_id: str
    behavior: str = "ok"
    sshd: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log(self) -> Path:
        return self.dir / "sshd.log"

    def calls(self) -> list[list[str]]:
        """The kubectl argument lists this host was called with, in order."""
        return [record["argv"] for record in self.call_records()]

    def call_records(self) -> list[dict[str, Any]]:
        path = self.dir / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line]


class NetnsHosts:
    """Fake lab hosts with real sshd in a namespace of their own; a context manager."""

    def __init__(
        self,
        name: str,
        addresses: Sequence[str],
        *,
        names: Sequence[str] | None = None,
        prefix: int = 24,
        port: int = 22,
        behaviors: Mapping[str, str] | None = None,
    ) -> None:
        if names is not None and len(names) != len(addresses):
            raise ValueError("give one name per address")
        for address in addresses:
            ipaddress.IPv4Address(address)  # raises on a typo
        if len(set(addresses)) != len(addresses):
            raise ValueError("addresses must be distinct")
        number = next(_counter)
        self.name = name
        self.netns = f"kl-{name}-{os.getpid()}-{number}"
        self.user = f"kubelab-t{os.getpid()}-{number}"
        self.prefix = prefix
        self.port = port
        self.root = Path()
        self.key_file = Path()
        self.hosts: dict[str, FakeHost] = {}
        self._addresses = list(addresses)
        self._names = (
            list(names) if names is not None else ["h-" + a.replace(".", "-") for a in addresses]
        )
        if len(set(self._names)) != len(self._names):
            raise ValueError("host names must be distinct")
        self._behaviors = dict(behaviors or {})
        self._assigned: set[str] = set()
        self._nginx: dict[tuple[str, int], subprocess.Popen[bytes]] = {}
        self._user_created = False
        self._netns_created = False

    # -- life cycle ----------------------------------------------------------

    def __enter__(self) -> NetnsHosts:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> NetnsHosts:
        why = missing_requirements()
        if why:
            raise RuntimeError(f"NetnsHosts cannot run here: {why}")
        cleanup_stale()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"kubelab-hosts-{self.name}-"))
        self.root.chmod(0o755)  # the test user reads its host folders and the stubs
        self._write_state()
        _run(["ip", "netns", "add", self.netns])
        self._netns_created = True
        _run(["ip", "-n", self.netns, "link", "set", "lo", "up"])
        _run(["ip", "-n", self.netns, "link", "add", BRIDGE, "type", "bridge"])
        _run(["ip", "-n", self.netns, "link", "set", BRIDGE, "up"])
        self.add_addresses(self._addresses)

        home = self.root / "home"
        home.mkdir()
        _write_public(home / ".bashrc", (STUBS / "bashrc").read_text())
        self._create_user(home)
        shutil.chown(home, self.user, self.user)
        self.key_file = self.root / "id_ed25519"
        public = write_key(self.key_file)
        (self.root / "authorized_keys").write_text(public)
        shutil.copytree(STUBS, self.root / "stubs")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation

        for name, address in zip(self._names, self._addresses, strict=True):
            self.hosts[name] = self._make_host(name, address)
        for host in self.hosts.values():
            self.set_behavior(
                host.name,
                self._behaviors.get(host.name) or self._behaviors.get(host.address, "ok"),
                wait=False,
            )
        self._wait_for_sshd([h for h in self.hosts.values() if h.sshd is not None])

    def stop(self) -> None:
        """Stop everything and remove every trace; safe to call twice or after a failure."""
        problems: list[str] = []
        for process in self._nginx.values():
            _terminate(process)
        self._nginx.clear()
        for host in self.hosts.values():
            if host.sshd is not None:
                _terminate(host.sshd)
                host.sshd = None
        if self._netns_created:
            _kill_namespace_processes(self.netns)
            if _run(["ip", "netns", "del", self.netns], check=False).returncode != 0:
                problems.append(f"could not delete namespace {self.netns}")
            self._netns_created = False
        if self._user_created:
            if not _remove_user(self.user):
                problems.append(f"could not remove user {self.user}")
            self._user_created = False
        if self.root != Path() and self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)
        (STATE_DIR / f"{self.netns}.json").unlink(missing_ok=True)
        if problems:
            raise RuntimeError("NetnsHosts teardown: " + "; ".join(problems))

    # -- hosts ---------------------------------------------------------------

    def host(self, key: str) -> FakeHost:
        """A host by name or address."""
        if key in self.hosts:
            return self.hosts[key]
        for host in self.hosts.values():
            if host.address == key:
                return host
        raise KeyError(f"no fake host {key!r}")

    def targets(self) -> dict[str, SSHTarget]:
        """An SSH target per host, for kubelab.transport.Transport."""
        return {
            h.name: SSHTarget(
                name=h.name, host=h.address, port=self.port, user=self.user, key_file=self.key_file
            )
            for h in self.hosts.values()
        }

    def ssh_config_text(self) -> str:
        """`vagrant ssh-config` output describing these hosts, in vagrant's own format."""
        template = string.Template((STUBS / "ssh-config-host.template").read_text())
        return "".join(
            template.substitute(
                name=h.name,
                address=h.address,
                user=self.user,
                port=self.port,
                key_file=self.key_file,
            )
            for h in self.hosts.values()
        )

    def set_replies(self, key: str, replies: Iterable[Reply]) -> None:
        """What the host's kubectl answers; files are copied into the host's folder."""
        host = self.host(key)
        folder = host.dir / "replies"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(mode=0o755)
        table = []
        for number, reply in enumerate(replies):
            entry = {k: v for k, v in asdict(reply).items() if v is not None}
            if reply.file is not None:
                copy = folder / f"{number}-{Path(reply.file).name}"
                shutil.copyfile(reply.file, copy)
                copy.chmod(0o644)
                entry["file"] = str(copy.relative_to(host.dir))
            table.append(entry)
        _write_public(host.dir / "replies.json", json.dumps(table, indent=1))

    def set_behavior(self, key: str, behavior: str, *, wait: bool = True) -> None:
        """Make a host behave: "ok", "hang", "refuse", "drop", "garbage" or "stall"."""
        if behavior not in BEHAVIORS:
            raise ValueError(f"behavior {behavior!r} is not one of {', '.join(BEHAVIORS)}")
        host = self.host(key)
        script = STUBS / "behaviors" / f"{behavior}.sh"
        _write_public(host.dir / "env.sh", script.read_text() if script.exists() else "")
        garbage = host.dir / "garbage"
        if behavior == "garbage":
            shutil.copyfile(STUBS / "garbage.txt", garbage)
            garbage.chmod(0o644)
        else:
            garbage.unlink(missing_ok=True)
        if host.sshd is not None and host.behavior == "stall":
            host.sshd.send_signal(signal.SIGCONT)
        host.behavior = behavior
        if behavior == "refuse":
            if host.sshd is not None:
                _terminate(host.sshd)
                host.sshd = None
            return
        if host.sshd is None:
            self._start_sshd(host)
            if wait or behavior == "stall":
                self._wait_for_sshd([host])
        if behavior == "stall" and host.sshd is not None:
            # The kernel still completes TCP handshakes into the listen backlog, but
            # nothing answers: the SSH greeting never comes.
            host.sshd.send_signal(signal.SIGSTOP)

    def new_host_key(self, key: str) -> None:
        """Give the host a new SSH host key, and restart its sshd with it."""
        host = self.host(key)
        if host.sshd is not None:
            _terminate(host.sshd)
            host.sshd = None
        write_key(host.dir / "ssh_host_ed25519_key")
        if host.behavior != "refuse":
            self._start_sshd(host)
            self._wait_for_sshd([host])

    def _make_host(self, name: str, address: str) -> FakeHost:
        folder = self.root / "hosts" / name
        (folder / "bin").mkdir(parents=True)
        for stub in ("kubectl", "sudo"):
            (folder / "bin" / stub).symlink_to(self.root / "stubs" / stub)
        host = FakeHost(
            name=name,
            address=address,
            dir=folder,
            machine_id=uuid.uuid5(uuid.NAMESPACE_DNS, f"{self.netns}/{name}").hex,
            boot_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.netns}/{name}")),
        )
        _write_public(folder / "machine-id", host.machine_id + "\n")
        _write_public(folder / "boot_id", host.boot_id + "\n")
        _write_public(folder / "hostname", name + "\n")
        _write_public(folder / "replies.json", "[]\n")
        _write_public(folder / "calls.jsonl", "")
        shutil.chown(folder / "calls.jsonl", self.user, self.user)  # the stub appends
        write_key(folder / "ssh_host_ed25519_key")
        template = string.Template((STUBS / "sshd_config.template").read_text())
        (folder / "sshd_config").write_text(
            template.substitute(
                address=address,
                port=self.port,
                host_key=folder / "ssh_host_ed25519_key",
                authorized_keys=self.root / "authorized_keys",
                user=self.user,
                path=f"{folder / 'bin'}:{SYSTEM_PATH}",
                host_dir=folder,
            )
        )
        return host

    def _start_sshd(self, host: FakeHost) -> None:
        host.log.write_text("")
        with host.log.open("ab") as log:
            host.sshd = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.netns,
                    "unshare",
                    "--mount",
                    "--uts",
                    "--propagation",
                    "private",
                    "--",
                    "/bin/sh",
                    "-c",
                    SSHD_START,
                    "sshd-start",
                    host.name,
                    str(host.dir / "machine-id"),
                    str(host.dir / "boot_id"),
                    str(host.dir / "hostname"),
                    str(host.dir / "sshd_config"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def _wait_for_sshd(self, hosts: Sequence[FakeHost]) -> None:
        """Until each sshd says it listens (read from its log: no probe connections)."""
        deadline = time.monotonic() + START_TIMEOUT
        waiting = list(hosts)
        while waiting:
            for host in list(waiting):
                assert host.sshd is not None
                if f"Server listening on {host.address} port {self.port}" in host.log.read_text():
                    waiting.remove(host)
                elif host.sshd.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"sshd for {host.name} ({host.address}) did not start: "
                        f"{host.log.read_text()[-800:]}"
                    )
            time.sleep(0.02)

    # -- addresses and nginx -------------------------------------------------

    def add_addresses(self, addresses: Iterable[str]) -> None:
        """Put more addresses (pod IPs, a ClusterIP) on the namespace's bridge."""
        new = [a for a in addresses if a not in self._assigned]
        if not new:
            return
        batch = "".join(f"address add {a}/{self.prefix} dev {BRIDGE}\n" for a in new)
        _run(["ip", "-n", self.netns, "-batch", "-"], input=batch.encode())
        self._assigned.update(new)

    def start_nginx(self, address: str, port: int = 80) -> None:
        """A real nginx serving the stock welcome page on address:port."""
        if shutil.which(NGINX) is None:
            raise RuntimeError("nginx is not installed (apt-get install nginx-light)")
        self.add_addresses([address])
        folder = self.root / "nginx" / f"{address}-{port}"
        folder.mkdir(parents=True, exist_ok=True)
        pid_file = folder / "nginx.pid"
        pid_file.unlink(missing_ok=True)
        template = string.Template((STUBS / "nginx.conf.template").read_text())
        (folder / "nginx.conf").write_text(
            template.substitute(dir=folder, address=address, port=port, root=WELCOME_ROOT)
        )
        with (folder / "stderr.log").open("ab") as log:
            process = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.netns,
                    NGINX,
                    "-e",
                    str(folder / "error.log"),
                    "-p",
                    str(folder),
                    "-c",
                    str(folder / "nginx.conf"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self._nginx[(address, port)] = process
        # nginx writes its pid file after it has bound its listening socket.
        deadline = time.monotonic() + START_TIMEOUT
        while not (pid_file.exists() and pid_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                errors = (
                    (folder / "error.log").read_text() if (folder / "error.log").exists() else ""
                )
                raise RuntimeError(f"nginx on {address}:{port} did not start: {errors[-800:]}")
            time.sleep(0.02)

    def stop_nginx(self, address: str, port: int = 80) -> None:
        process = self._nginx.pop((address, port), None)
        if process is not None:
            _terminate(process)

    # -- clients inside the namespace ----------------------------------------

    def call_in_ns(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn(*args, **kwargs) in a new thread inside the namespace; its result or error."""
        return call_in_netns(self.netns, fn, *args, **kwargs)

    def processes(self) -> list[list[str]]:
        """The argv of every process now running in the namespace (sessions, commands)."""
        found = []
        for pid in _namespace_pids(self.netns):
            with contextlib.suppress(OSError):
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                # rstrip: sshd pads its process title with NULs
                found.append(raw.rstrip(b"\0").decode(errors="replace").split("\0"))
        return found

    def run_in_ns(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run a program inside the namespace (`ip netns exec`); kwargs go to subprocess.run."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], **kwargs)

    # -- bookkeeping ---------------------------------------------------------

    def _write_state(self) -> None:
        STATE_DIR.mkdir(mode=0o700, exist_ok=True)
        record = {
            "pid": os.getpid(),
            "netns": self.netns,
            "user": self.user,
            "root": str(self.root),
        }
        (STATE_DIR / f"{self.netns}.json").write_text(json.dumps(record))

    def _create_user(self, home: Path) -> None:
        # Password "*" (not "!"): without PAM, sshd refuses key logins to locked accounts.
        argv = [
            "useradd",
            "--home-dir",
            str(home),
            "--no-create-home",
            "--shell",
            "/bin/bash",
            "--password",
            "*",
            "--user-group",
            self.user,
        ]
        for attempt in range(300):  # another harness may hold the passwd lock for a moment
            result = _run(argv, check=False)
            if result.returncode == 0:
                self._user_created = True
                return
            if b"lock" not in result.stderr or attempt == 299:
                raise RuntimeError(f"useradd {self.user}: {result.stderr.decode().strip()}")
            time.sleep(0.2)


def cleanup_stale() -> None:
    """Remove what harnesses of dead test processes left behind (namespace, user, folder)."""
    if not STATE_DIR.is_dir():
        return
    for record_file in STATE_DIR.glob("*.json"):
        try:
            record = json.loads(record_file.read_text())
            os.kill(record["pid"], 0)
            continue  # still running: not ours to touch
        except ProcessLookupError:
            pass
        except (OSError, ValueError, KeyError):
            continue
        if Path(f"/run/netns/{record['netns']}").exists():
            _kill_namespace_processes(record["netns"])
            _run(["ip", "netns", "del", record["netns"]], check=False)
        _remove_user(record["user"])
        shutil.rmtree(record["root"], ignore_errors=True)
        record_file.unlink(missing_ok=True)


def _run(
    argv: Sequence[str], *, check: bool = True, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(argv, input=input, capture_output=True)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed (rc {result.returncode}): {result.stderr.decode().strip()}"
        )
    return result


def write_key(path: Path) -> str:
    """A new ed25519 private key at path (mode 600); returns its public line."""
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public.decode() + " kubelab-test\n"


def _write_public(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o644)


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)  # a "stall" host's sshd is stopped
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _namespace_pids(netns: str) -> list[int]:
    result = _run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in result.stdout.split() if int(p) != os.getpid()]


def _kill_namespace_processes(netns: str) -> None:
    """SIGKILL, by pid, whatever still runs in the namespace (sessions, sleeps, stubs)."""
    deadline = time.monotonic() + 10
    while (pids := _namespace_pids(netns)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _user_pids(uid: int) -> list[int]:
    pids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if line.startswith("Uid:"):
                    if int(line.split()[1]) == uid:
                        pids.append(int(status.parent.name))
                    break
    return pids


def _remove_user(user: str) -> bool:
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return True
    for pid in _user_pids(uid):  # sessions outlive their sshd for a moment
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for _ in range(300):  # up to a minute: a busy machine ends the sessions slowly
        result = _run(["userdel", user], check=False)
        if result.returncode == 0:
            return True
        time.sleep(0.2)
    return False
