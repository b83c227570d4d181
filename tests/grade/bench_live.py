"""Benchmark: grade a class on 100 real sshd hosts, concurrently and then one at a time.

    sudo .venv/bin/python tests/grade/bench_live.py [--clusters 50] [--concurrency 16]

The class is the live test's (tests/grade/live_class.py): a master and a node per
student, so 50 clusters are 100 sshd hosts in a network namespace of this script's
own, some of which hang, refuse, drop the connection or answer garbage. Prints the
wall time of each run, the ratio, and how many students ended graded or in error.
Needs root (network namespaces, sshd), sshd and nginx. Prints figures; asserts none.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from rich.console import Console  # noqa: E402

from kubelab.grade.live import grade_inventory  # noqa: E402
from tests.grade.class_hosts import class_hosts, requirements  # noqa: E402
from tests.grade.live_class import inventory, live_class, write_inventory  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=50, help="students (2 hosts each)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--deadline", type=float, default=20.0, help="per-cluster deadline, s")
    parser.add_argument("--no-serial", action="store_true", help="skip the one-at-a-time run")
    args = parser.parse_args()
    why = requirements()
    if why:
        print(f"bench_live: cannot run here: {why}", file=sys.stderr)
        return 2
    students = live_class(args.clusters)
    with (
        tempfile.TemporaryDirectory(prefix="kubelab-bench-grade-") as tmp,
        class_hosts(students, name="bench") as hosts,
    ):
        work = Path(tmp)
        path = write_inventory(
            work / "inventory.yaml", inventory(students, user=hosts.user, key_file=hosts.key_file)
        )
        print(
            f"{len(students)} students, {len(hosts.hosts)} sshd hosts "
            f"({sum(1 for s in students if s.should_fail)} students on misbehaving hosts), "
            f"deadline {args.deadline:g} s per cluster"
        )

        def run(concurrency: int, out: Path) -> tuple[float, int, int]:
            console = Console(file=io.StringIO(), force_terminal=False)
            started = time.monotonic()
            report = hosts.call_in_ns(
                grade_inventory,
                path,
                2,
                out,
                concurrency=concurrency,
                host_deadline=args.deadline,
                console=console,
            )
            took = time.monotonic() - started
            return took, len(report.grades) - len(report.errors), len(report.errors)

        concurrent, graded, errors = run(args.concurrency, work / "concurrent")
        print(
            f"concurrent (pool of {args.concurrency}): {concurrent:.1f} s "
            f"({graded} graded, {errors} errors)"
        )
        if args.no_serial:
            return 0
        serial, graded, errors = run(1, work / "serial")
        print(f"one at a time: {serial:.1f} s ({graded} graded, {errors} errors)")
        print(
            f"ratio: {serial / concurrent:.1f}x faster concurrently "
            f"(target: 100 hosts in under 60 s: {'met' if concurrent < 60 else 'missed'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
