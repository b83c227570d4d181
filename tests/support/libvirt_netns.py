"""libvirtd in a network namespace of the test's own, for tests with real VMs.

libvirtd makes bridges, runs dnsmasq and gives VMs private addresses, so tests
never run it in the machine's own network namespace. `NetnsLibvirt` makes a
namespace, starts virtlogd and libvirtd inside it (plus a private mount
namespace in which all libvirt state is a copy in a temporary folder) and runs
commands there: vagrant, virsh, Python, `invoke up` itself. Teardown goes by pid
and runs even when the test failed.

    with NetnsLibvirt("kl-test") as lab:
        lab.run(["vagrant", "up"], env=lab.env(), cwd=folder)
        LibvirtInspector(lab.host_uri).domains()   # from the test process itself

Only the namespace is special: vagrant and libvirt-python are used as they are.

Each harness keeps its state in STATE_BASE/<name> with a record of the process
that owns it. A run killed before its teardown (a CI timeout, SIGKILL) leaves
that folder behind; the next harness to start tears such orphans down.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from pathlib import Path

START_SCRIPT = Path(__file__).with_name("netns_libvirtd.sh")
# Pool volumes (box images, VM disks) live here too: a few hundred MB per harness.
STATE_BASE = Path(os.environ.get("KUBELAB_NETNS_LIBVIRT_STATE", "/var/tmp/kubelab-netns-libvirt"))
OWNER = "owner.json"
# libvirtd probes QEMU's capabilities at start (7-8 s under emulation) and caches
# them; the cache is kept here between harnesses. libvirtd checks each cached
# file against the QEMU binary and itself, and probes again when it is stale.
CAPS_CACHE = "qemu-capabilities"
CAPS_IN_STATE = Path("cache", "qemu", "capabilities")
# (host folder, name of its copy in the state folder); the start script bind-mounts
# each copy over its host folder inside the private mount namespace.
COPIED = [("/etc/libvirt", "etc"), ("/var/lib/libvirt", "lib"), ("/var/cache/libvirt", "cache")]
URI = "qemu:///system"
SOCKET_IN_NS = "/run/libvirt/libvirt-sock"
# A cold first start on a loaded 2-core machine probes QEMU for minutes; a start that
# took longer than this is a broken libvirtd, not a slow one.
READY_DEADLINE = 600.0
PROBE_DEADLINE = 120.0
# vagrant-libvirt names a box's image in the pool `<box>_vagrant_box_image_<version>_...`.
BOX_VOLUME_MARK = "_vagrant_box_image_"
REQUIRED_TOOLS = ["ip", "nsenter", "unshare", "libvirtd", "virtlogd", "virsh", "vagrant"]


def missing_requirements() -> str | None:
    """Why NetnsLibvirt cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, libvirtd)"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            f"missing {', '.join(missing)} (apt-get install vagrant-libvirt "
            "libvirt-daemon-system qemu-system-x86)"
        )
    return None


class NetnsLibvirt:
    """A network namespace with its own libvirtd; use as a context manager."""

    def __init__(self, name: str | None = None, base_dir: Path = STATE_BASE) -> None:
        self.name = name or f"kl-{secrets.token_hex(4)}"
        self.state = Path(base_dir) / self.name
        self._started = False

    # -- paths and environments ---------------------------------------------

    @property
    def vagrant_home(self) -> Path:
        return self.state / "vagrant.d"

    @property
    def bin_dir(self) -> Path:
        """Wrappers (vagrant, virsh) that run the real tools inside the namespaces."""
        return self.state / "bin"

    @property
    def pid(self) -> int:
        """libvirtd's pid: the handle on both namespaces."""
        return _read_pid(self.state / "run" / "libvirtd.pid")

    @property
    def host_uri(self) -> str:
        """A libvirt URI that reaches this libvirtd from the test process itself.

        libvirtd's socket is only under /run/libvirt in its own mount namespace;
        /proc/PID/root shows that namespace's files. A unix socket is no network.
        """
        return f"{URI}?socket=/proc/{self.pid}/root/run/libvirt/libvirt-sock"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for commands run inside with run(): this VAGRANT_HOME and URI."""
        return {
            **os.environ,
            "VAGRANT_HOME": str(self.vagrant_home),
            "LIBVIRT_DEFAULT_URI": URI,
            **(extra or {}),
        }

    def host_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for code in the test process (python-vagrant): PATH finds the wrappers."""
        return self.env({"PATH": f"{self.bin_dir}:{os.environ.get('PATH', '')}", **(extra or {})})

    # -- start and stop -----------------------------------------------------

    def __enter__(self) -> NetnsLibvirt:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = READY_DEADLINE) -> None:
        """Make the namespace and start the daemons; a failed start leaves nothing behind."""
        reap_orphans(self.state.parent)
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        self.state.parent.mkdir(parents=True, exist_ok=True)
        # QEMU runs as libvirt-qemu and must reach the box's kernel under VAGRANT_HOME.
        self.state.parent.chmod(0o755)
        self.state.mkdir(mode=0o755)  # the name is ours from here on: stop() cleans up
        self._started = True
        self.state.chmod(0o755)
        (self.state / OWNER).write_text(json.dumps(_identity(os.getpid())))
        self._prepare_state()
        _check(["ip", "netns", "add", self.name])
        Path("/run/libvirt").mkdir(parents=True, exist_ok=True)  # mount point
        in_netns = ["ip", "netns", "exec", self.name]
        _check([*in_netns, "ip", "link", "set", "lo", "up"])
        private_mounts = ["unshare", "-m", "--propagation", "private"]
        _check([*in_netns, *private_mounts, "bash", str(START_SCRIPT), str(self.state)])
        self._wait_until_ready(timeout)
        self._write_wrappers()
        self._save_capabilities()

    def _wait_until_ready(self, timeout: float) -> None:
        """Wait for libvirtd by what it says, not by a fixed pause.

        First its pid file, then its socket, then `virsh version` answering. On a
        cold, busy machine the first start probes QEMU's capabilities for minutes,
        and virsh blocks meanwhile: each probe gets a long deadline of its own, and a
        probe that times out is simply asked again until the overall deadline.
        """
        deadline = time.monotonic() + timeout
        pid_file = self.state / "run" / "libvirtd.pid"
        waited_for = "its pid file"
        while time.monotonic() < deadline:
            if not pid_file.exists():
                time.sleep(0.5)
                continue
            if not Path(f"/proc/{self.pid}/root{SOCKET_IN_NS}").exists():
                waited_for = "its socket"
                time.sleep(0.5)
                continue
            waited_for = "`virsh version`"
            left = max(deadline - time.monotonic(), 1.0)
            try:
                probe = self.run(
                    ["virsh", "-c", URI, "version"], check=False, timeout=min(PROBE_DEADLINE, left)
                )
            except subprocess.TimeoutExpired:
                continue
            if probe.returncode == 0:
                return
            time.sleep(0.5)
        raise RuntimeError(
            f"libvirtd in netns {self.name} did not answer in {timeout:.0f}s (waiting for "
            f"{waited_for}); see {self.state / 'log' / 'libvirtd.log'}"
        )

    def _prepare_state(self) -> None:
        for source, copy in COPIED:
            # cp -a keeps owners (libvirt-qemu owns parts of /var/lib/libvirt).
            _check(["cp", "-a", source, str(self.state / copy)])
        saved = self.state.parent / CAPS_CACHE
        if saved.is_dir():
            _check(["cp", "-a", f"{saved}/.", str(self.state / CAPS_IN_STATE)])
        (self.state / "run").mkdir()
        (self.state / "log" / "qemu").mkdir(parents=True)
        (self.state / "bin").mkdir()
        self.vagrant_home.mkdir()
        with (self.state / "etc" / "libvirtd.conf").open("a") as conf:
            conf.write('\nlog_outputs="3:file:/var/log/libvirt/libvirtd.log"\n')

    def _save_capabilities(self) -> None:
        saved = self.state.parent / CAPS_CACHE
        probed = self.state / CAPS_IN_STATE
        if saved.is_dir() or not any(probed.glob("*.xml")):
            return
        partial = self.state / "caps.partial"
        _check(["cp", "-a", str(probed), str(partial)])
        with suppress(OSError):  # another harness saved its copy first
            partial.rename(saved)

    def _write_wrappers(self) -> None:
        for tool in ("vagrant", "virsh"):
            wrapper = self.bin_dir / tool
            wrapper.write_text(
                "#!/bin/sh\n"
                f'exec nsenter -t {self.pid} -m -n --wd="$PWD" -- {shutil.which(tool)} "$@"\n'
            )
            wrapper.chmod(0o755)

    def stop(self) -> list[str]:
        """Tear everything down; return what went wrong (teardown never raises)."""
        problems: list[str] = []
        if not self._started:
            return problems
        if self._daemon_alive("libvirtd"):
            problems += self._clean_libvirt()
        for daemon in ("libvirtd", "virtlogd"):
            if self._daemon_alive(daemon):
                _terminate(_read_pid(self.state / "run" / f"{daemon}.pid"))
        # QEMU and dnsmasq outlive libvirtd if their domain or network was not
        # stopped; every process still in the namespace is ours.
        if Path("/run/netns", self.name).exists():
            pids = subprocess.run(
                ["ip", "netns", "pids", self.name], capture_output=True, text=True, check=False
            ).stdout.split()
            for pid in pids:
                problems.append(f"killed leftover process {pid} ({_comm(int(pid))})")
                _terminate(int(pid))
            deleted = subprocess.run(
                ["ip", "netns", "del", self.name], capture_output=True, text=True, check=False
            )
            if deleted.returncode != 0:
                problems.append(f"ip netns del {self.name}: {deleted.stderr.strip()}")
        self._started = False
        shutil.rmtree(self.state, ignore_errors=True)
        return problems

    def _clean_libvirt(self) -> list[str]:
        problems = []
        for dom in self._names(["list", "--all", "--name"]):
            self.virsh("destroy", dom, check=False)
            undefined = self.virsh("undefine", dom, "--nvram", check=False)
            if undefined.returncode != 0:
                problems.append(f"undefine {dom}: {undefined.stderr.strip()}")
        for net in self._names(["net-list", "--all", "--name"]):
            self.virsh("net-destroy", net, check=False)
            self.virsh("net-undefine", net, check=False)
        for pool in self._names(["pool-list", "--name"]):
            for vol in self._names(["vol-list", "--pool", pool, "--name"]):
                if BOX_VOLUME_MARK in vol:
                    self.virsh("vol-delete", "--pool", pool, vol, check=False)
        return problems

    def _names(self, args: list[str]) -> list[str]:
        result = self.virsh(*args, check=False)
        return [line.strip() for line in result.stdout.splitlines() if line.strip()]

    def _daemon_alive(self, daemon: str) -> bool:
        # The pid is checked against the name: an orphan's pid may be recycled.
        pid_file = self.state / "run" / f"{daemon}.pid"
        if not pid_file.exists():
            return False
        pid = _read_pid(pid_file)
        return _alive(pid) and _comm(pid) == daemon

    # -- running commands inside --------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        timeout: float | None = None,
        check: bool = True,
        log: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside libvirtd's network and mount namespaces.

        env defaults to env(); cwd to the current folder. Output is captured, or
        with log appended to that file as it comes (follow a long `invoke up`
        with tail -f) and returned as stdout. With check, a non-zero exit raises
        AssertionError carrying the output, which reads well in pytest.
        """
        workdir = Path(cwd or os.getcwd()).resolve()
        command = ["nsenter", "-t", str(self.pid), "-m", "-n", f"--wd={workdir}", "--", *argv]
        environment = dict(env) if env is not None else self.env()
        if log is None:
            result = subprocess.run(
                command, env=environment, capture_output=True, text=True, timeout=timeout
            )
        else:
            with log.open("a") as out:
                start = out.tell()
                done = subprocess.run(
                    command, env=environment, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
                )
            with log.open() as out:
                out.seek(start)
                result = subprocess.CompletedProcess(command, done.returncode, out.read(), "")
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode} in netns {self.name}"
                + (f" (log {log})" if log else "")
                + f"\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
            )
        return result

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(["virsh", "-c", URI, *args], check=check, timeout=120)


def reap_orphans(base_dir: Path = STATE_BASE) -> list[str]:
    """Tear down the harnesses under base_dir whose owning process is gone; return their names."""
    reaped = []
    for state in sorted(base_dir.glob("*/" + OWNER)):
        try:
            owner = json.loads(state.read_text())
        except (OSError, ValueError):
            owner = {}
        if owner and _identity(owner.get("pid", 0)) == owner:
            continue  # a live harness, maybe of another test run
        orphan = NetnsLibvirt(state.parent.name, base_dir)
        orphan._started = True
        orphan.stop()
        reaped.append(orphan.name)
    return reaped


def _identity(pid: int) -> dict[str, int]:
    """A pid with its start time, so a recycled pid is not taken for the owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return {"pid": pid, "start": -1}
    return {"pid": pid, "start": int(stat.rsplit(")", 1)[1].split()[19])}


def _check(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


def _read_pid(path: Path) -> int:
    return int(path.read_text().strip())


def _alive(pid: int) -> bool:
    # A daemon is not our child: once dead it may stay a zombie until PID 1
    # reaps it, and kill(pid, 0) still succeeds on a zombie.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _terminate(pid: int, grace: float = 10) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
