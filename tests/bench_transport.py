"""Benchmark: per-command latency over one kept SSH connection, a new one each time, and ssh(1).

    sudo .venv/bin/python tests/bench_transport.py [--count 40]

One sshd host at the lab master's address in a network namespace of this script's
own (tests/support/netns_hosts.py); `true` run `--count` times each way, the first
handshake of the kept connection not counted. Prints figures; asserts none (that a
kept connection is reused is test_transport.py's
test_one_connection_per_node_across_many_commands).
Needs root (network namespaces, sshd).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kubelab.transport import CommandResult, Transport  # noqa: E402
from tests.support.netns_hosts import NetnsHosts, missing_requirements  # noqa: E402

MASTER = "192.168.56.10"  # inside the namespace only


def _ok(result: CommandResult) -> None:
    """A figure over failed commands would be no figure."""
    if not result.ok:
        raise SystemExit(f"bench_transport: `true` failed on the host: rc {result.rc}")


def timings(hosts: NetnsHosts, count: int) -> dict[str, float]:
    """Seconds per command each way (run inside the namespace)."""
    target = hosts.targets()["master"]
    ssh = ["ssh", "-F", "/dev/null", "-i", str(hosts.key_file),
           "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
           f"{target.user}@{target.host}", "true"]  # fmt: skip
    result = {}
    with Transport(hosts.targets(), connect_timeout=5) as transport:
        transport.run("master", "true")  # the one handshake, not counted
        started = time.perf_counter()
        for _ in range(count):
            _ok(transport.run("master", "true"))
        result["persistent"] = (time.perf_counter() - started) / count
    started = time.perf_counter()
    for _ in range(count):
        with Transport(hosts.targets(), connect_timeout=5) as fresh:
            _ok(fresh.run("master", "true"))
    result["fresh"] = (time.perf_counter() - started) / count
    if shutil.which("ssh"):
        # A child forked from this thread starts in the same namespace.
        started = time.perf_counter()
        for _ in range(count):
            subprocess.run(ssh, check=True, timeout=30)
        result["ssh"] = (time.perf_counter() - started) / count
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40, help="commands timed each way")
    args = parser.parse_args()
    why = missing_requirements()
    if why:
        print(f"bench_transport: cannot run here: {why}", file=sys.stderr)
        return 2
    with NetnsHosts("bench-transport", [MASTER], names=["master"]) as hosts:
        figures = hosts.call_in_ns(timings, hosts, args.count)
    line = (
        f"[transport latency, {args.count} x `true`] "
        f"persistent: {figures['persistent'] * 1000:.1f} ms/command; "
        f"fresh paramiko connection: {figures['fresh'] * 1000:.1f} ms/command; "
    )
    if "ssh" in figures:
        line += f"ssh(1) process: {figures['ssh'] * 1000:.1f} ms/command; "
    print(line + f"ratio fresh/persistent: {figures['fresh'] / figures['persistent']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
