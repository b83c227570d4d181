"""The one way kubelab runs a command on a VM: one persistent SSH connection per node.

Every command on a VM (provisioning, verify, live grading) goes through
`Transport.run(node, cmd, *args)`; so does a command verify runs on this machine
itself (the NodePort curl from the host): a `LocalTarget` is a node like the VMs,
its commands run here in a local shell, with the same quoting, deadline and result.
`cmd` is shell text written by kubelab (a program name, or a short script kubelab
owns); every value that comes from elsewhere is passed in `args`, and `command_line`
quotes those, and only those, with `shlex.quote`.

Connections are opened on first use and reused for every later command on that node
(`connections_opened` counts them), so a verify run costs three SSH handshakes, not one
`vagrant ssh -c` process per command. Each command gets its own SSH channel, so
different nodes can be driven from parallel threads.

Deadlines are enforced on both ends: the VM runs the command under coreutils
`timeout(1)`, which stops it (and everything it started) so nothing piles up on the VM
or exhausts sshd's sessions per connection; the client gives up a little later
(`CLIENT_GRACE`), which covers a host that accepted the session and then went silent.
Either way the result is rc 124 with `timed_out=True`, and the connection stays usable.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import select
import selectors
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import paramiko

from kubelab.errors import KubelabError

log = logging.getLogger(__name__)

DEFAULT_PORT = 22
DEFAULT_USER = "vagrant"
# What coreutils timeout(1) exits with; used as well when the client gives up itself.
TIMEOUT_RC = 124
# timeout(1) sends TERM at the deadline and KILL this many seconds later ...
KILL_AFTER = 1.0
# ... and the client waits this much past the deadline before it stops waiting for the VM.
CLIENT_GRACE = 2.0
# rc 128+KILL: what timeout(1) returns when the command ignored TERM and had to be killed.
KILLED_RC = 137
# After the exit status arrives, how long to keep reading while output still trickles
# in. A background process that inherited stdout would otherwise hold the channel open.
OUTPUT_LINGER = 0.5
POLL_INTERVAL = 0.1
KEEPALIVE_SECONDS = 30
READ_SIZE = 65536
STDIN_CHUNK = 32768  # paramiko's largest data packet
STDIN_POLL = 0.005

# Writes stdin to a temporary file beside the target and renames it into place, so a
# reader never sees half a file. $1 = path, $2 = octal mode.
PUT_SCRIPT = (
    'tmp=$(mktemp "$1.XXXXXX") && cat > "$tmp" && chmod "$2" "$tmp" && mv -f "$tmp" "$1"'
    ' || { rc=$?; [ -n "$tmp" ] && rm -f "$tmp"; exit "$rc"; }'
)
PUT_MIN_TIMEOUT = 120.0
PUT_MIN_RATE = 1_000_000  # bytes per second a lab network surely manages
# CentOS 7's sshd gives a non-login command PATH=/usr/local/bin:/usr/bin, and ip,
# sysctl, modprobe, ss, getenforce live in /usr/sbin there. Every command kubelab
# runs gets the sbin folders in front of the PATH sshd gave, so none depends on the
# box's sshd defaults (sudo sets its own secure_path, which has them too).
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"


class TransportError(KubelabError):
    """A node could not be reached, or its connection broke while a command ran."""


@dataclass(frozen=True)
class SSHTarget:
    """Where and as whom to log in to one node.

    The private key comes from `key_file`, or from the environment variable named by
    `key_env` (so a key need not sit in any file the caller reads). With neither, the
    user's SSH agent and default keys are tried. `more_key_files` are the further
    IdentityFile lines of `vagrant ssh-config`, offered in order after `key_file` the
    way OpenSSH does: Vagrant 2.4 lists its ed25519 insecure key first, and boxes built
    before it (centos/7) trust only the RSA one.

    `jump`: a host to go through (a lab on a remote libvirt host: its VMs have
    addresses only that host reaches). The VM's connection runs in a direct-tcpip
    channel of one connection to the jump host, which every VM behind it shares.
    `known_hosts`: a file that must hold this host's key (pinned); without it, any
    key is accepted, as for throwaway VMs.
    """

    name: str
    host: str
    port: int = DEFAULT_PORT
    user: str = DEFAULT_USER
    key_file: Path | None = None
    key_env: str | None = None
    more_key_files: tuple[Path, ...] = ()
    jump: SSHTarget | None = None
    known_hosts: Path | None = None

    @property
    def key_files(self) -> tuple[Path, ...]:
        return (self.key_file, *self.more_key_files) if self.key_file else self.more_key_files

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True)
class LocalTarget:
    """This machine as a node: its commands run here, in /bin/sh, not over SSH.

    For what verify asks from the host itself (the NodePort, as a student's browser
    reaches it): the caller has one way to run a command wherever it runs.
    """

    name: str

    @property
    def address(self) -> str:
        return "this machine"


Target = SSHTarget | LocalTarget


@dataclass(frozen=True)
class CommandResult:
    """What one command on one node did. `command` is the line as kubelab wrote it."""

    node: str
    command: str
    rc: int  # -1: ended without an exit status (killed by a signal on the VM)
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out

    def tail(self, lines: int = 10) -> str:
        """The last lines of stderr, or of stdout when stderr is empty: for error messages."""
        text = self.stderr.strip() or self.stdout.strip()
        return "\n".join(text.splitlines()[-lines:])


def command_line(cmd: str, *args: object) -> str:
    """The one place arguments are quoted: `cmd` is kubelab's shell text, args are values."""
    return " ".join(
        [cmd, *(shlex.quote(os.fspath(a) if isinstance(a, os.PathLike) else str(a)) for a in args)]
    )


def remote_line(line: str, *, timeout: float, sudo: bool = False) -> str:
    """The line sent to sshd: `line` under timeout(1), as root when `sudo`.

    The command runs in the login shell (`$SHELL`), as it would without the wrapper.
    """
    _check_timeout(timeout)
    if sudo:
        line = _as_root(line)
    return (
        f'PATH="{SBIN_PATH}:$PATH" timeout -k {_seconds(KILL_AFTER)} {_seconds(timeout)} '
        f'"${{SHELL:-/bin/sh}}" -c {shlex.quote(line)}'
    )


def _as_root(line: str) -> str:
    return f"sudo -n -- sh -c {shlex.quote(line)}"


def _check_timeout(timeout: float) -> None:
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, not {timeout}")


def _seconds(value: float) -> str:
    # timeout(1) reads "0" as "no limit", so never round a small limit down to it.
    return f"{max(value, 0.001):.3f}".rstrip("0").rstrip(".")


def targets_from_ssh_config(text: str) -> dict[str, SSHTarget]:
    """SSH targets from `vagrant ssh-config` output (one `Host` block per machine)."""
    config = paramiko.SSHConfig.from_text(text)
    targets: dict[str, SSHTarget] = {}
    for name in sorted(config.get_hostnames()):
        if any(c in name for c in "*?!"):
            continue  # a pattern (paramiko always lists "*"), not a machine
        entry = config.lookup(name)
        port = entry.get("port", str(DEFAULT_PORT))
        if not port.isdigit():
            raise KubelabError(
                f"ssh-config for {name}: Port {port!r} is not a number",
                hint="run `vagrant ssh-config` and check its output",
            )
        listed = entry.get("identityfile")  # a list: vagrant may print several
        keys: list[Path] = [Path(k) for k in listed] if isinstance(listed, list) else []
        targets[name] = SSHTarget(
            name=name,
            host=entry.get("hostname", name),
            port=int(port),
            user=entry.get("user", DEFAULT_USER),
            key_file=keys[0] if keys else None,
            more_key_files=tuple(keys[1:]),
        )
    if not targets:
        raise KubelabError(
            "ssh-config output names no machine (no Host block)",
            hint="is the lab up? `invoke status`, then `vagrant ssh-config`",
        )
    return targets


class Transport:
    """Runs commands on named nodes, one lazily opened SSH connection per node (none
    for a LocalTarget: its commands run on this machine)."""

    def __init__(
        self,
        targets: Mapping[str, Target],
        *,
        connect_timeout: float = 10.0,
        max_output: int | None = None,
        host_key_policy: paramiko.MissingHostKeyPolicy | None = None,
    ) -> None:
        """`max_output`: a command that prints more (stdout and stderr together) is
        stopped and raises TransportError (a host that streams must not fill memory).
        `host_key_policy`: decides on each host key (it may raise HostKeyRefused); by
        default every key is accepted, as for throwaway lab VMs (see _connect).
        """
        self.targets = dict(targets)
        self.connect_timeout = connect_timeout
        self.max_output = max_output
        self.host_key_policy = host_key_policy
        self.connections_opened = 0
        self._clients: dict[str, paramiko.SSHClient] = {}
        self._lock = threading.Lock()
        # Connecting is serialised per node only: a slow node never holds up the others.
        self._node_locks = {name: threading.Lock() for name in self.targets}
        # One connection per jump host, shared by every node behind it.
        self._jumps: dict[SSHTarget, paramiko.SSHClient] = {}
        self._jump_lock = threading.Lock()

    def __enter__(self) -> Transport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        with self._jump_lock:
            clients += list(self._jumps.values())
            self._jumps = {}
        for client in clients:
            client.close()

    def target(self, node: str) -> Target:
        try:
            return self.targets[node]
        except KeyError:
            known = ", ".join(sorted(self.targets)) or "none"
            raise TransportError(
                f"no SSH target for node {node!r}", hint=f"known nodes: {known}"
            ) from None

    def run(
        self,
        node: str,
        cmd: str,
        *args: object,
        timeout: float = 60.0,
        sudo: bool = False,
        stdin: bytes | str | None = None,
        phase: str | None = None,
    ) -> CommandResult:
        """Run `cmd` with quoted `args` on `node`; rc 124 and timed_out after `timeout` s.

        `stdin` is fed to the command (then EOF). `phase` says what the command is for
        (verify tags each with its phase): the debug log shows it, and a wrapper may
        treat commands by it (live grading lets the teardown run past its deadline).
        Raises TransportError when the node cannot be reached or drops the connection;
        a command that fails on the VM is a result (rc, stderr), not an exception.
        """
        line = command_line(cmd, *args)
        shown = f"sudo {line}" if sudo else line
        data = stdin.encode() if isinstance(stdin, str) else stdin
        target = self.target(node)
        started = time.monotonic()
        try:
            if isinstance(target, LocalTarget):
                _check_timeout(timeout)
                rc, out, err, timed_out = _execute_local(
                    _as_root(line) if sudo else line, data, timeout, self.max_output
                )
            else:
                wire = remote_line(line, timeout=timeout, sudo=sudo)
                rc, out, err, timed_out = _execute(
                    self._connection(node), wire, data, timeout + CLIENT_GRACE, self.max_output
                )
        except _OutputCapped as capped:
            target = self.target(node)
            raise TransportError(
                f"{node} ({target.address}): `{shown}` printed more than {capped.limit} "
                "bytes; stopped",
                hint="a command's output is capped so that a host cannot fill the grader's "
                "memory; check what the host runs",
            ) from None
        except _ConnectionLost as lost:
            self._forget(node)
            target = self.target(node)
            raise TransportError(
                f"{node} ({target.address}): connection lost while running `{shown}`: "
                f"{lost.reason}",
                hint="the VM may have rebooted or run out of memory; check it with "
                "`invoke status` and the node's journal (journalctl -b -1), then retry",
            ) from lost
        duration = time.monotonic() - started
        # The VM's timeout(1) stopped it: 124 after TERM, 137 when it needed KILL.
        if rc in (TIMEOUT_RC, KILLED_RC) and duration >= timeout:
            timed_out = True
        if timed_out:
            rc = TIMEOUT_RC
        log.debug(
            "%s%s: `%s` rc=%s in %.2fs", node, f" [{phase}]" if phase else "", shown, rc, duration
        )
        return CommandResult(
            node=node,
            command=shown,
            rc=rc,
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
            duration=duration,
            timed_out=timed_out,
        )

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
        """Write `data` to `remote_path` on `node` atomically, over the node's connection.

        The default deadline grows with the size (a local package folder can be large).
        """
        if timeout is None:
            timeout = max(PUT_MIN_TIMEOUT, len(data) / PUT_MIN_RATE)
        result = self.run(
            node,
            "sh -c",
            PUT_SCRIPT,
            "kubelab-put",
            remote_path,
            format(mode, "o"),
            stdin=data,
            sudo=sudo,
            timeout=timeout,
        )
        if not result.ok:
            raise KubelabError(
                f"could not write {remote_path} on {node}: rc={result.rc} {result.tail(3)}",
                hint="check the folder exists and is writable (or pass sudo=True), "
                "and that the disk is not full (df -h)",
            )

    def _connection(self, node: str) -> paramiko.Transport:
        target = self.target(node)
        assert isinstance(target, SSHTarget), "a LocalTarget's commands run here"
        with self._node_locks[node]:
            client = self._clients.get(node)
            if client is not None:
                transport = client.get_transport()
                if transport is not None and transport.is_active():
                    return transport
                self._forget(node)  # dropped while idle (say, the VM rebooted): reconnect
            via = self._jump_transport(target.jump) if target.jump else None
            client = _connect(target, self.connect_timeout, via, self.host_key_policy)
            with self._lock:
                self._clients[node] = client
                self.connections_opened += 1
            transport = client.get_transport()
            assert transport is not None  # connect() succeeded
            return transport

    def _jump_transport(self, jump: SSHTarget) -> paramiko.Transport:
        """The shared connection to a jump host, opened (again) when it is not active."""
        with self._jump_lock:
            client = self._jumps.get(jump)
            transport = client.get_transport() if client is not None else None
            if transport is None or not transport.is_active():
                if client is not None:
                    client.close()
                client = _connect(jump, self.connect_timeout)
                self._jumps[jump] = client
                transport = client.get_transport()
            assert transport is not None  # connect() succeeded
            return transport

    def _forget(self, node: str) -> None:
        with self._lock:
            client = self._clients.pop(node, None)
        if client is not None:
            client.close()


class HostKeyRefused(paramiko.SSHException):
    """A host key policy's refusal: the message says which key, and which was expected."""


class _OutputCapped(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class _ConnectionLost(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _connect(
    target: SSHTarget,
    timeout: float,
    via: paramiko.Transport | None = None,
    host_key_policy: paramiko.MissingHostKeyPolicy | None = None,
) -> paramiko.SSHClient:
    keys = _load_keys(target)
    pkey = keys[0] if keys else None
    sock: socket.socket | paramiko.Channel
    try:
        if via is not None:
            # The jump host's sshd opens the TCP connection to the VM (ssh -W / ProxyJump).
            sock = via.open_channel(
                "direct-tcpip", (target.host, target.port), ("127.0.0.1", 0), timeout=timeout
            )
        else:
            sock = socket.create_connection((target.host, target.port), timeout=timeout)
    except (OSError, paramiko.SSHException, EOFError) as exc:  # includes TimeoutError
        through = f" through {target.jump.address}" if target.jump else ""
        raise _failure(
            target,
            _describe_os_error(exc, timeout) + through,
            f"is the machine up and sshd running? for a local lab: `invoke status`, then "
            f"`invoke ssh {target.name}`",
        ) from exc
    if isinstance(sock, socket.socket):
        # Each command is a few small SSH messages in a row (open, exec, EOF); with Nagle
        # on, each waits for the peer's delayed ACK, about 40 ms per command.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = paramiko.SSHClient()
    # Lab VMs are throwaway: every `vagrant up` gives the same address a new host key, so
    # a remembered key would only turn the next lab into a "host key changed" failure.
    # As vagrant's own ssh-config does (StrictHostKeyChecking no, UserKnownHostsFile
    # /dev/null), accept the key the VM offers. AutoAddPolicy keeps it in memory only:
    # no known_hosts file is loaded, so none is ever written.
    # A caller that pins keys (live grading) passes a policy of its own.
    client.set_missing_host_key_policy(host_key_policy or paramiko.AutoAddPolicy())
    if target.known_hosts is not None:
        # A pinned host (a libvirt host, unlike its throwaway VMs): only its recorded key.
        client.load_host_keys(str(target.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            target.host,
            port=target.port,
            username=target.user,
            pkey=pkey,
            sock=sock,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            # With a key of our own, use only it (vagrant's IdentitiesOnly yes).
            allow_agent=pkey is None,
            look_for_keys=pkey is None,
        )
    except paramiko.AuthenticationException as exc:
        if not _offer_more_keys(client, target, keys[1:]):
            client.close()
            tried = f"{len(keys)} key{'s' if len(keys) > 1 else ''}" if keys else "agent keys"
            raise _failure(
                target,
                f"login refused ({exc}; offered {tried})",
                "check the user and the key given for this host (`vagrant ssh-config` "
                "shows a lab VM's)",
            ) from exc
    except HostKeyRefused as exc:
        client.close()
        sock.close()
        raise _failure(
            target,
            str(exc),
            "if the host was rebuilt, pin its new key where it is pinned; otherwise "
            "something else answers at this address",
        ) from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        client.close()
        sock.close()
        raise _failure(
            target,
            f"SSH handshake failed ({_describe_os_error(exc, timeout)})",
            "sshd answered but the session could not start; is the VM still booting? "
            "retry in a minute",
        ) from exc
    transport = client.get_transport()
    if transport is not None:
        # Keeps NAT and conntrack state alive through long quiet stages (image pulls).
        transport.set_keepalive(KEEPALIVE_SECONDS)
    return client


def _failure(target: SSHTarget, reason: str, hint: str) -> TransportError:
    return TransportError(f"{target.name} ({target.address}): {reason}", hint=hint)


def _describe_os_error(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if "protocol banner" in str(exc):
        return f"no SSH banner within {timeout:g} s"
    if "No existing session" in str(exc):
        # paramiko's start_client() returns silently at its timeout when the greeting or
        # the key exchange has not finished; login then finds no session.
        return f"no SSH banner or key exchange within {timeout:g} s"
    code = getattr(exc, "errno", None)
    names = {
        errno.ECONNREFUSED: "connection refused",
        errno.EHOSTUNREACH: "host unreachable",
        errno.ENETUNREACH: "network unreachable",
        errno.ECONNRESET: "connection reset",
    }
    if code in names:
        return names[code]
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _offer_more_keys(
    client: paramiko.SSHClient, target: SSHTarget, keys: list[paramiko.PKey]
) -> bool:
    """After the first key was refused, offer the others on the same connection."""
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        return False
    for key in keys:
        try:
            transport.auth_publickey(target.user, key)
        except paramiko.AuthenticationException:
            continue
        except (paramiko.SSHException, EOFError, OSError):
            return False
        if transport.is_authenticated():
            return True
    return False


def _load_keys(target: SSHTarget) -> list[paramiko.PKey]:
    """Every key to offer, in order. Like OpenSSH, an IdentityFile that does not exist is
    passed over; it is an error only when no listed key exists at all."""
    if target.key_env:
        text = os.environ.get(target.key_env)
        if not text:
            raise _failure(
                target,
                f"environment variable {target.key_env} (the SSH key) is not set",
                f"export {target.key_env} with the private key",
            )
        return [_key_from_text(target, text)]
    files = target.key_files
    present = [path for path in files if path.exists()] or list(files[:1])
    return [_key_from_file(target, path) for path in present]


def _key_from_file(target: SSHTarget, path: Path) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(path)
    except OSError as exc:
        raise _failure(
            target,
            f"cannot read SSH key {path} ({exc.strerror or exc})",
            "check the key file given for this host (IdentityFile in `vagrant ssh-config`)",
        ) from exc
    except (paramiko.SSHException, ValueError) as exc:
        raise _failure(
            target,
            f"SSH key {path} is not a usable private key ({exc})",
            "use an unencrypted OpenSSH or PEM key",
        ) from exc


def _key_from_text(target: SSHTarget, text: str) -> paramiko.PKey:
    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise _failure(
        target,
        f"environment variable {target.key_env} holds no usable private key",
        "put the whole key file (BEGIN ... END lines) in it",
    )


def _execute_local(
    line: str, stdin: bytes | None, timeout: float, max_output: int | None
) -> tuple[int, bytes, bytes, bool]:
    """Run `line` in /bin/sh on this machine: (rc, stdout, stderr, timed_out).

    The command leads a session of its own, so the deadline stops it and everything it
    started (TERM, then KILL after KILL_AFTER), as timeout(1) does on a VM.
    """
    proc = subprocess.Popen(
        ["/bin/sh", "-c", line],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    out, err = bytearray(), bytearray()
    try:
        _exchange_local(proc, memoryview(stdin or b""), out, err, deadline, max_output)
        rc = proc.wait(max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
        _stop_group(proc)
        return TIMEOUT_RC, bytes(out), bytes(err), True
    except BaseException:
        _stop_group(proc, grace=0)
        raise
    finally:
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()
    # Killed by a signal: no exit status, as sshd reports such a command.
    return (rc if rc >= 0 else -1), bytes(out), bytes(err), False


def _exchange_local(
    proc: subprocess.Popen[bytes],
    stdin: memoryview,
    out: bytearray,
    err: bytearray,
    deadline: float,
    max_output: int | None,
) -> None:
    """Feed stdin and collect output until both pipes close or the deadline (_exchange's
    job for a local command): a background process that inherited stdout is given
    OUTPUT_LINGER after the command exits, then left."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    linger_until: float | None = None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ, out)
        selector.register(proc.stderr, selectors.EVENT_READ, err)
        if stdin:
            os.set_blocking(proc.stdin.fileno(), False)
            selector.register(proc.stdin, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()  # EOF on the command's stdin
        while selector.get_map():
            now = time.monotonic()
            if now >= deadline or (linger_until is not None and now >= linger_until):
                return
            if linger_until is None and proc.poll() is not None:
                linger_until = now + OUTPUT_LINGER
            for key, _ in selector.select(min(deadline - now, POLL_INTERVAL)):
                if key.fileobj is proc.stdin:
                    try:
                        stdin = stdin[os.write(proc.stdin.fileno(), stdin[:STDIN_CHUNK]) :]
                    except BrokenPipeError:
                        stdin = stdin[:0]  # it ended without reading all of its input
                    if not stdin:
                        selector.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                chunk = os.read(key.fd, READ_SIZE)
                if not chunk:
                    selector.unregister(key.fileobj)
                key.data.extend(chunk)
                _check_size(out, err, max_output)


def _stop_group(proc: subprocess.Popen[bytes], grace: float = KILL_AFTER) -> None:
    """TERM the command's session, KILL what is left of it after `grace`, reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _execute(
    transport: paramiko.Transport,
    line: str,
    stdin: bytes | None,
    limit: float,
    max_output: int | None = None,
) -> tuple[int, bytes, bytes, bool]:
    """Run one command on its own channel: (rc, stdout, stderr, timed_out)."""
    deadline = time.monotonic() + limit
    try:
        channel = transport.open_session(timeout=limit)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise _ConnectionLost(f"could not open a session ({exc or type(exc).__name__})") from exc

    expired = threading.Event()

    def expire() -> None:
        # exec_command() waits for sshd's answer without a timeout of its own; closing
        # the channel wakes it (and any other wait) when the deadline passes.
        expired.set()
        channel.close()

    watchdog = threading.Timer(limit, expire)
    watchdog.daemon = True
    watchdog.start()
    out, err = bytearray(), bytearray()
    try:
        channel.exec_command(line)
        _exchange(channel, memoryview(stdin or b""), out, err, deadline, max_output)
        # Decide before close(): closing sets status_event too.
        finished = channel.status_event.is_set() and not expired.is_set()
        rc = channel.exit_status
    except (paramiko.SSHException, OSError, EOFError) as exc:
        if expired.is_set():
            return TIMEOUT_RC, bytes(out), bytes(err), True
        raise _ConnectionLost(str(exc) or type(exc).__name__) from exc
    finally:
        watchdog.cancel()
        channel.close()

    if not finished:
        return TIMEOUT_RC, bytes(out), bytes(err), True
    if rc == -1 and _lost(channel, transport):
        raise _ConnectionLost(f"the host closed the connection after {len(out)} bytes of output")
    return rc, bytes(out), bytes(err), False


def _exchange(
    channel: paramiko.Channel,
    stdin: memoryview,
    out: bytearray,
    err: bytearray,
    deadline: float,
    max_output: int | None = None,
) -> None:
    """Feed stdin and collect output until EOF and exit status, close, or the deadline.

    Input and output move together: a command that answers before it has read all its
    input (cat) would otherwise block on a full output window while we block on its
    full input window.
    """
    fd = channel.fileno()  # a pipe paramiko sets whenever stdout or stderr data arrives
    sent = 0
    if not stdin:
        channel.shutdown_write()  # EOF on the command's stdin
    linger_until: float | None = None
    while not (channel.eof_received or channel.closed):
        now = time.monotonic()
        if now >= deadline:
            return
        wait = min(deadline - now, POLL_INTERVAL)
        if sent < len(stdin):
            if channel.send_ready():  # never blocks: the peer's window has room
                try:
                    sent += channel.send(bytes(stdin[sent : sent + STDIN_CHUNK]))
                except OSError:
                    if not channel.closed:
                        raise
                    break  # the command ended without reading all of its input
                if sent >= len(stdin):
                    channel.shutdown_write()
                wait = 0
            else:
                wait = min(wait, STDIN_POLL)  # the window reopens without waking the pipe
        elif channel.status_event.is_set():
            # Exited, but something still holds its output open; keep reading while the
            # rest arrives, then stop.
            linger_until = linger_until or now + OUTPUT_LINGER
            if now >= linger_until:
                break
        ready, _, _ = select.select([fd], [], [], wait)
        if ready and _drain(channel, out, err, max_output) and linger_until is not None:
            linger_until = time.monotonic() + OUTPUT_LINGER
    _drain(channel, out, err, max_output)
    channel.status_event.wait(max(deadline - time.monotonic(), 0))


def _drain(
    channel: paramiko.Channel, out: bytearray, err: bytearray, max_output: int | None = None
) -> bool:
    got = False
    while channel.recv_ready():
        out += channel.recv(READ_SIZE)
        got = True
        _check_size(out, err, max_output)
    while channel.recv_stderr_ready():
        err += channel.recv_stderr(READ_SIZE)
        got = True
        _check_size(out, err, max_output)
    return got


def _check_size(out: bytearray, err: bytearray, max_output: int | None) -> None:
    if max_output is not None and len(out) + len(err) > max_output:
        raise _OutputCapped(max_output)


def _lost(channel: paramiko.Channel, transport: paramiko.Transport) -> bool:
    """No exit status: killed by a signal on the VM, or the connection itself died?"""
    if not transport.is_active():
        return True
    if not channel.eof_received:
        # sshd always sends EOF before closing a session; a channel closed without one
        # was closed by paramiko because the socket died. Its thread is ending; let it.
        transport.join(timeout=1.0)
    return not transport.is_active()
