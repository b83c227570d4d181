"""A class to grade live: derived clusters, misbehaving hosts, and the grader's inventory.

Shared by the live tests (an in-process transport, then real sshd hosts in a network
namespace) and the benchmark (tests/grade/bench_live.py). Every student has a master
and one node; a few hosts hang, refuse, drop the connection or answer garbage, and
the last student's inventory entry points at the previous student's cluster.
"""

from __future__ import annotations

import csv
import functools
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubelab.grade.rubric import Rubric
from kubelab.transport import CommandResult, TransportError
from tests.grade.classroom import (
    Cluster,
    ReplayTransport,
    Variant,
    derive_cluster,
    expected_scores,
)

NAMESPACE = "kubelab-grade"
NODEPORT = 30099
MACHINES = ("master", "node1")

# Which student's hosts misbehave, and how (the host harness's behaviours), and the
# one kubectl call cut off mid-output for others.
MISBEHAVING: dict[int, tuple[str, str]] = {
    5: ("master", "hang"),
    17: ("node1", "hang"),
    9: ("master", "refuse"),
    23: ("node1", "refuse"),
    13: ("master", "drop"),
    31: ("node1", "drop"),
    19: ("master", "garbage"),
    41: ("master", "garbage"),
}
DROP_MID_OUTPUT = (27, 45)  # `get pods -A -o json` dies after 300 bytes
VARIANTS: dict[int, Variant] = {
    2: Variant(monitoring=True),
    3: Variant(not_ready=(1,)),
    4: Variant(master_tainted=True),
    6: Variant(pods_down=1),
    7: Variant(nodeport_down=(1,)),
    8: Variant(pods_down=1, monitoring=True, not_ready=(0,)),
}


def student_id(k: int) -> str:
    return f"s{k:03d}"


def host_ips(k: int) -> tuple[str, str]:
    """Student k's master and node addresses (inside the test's network namespace)."""
    third, fourth = 100 + k // 100, (k % 100) * 2 + 10
    return f"192.168.{third}.{fourth}", f"192.168.{third}.{fourth + 1}"


@dataclass
class LiveStudent:
    student: str
    index: int
    cluster: Cluster
    hosts_of: int  # whose hosts the inventory lists (the student's own, but for one)
    behavior: dict[str, str] = field(default_factory=dict)  # machine -> behaviour
    drop_mid_output: bool = False

    @property
    def should_fail(self) -> bool:
        return bool(self.behavior) or self.drop_mid_output

    @property
    def host_names(self) -> list[str]:
        return [n.name for n in self.cluster.nodes]


# Each cluster is derived once per process and shared by every class that holds it: a
# derivation re-reads and re-encodes the captures (most of a small live test's time),
# and no test changes a Cluster (a test that changes a host's behaviour changes its
# LiveStudent, which every live_class call makes anew).
@functools.cache
def _own_cluster(k: int) -> Cluster:
    variant = VARIANTS.get(k, Variant())
    return derive_cluster(
        student_id(k), k, variant, node_ips=host_ips(k), namespace=NAMESPACE, nodeport=NODEPORT
    )


@functools.cache
def _copied_cluster(k: int, owner: int) -> Cluster:
    """Student k's hand-in of student `owner`'s cluster, on the owner's VMs."""
    return derive_cluster(
        student_id(k),
        k,
        Variant(cluster_of=student_id(owner)),
        node_ips=host_ips(owner),
        namespace=NAMESPACE,
        nodeport=NODEPORT,
        owner_index=owner,
    )


def live_class(clusters: int) -> list[LiveStudent]:
    """`clusters` students with a cluster each, plus one whose entry reuses the last one."""
    students = []
    for k in range(1, clusters + 1):
        cluster = _own_cluster(k)
        machine, behavior = MISBEHAVING.get(k, ("", ""))
        students.append(
            LiveStudent(
                student_id(k),
                k,
                cluster,
                k,
                behavior={machine: behavior} if behavior else {},
                drop_mid_output=k in DROP_MID_OUTPUT,
            )
        )
    last = students[-1]
    shared = clusters + 1
    # Handed in as another student, on the last student's VMs: the same cluster.
    copied = _copied_cluster(shared, last.index)
    students.append(LiveStudent(student_id(shared), shared, copied, last.index))
    return students


def inventory(
    students: Sequence[LiveStudent],
    *,
    user: str,
    key_file: Path | None = None,
    key_env: str | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {"user": user}
    if key_file is not None:
        defaults["key_file"] = str(key_file)
    if key_env is not None:
        defaults["key_env"] = key_env
    entries = {}
    for s in students:
        master, node = host_ips(s.hosts_of)
        entries[s.student] = {"master": {"host": master}, "nodes": [{"host": node}]}
    return {
        "defaults": defaults,
        "grading": {
            "pod_cidr": "172.16.0.0/16",
            "cni": "calico",
            "namespace": NAMESPACE,
            "nodeport": NODEPORT,
            "image": "docker.io/library/nginx:1.27",
        },
        "students": entries,
    }


def write_inventory(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
    return path


def rows(out_dir: Path) -> list[dict[str, str]]:
    with (out_dir / "gradebook.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def check_class(students: list[LiveStudent], out_dir: Path, rubric: Rubric) -> None:
    """Every student exactly once; misbehaving hosts are errors; the rest as the rubric says."""
    table = rows(out_dir)
    assert sorted(r["student"] for r in table) == sorted(s.student for s in students)
    by_student = {r["student"]: r for r in table}
    for s in students:
        row = by_student[s.student]
        if s.should_fail:
            assert row["status"] == "error" and row["error"], row
            assert row["total"] == ""
        else:
            assert row["status"] == "graded", row
            want = expected_scores(rubric, s.cluster.variant)
            assert float(row["total"]) == want["total"], s.student
    shared, owner = students[-1], students[-2]
    assert f"same cluster as {owner.student}" in by_student[shared.student]["flags"]
    assert f"same cluster as {shared.student}" in by_student[owner.student]["flags"]


# --- an in-process stand-in for the SSH transport -------------------------------------


GARBAGE = "<html><head><title>502 Bad Gateway</title></head></html>\n"


class FakeHosts:
    """Answers as the sshd hosts would: by address, with each host's behaviour.

    A hanging host's command ends as the transport ends it when its timeout runs out
    (rc 124, timed out, the whole timeout as its duration), but at once: waiting the
    timeout out on the clock proves nothing the real sshd hosts do not
    (test_grade_live_netns.py waits out real hangs). `hangs_wait` makes it wait, for a
    test that needs clusters still in progress (Ctrl-C).
    """

    def __init__(
        self, students: Sequence[LiveStudent], stuck: Sequence[str] = (), hangs_wait: bool = False
    ) -> None:
        self.by_address: dict[str, tuple[Cluster, str, str]] = {}
        for s in students:
            if s.hosts_of != s.index:
                continue  # the shared entry reuses its owner's hosts
            for machine, address in zip(MACHINES, host_ips(s.index), strict=True):
                self.by_address[address] = (s.cluster, machine, s.behavior.get(machine, "ok"))
            if s.drop_mid_output:
                self.by_address[host_ips(s.index)[0]] = (s.cluster, "master", "drop-pods")
        self.stuck = set(stuck)  # addresses whose commands ignore every timeout
        self.hangs_wait = hangs_wait
        self.hanging = threading.Event()  # set when a hanging host's command has begun
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        self.release = threading.Event()

    def factory(
        self, targets: Mapping[str, Any], connect_timeout: float = 10.0, **options: Any
    ) -> FakeTransport:
        # max_output and host_key_policy: no SSH here, the sshd tests exercise them.
        return FakeTransport(self, targets)


class FakeTransport:
    def __init__(self, hosts: FakeHosts, targets: Mapping[str, Any]) -> None:
        self.hosts = hosts
        self.targets = dict(targets)
        self.closed = threading.Event()

    def run(
        self,
        node: str,
        cmd: str,
        *args: str,
        timeout: float = 60.0,
        stdin: str | None = None,
        phase: str | None = None,
    ) -> CommandResult:
        address = self.targets[node].host
        cluster, machine, behavior = self.hosts.by_address[address]
        with self.hosts.lock:
            self.hosts.calls[address] = self.hosts.calls.get(address, 0) + 1
        line = " ".join([cmd, *args])
        if address in self.hosts.stuck:
            self.closed.wait()  # no timeout of its own: only close() ends it
            raise TransportError(f"{node}: connection closed")
        if behavior == "refuse":
            raise TransportError(f"{node} ({address}): connection refused")
        if behavior == "hang":
            waited = min(timeout, 3600)
            self.hosts.hanging.set()
            if self.hosts.hangs_wait:
                self.closed.wait(waited)
            return CommandResult(node, line, 124, "", "", waited, timed_out=True)
        if behavior == "drop" or (behavior == "drop-pods" and "get pods -A" in line):
            raise TransportError(f"{node} ({address}): connection lost while running `{line}`")
        if behavior == "garbage" and "kubectl" in args:
            return CommandResult(node, line, 0, GARBAGE, "", 0.01)
        started = time.monotonic()
        result = ReplayTransport(cluster).run(machine, cmd, *args, timeout=timeout)
        return CommandResult(
            node, line, result.rc, result.stdout, result.stderr, time.monotonic() - started
        )

    def close(self) -> None:
        self.closed.set()
