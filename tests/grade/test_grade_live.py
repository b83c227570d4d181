"""Live grading's own logic, over an in-process stand-in for the SSH transport.

The same class runs against real sshd hosts in test_grade_live_netns.py; here the
transport is a fake that answers by address (the derived clusters, and hosts that
hang, refuse, drop or answer garbage), so the pool, deadlines, watchdog, rerun and
force logic are checked in seconds.
"""

from __future__ import annotations

import _thread
import io
import json
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from kubelab.grade import live
from kubelab.grade.grading import error_grade, grade_evidence, score_table
from kubelab.grade.integrity import Flag
from kubelab.grade.live import DeadlineTransport, _Progress, grade_inventory
from kubelab.grade.rubric import Rubric
from kubelab.plan import LabSpec
from kubelab.transport import CommandResult, TransportError
from kubelab.verify import Expected
from kubelab.verify.expect import TEARDOWN
from tests.grade.live_class import (
    NODEPORT,
    FakeHosts,
    LiveStudent,
    check_class,
    host_ips,
    inventory,
    live_class,
    rows,
    write_inventory,
)


def plain_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=False, width=200, highlight=False), out


# A cluster's deadline here: long enough that a healthy cluster is graded in time on a
# loaded machine (CI shares 2 cores with emulated VMs), short enough that the hanging
# hosts, which use all of it where they wait (Ctrl-C), cost little. The watchdog test
# sets its own.
DEADLINE = 10.0
# The Ctrl-C test's interrupted run: its in-progress hanging cluster waits what is left
# of it when the hang begins, and the Ctrl-C must land within that wait. 3 s was too
# little in a clean-clone CI run (the cluster's first commands on a loaded machine used
# most of it, the run ended before the Ctrl-C: "DID NOT RAISE").
CTRL_C_DEADLINE = DEADLINE


def class_with_inventory(tmp_path: Path, clusters: int) -> tuple[list[LiveStudent], Path]:
    students = live_class(clusters)
    path = write_inventory(
        tmp_path / "inventory.yaml", inventory(students, user="grader", key_env="KUBELAB_TEST_KEY")
    )
    return students, path


@pytest.fixture
def small_class(tmp_path: Path) -> tuple[list[LiveStudent], Path]:
    """20 clusters: every misbehaviour of live_class up to its garbage on a master."""
    return class_with_inventory(tmp_path, 20)


def test_a_class_graded_live(
    small_class: tuple[list[LiveStudent], Path], rubric: Rubric, tmp_path: Path
) -> None:
    students, path = small_class
    hosts = FakeHosts(students)
    console, printed = plain_console()
    out = tmp_path / "out"
    report = grade_inventory(
        path,
        2,
        out,
        concurrency=8,
        host_deadline=DEADLINE,
        console=console,
        transport_factory=hosts.factory,
    )
    check_class(students, out, rubric)
    assert len(report.grades) == len(students)
    for s in students:
        saved = json.loads((out / "results" / f"{s.student}.json").read_text())
        assert saved["student"] == s.student
        assert saved["status"] == ("error" if s.should_fail else "graded")
    errors = {r["student"]: r["error"] for r in rows(out) if r["status"] == "error"}
    assert "no answer to `hostname`" in errors["s005"]  # hangs
    assert "connection refused" in errors["s009"]
    assert "connection lost" in errors["s013"]  # drops every session
    assert "answered garbage" in errors["s019"]
    # One line per student on a non-terminal, as each result is known.
    assert printed.getvalue().count("] s0") == len(students)
    # The grader removed its namespace on every cluster it read.
    for s in students:
        if not s.should_fail:
            commands = (out / "evidence" / s.student / "commands.jsonl").read_text()
            assert f'"delete", "namespace", "{s.cluster.namespace}"' in commands
    # meta.json keeps the LabSpec live grading built from the inventory, and what verify
    # expected is its projection (Expected.from_spec), read back the way a hand-in's is.
    for s in students:
        if s.should_fail:
            continue
        meta = json.loads((out / "evidence" / s.student / "meta.json").read_text())
        spec = LabSpec.from_dict(meta["spec"])
        recorded = Expected.from_dict(meta["expected"])
        projected = Expected.from_spec(spec, phases=recorded.phases)
        assert replace(projected, deadlines=recorded.deadlines) == recorded
        assert [n.ip for n in spec.nodes] == list(host_ips(s.hosts_of))
        assert [n.k8s_name for n in spec.nodes] == s.host_names  # as `hostname` answered
        assert spec.student_id == s.student and spec.verify_nodeport == NODEPORT
        # No version pinned: the API server's own, asked before verify ran.
        assert spec.kubernetes_version == s.cluster.kubernetes_version
    # Grading reads both back: an `expected` edited after verify wrote it is flagged.
    graded = next(s for s in students if not s.should_fail)
    folder = out / "evidence" / graded.student
    assert not [f for f in grade_evidence(folder, graded.student, rubric).flags
                if "spec" in f.detail]  # fmt: skip
    meta = json.loads((folder / "meta.json").read_text())
    meta["expected"]["nodeport"] += 1
    (folder / "meta.json").write_text(json.dumps(meta))
    flags = [str(f) for f in grade_evidence(folder, graded.student, rubric).flags]
    assert "contradiction: meta.json's expected differs from its spec: nodeport" in flags
    meta["spec"] = {"format": 1, "nodes": "all of them"}
    (folder / "meta.json").write_text(json.dumps(meta))
    flags = [str(f) for f in grade_evidence(folder, graded.student, rubric).flags]
    assert any(f.startswith("contradiction: meta.json's spec is unusable") for f in flags)


def test_a_rerun_skips_graded_students_and_force_regrades(
    small_class: tuple[list[LiveStudent], Path], rubric: Rubric, tmp_path: Path
) -> None:
    students, path = small_class
    out = tmp_path / "out"
    hosts = FakeHosts(students)
    grade_inventory(
        path,
        2,
        out,
        concurrency=8,
        host_deadline=DEADLINE,
        console=plain_console()[0],
        transport_factory=hosts.factory,
    )
    first = dict(hosts.calls)
    grade_inventory(
        path,
        2,
        out,
        concurrency=8,
        host_deadline=DEADLINE,
        console=plain_console()[0],
        transport_factory=hosts.factory,
    )
    for s in students:
        master = host_ips(s.hosts_of)[0]
        if s.should_fail:
            assert hosts.calls[master] > first[master], f"{s.student}: errors are retried"
        elif s.hosts_of == s.index and s.index != students[-1].hosts_of:
            assert hosts.calls[master] == first[master], f"{s.student} was graded again"
    check_class(students, out, rubric)
    second = dict(hosts.calls)
    grade_inventory(
        path,
        2,
        out,
        concurrency=8,
        host_deadline=DEADLINE,
        force=True,
        console=plain_console()[0],
        transport_factory=hosts.factory,
    )
    assert all(hosts.calls[a] > n for a, n in second.items())
    check_class(students, out, rubric)


def test_a_stuck_host_is_given_up_by_the_watchdog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A few students: the stuck one holds a slot, the others go through the rest.
    students, path = class_with_inventory(tmp_path, 4)
    monkeypatch.setattr(live, "CLEANUP_GRACE", 0.5)
    monkeypatch.setattr(live, "WATCHDOG_SLACK", 0.5)
    stuck = students[0]
    hosts = FakeHosts(students, stuck=[host_ips(stuck.index)[0]])
    out = tmp_path / "out"
    started = time.monotonic()
    grade_inventory(
        path,
        2,
        out,
        concurrency=4,
        host_deadline=1.5,
        console=plain_console()[0],
        transport_factory=hosts.factory,
    )
    assert time.monotonic() - started < 30
    row = next(r for r in rows(out) if r["student"] == stuck.student)
    assert row["status"] == "error" and "no result within" in row["error"]
    assert len(rows(out)) == len(students)


class Recorder:
    def __init__(self) -> None:
        self.timeouts: list[float] = []
        self.closed = False

    def run(
        self, node: str, cmd: str, *args: object, timeout: float = 60.0, phase: str | None = None
    ) -> CommandResult:
        self.timeouts.append(timeout)
        return CommandResult(node, cmd, 0, "", "", 0.0)

    def close(self) -> None:
        self.closed = True


def test_the_deadline_cuts_every_command_and_spares_only_the_teardown() -> None:
    inner = Recorder()
    transport = DeadlineTransport(inner, time.monotonic() + 5, grace=10)
    transport.run("master", "sudo", "kubectl", "get", "nodes", timeout=60)
    assert 4 < inner.timeouts[-1] <= 5
    transport.deadline = time.monotonic() - 1
    with pytest.raises(TransportError, match="deadline passed"):
        transport.run("master", "sudo", "kubectl", "get", "pods", timeout=60)
    # What the command is does not matter, only the phase collect tagged it with.
    with pytest.raises(TransportError, match="deadline passed"):
        transport.run("master", "sudo", "kubectl", "delete", "namespace", "kubelab-grade")
    transport.run("master", "sudo", "kubectl", "get", "pods", timeout=60, phase=TEARDOWN)
    assert 8 < inner.timeouts[-1] <= 9
    assert transport.expired
    transport.close()
    assert inner.closed


def test_an_inline_key_is_refused_in_one_line(tmp_path: Path) -> None:
    from kubelab.errors import ConfigError

    key = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----\n"
    )
    path = write_inventory(
        tmp_path / "inv.yaml",
        {"students": {"s001": {"master": {"host": "192.168.56.10", "key_file": key}}}},
    )
    with pytest.raises(ConfigError) as caught:
        grade_inventory(path, 2, tmp_path / "out")
    assert len(caught.value.problems) == 1
    assert "holds a private key" in caught.value.problems[0]
    assert "b3BlbnNzaC1rZXkt" not in str(caught.value)
    assert caught.value.code == 2  # the task's exit code
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_ctrl_c_finishes_clusters_in_progress_and_loses_nobody(
    rubric: Rubric, tmp_path: Path
) -> None:
    # Two at a time, Ctrl-C at s005's hang: s007 and after are never reached. (s011's
    # entry copies s010's cluster, a healthy one, as check_class expects.)
    students, path = class_with_inventory(tmp_path, 10)
    hosts = FakeHosts(students, hangs_wait=True)  # clusters still in progress at Ctrl-C
    out = tmp_path / "out"
    console, printed = plain_console()
    # Ctrl-C once a cluster is in progress (a hanging host's command has begun), not
    # after a fixed time: on a loaded machine 0.3 s could pass before the pool started.
    graded = threading.Event()

    def interrupt_when_in_progress() -> None:
        if hosts.hanging.wait(timeout=120) and not graded.is_set():
            _thread.interrupt_main()

    interrupter = threading.Thread(target=interrupt_when_in_progress, daemon=True)
    # interrupt_main() does nothing unless Python handles SIGINT. In a clean-clone CI run
    # on 3 xdist workers this test saw no KeyboardInterrupt twice on one worker (it passes
    # alone and on 2): the handler is set here for the test and put back after, and a
    # different one found is said, so the run shows what changed it.
    found = signal.signal(signal.SIGINT, signal.default_int_handler)
    if found is not signal.default_int_handler:
        print(f"the SIGINT handler was {found!r} before this test", file=sys.stderr)
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            grade_inventory(
                path,
                2,
                out,
                concurrency=2,
                # The hanging cluster in progress waits out its deadline before the run
                # ends; a short one proves that as well as DEADLINE. A healthy cluster
                # that runs out of it is an error row the next run grades again.
                host_deadline=CTRL_C_DEADLINE,
                console=console,
                transport_factory=hosts.factory,
            )
    finally:
        graded.set()
        hosts.hanging.set()  # ends the waiting thread if grading ended without a hang
        interrupter.join()
        signal.signal(signal.SIGINT, signal.SIG_DFL if found is None else found)
    table = rows(out)
    assert sorted(r["student"] for r in table) == sorted(s.student for s in students)
    cut = [r for r in table if "interrupted" in r["error"]]
    assert cut and all(r["status"] == "error" for r in cut)
    assert "finishing the" in printed.getvalue()
    # The next run grades the students the interrupted one did not reach. Its hanging
    # hosts need not wait out their deadlines again: no Ctrl-C comes now.
    hosts.hangs_wait = False
    grade_inventory(
        path,
        2,
        out,
        concurrency=8,
        host_deadline=DEADLINE,
        console=plain_console()[0],
        transport_factory=hosts.factory,
    )
    check_class(students, out, rubric)


def test_host_words_that_look_like_markup_are_shown_not_parsed(rubric: Rubric) -> None:
    # A host may answer '[/red]': rich must print it, not fail on a stray closing tag.
    said = "`hostname` answered garbage (rc 0: '[/red][bold]x')"
    grade = error_grade("s1", rubric, said)
    grade.flags.append(Flag("hostname", "node names without s1: [/bold]"))
    terminal = Console(file=io.StringIO(), force_terminal=True, width=200)
    with _Progress(terminal, 1) as progress:
        progress.advance(grade)
    terminal.print(score_table(grade))
    shown = terminal.file.getvalue()  # type: ignore[attr-defined]
    assert "[/red][bold]x" in shown and "[/bold]" in shown


@pytest.mark.parametrize(
    "damage",
    [
        {"total": "lots"},  # loads, but no output can show it
        {"items": [{"id": "hostnames"}]},  # an item without its fields
        {"flags": "x"},
    ],
)
def test_a_stored_grade_that_cannot_be_shown_is_graded_again(
    damage: dict[str, object], rubric: Rubric, tmp_path: Path
) -> None:
    students = live_class(2)
    path = write_inventory(
        tmp_path / "inventory.yaml", inventory(students, user="grader", key_env="KUBELAB_TEST_KEY")
    )
    out = tmp_path / "out"
    hosts = FakeHosts(students)

    def run() -> None:
        grade_inventory(
            path,
            2,
            out,
            concurrency=2,
            host_deadline=DEADLINE,
            console=plain_console()[0],
            transport_factory=hosts.factory,
        )

    run()
    stored = out / "results" / "s001.json"
    stored.write_text(json.dumps({**json.loads(stored.read_text()), **damage}))
    before = dict(hosts.calls)
    run()
    master = host_ips(1)[0]
    assert hosts.calls[master] > before[master]
    row = next(r for r in rows(out) if r["student"] == "s001")
    assert row["status"] == "graded"
    assert json.loads(stored.read_text())["total"] == float(row["total"])
