"""A live class on real sshd hosts: one host per VM, in a network namespace of its own.

Each host is an OpenSSH sshd at the student's lab address (tests/support/netns_hosts.py)
whose stub kubectl replays the student's derived cluster, and whose `hostname` is the
node's name. One real nginx serves the recorded welcome page on every pod IP,
ClusterIP and NodePort address that answers in the class. Some hosts hang, refuse,
drop the connection or answer garbage (live_class.MISBEHAVING), and two drop one
kubectl call in the middle of its output.
"""

from __future__ import annotations

import contextlib
import shutil
import string
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.grade.classroom import reply_files, welcome_page
from tests.grade.live_class import MACHINES, LiveStudent, host_ips
from tests.support.netns_hosts import NGINX, NetnsHosts, Reply, missing_requirements

NGINX_TEMPLATE = (
    Path(__file__).resolve().parents[1] / "data" / "grade" / ("nginx-class.conf.template")
)
DROP_AFTER = 300  # bytes of `get pods -A -o json` before the session is killed


def requirements() -> str | None:
    return missing_requirements(nginx=True)


@contextlib.contextmanager
def class_hosts(students: Sequence[LiveStudent], name: str = "grade") -> Iterator[NetnsHosts]:
    own = [s for s in students if s.hosts_of == s.index]
    addresses, names, behaviors = [], [], {}
    for s in own:
        for machine, address, node in zip(MACHINES, host_ips(s.index), s.host_names, strict=True):
            addresses.append(address)
            names.append(node)
            if machine in s.behavior:
                behaviors[node] = s.behavior[machine]
    work = Path(tempfile.mkdtemp(prefix="kubelab-grade-class-"))
    nginx: subprocess.Popen[bytes] | None = None
    try:
        with NetnsHosts(name, addresses, names=names, behaviors=behaviors) as hosts:
            for s in own:
                table = reply_files(s.cluster, work / "replies" / s.student)
                replies = [_reply(entry, s.drop_mid_output) for entry in table]
                for node in s.host_names:
                    hosts.set_replies(node, replies)
            nginx = _start_nginx(hosts, own, work)
            try:
                yield hosts
            finally:
                _stop(nginx)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _reply(entry: dict, drop_mid_output: bool) -> Reply:  # type: ignore[type-arg]
    drop = DROP_AFTER if drop_mid_output and entry["args"] == "*get pods -A -o json" else None
    return Reply(
        args=entry["args"],
        file=entry.get("file"),
        text=entry.get("text"),
        rc=int(entry.get("rc") or 0),
        drop_after=drop,
    )


def _start_nginx(
    hosts: NetnsHosts, students: Sequence[LiveStudent], work: Path
) -> subprocess.Popen[bytes]:
    answering = sorted({pair for s in students for pair in s.cluster.answering})
    hosts.add_addresses(sorted({address for address, _ in answering}))
    folder = work / "nginx"
    root = folder / "html"
    root.mkdir(parents=True)
    (root / "index.html").write_text(welcome_page())  # the recorded page, byte for byte
    for path in (work, folder, root, root / "index.html"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # nginx's workers run as nobody
    listen = "\n".join(f"        listen {address}:{port};" for address, port in answering)
    config = string.Template(NGINX_TEMPLATE.read_text()).substitute(
        dir=folder, listen=listen, root=root
    )
    (folder / "nginx.conf").write_text(config)
    log = (folder / "stderr.log").open("ab")
    process = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            hosts.netns,
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
    log.close()
    deadline = time.monotonic() + 30
    pid_file = folder / "nginx.pid"
    while not (pid_file.exists() and pid_file.read_text().strip()):
        if process.poll() is not None or time.monotonic() > deadline:
            errors = (folder / "error.log").read_text() if (folder / "error.log").exists() else ""
            _stop(process)
            raise RuntimeError(f"nginx for the class did not start: {errors[-800:]}")
        time.sleep(0.05)
    return process


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
