"""Hostile live hosts on real sshd (issue 14): one that streams without end, one whose host
key changes between runs, one whose cluster answers with names no output can show.

Each ends as its own row, with the reason; every other student is graded as the
rubric says; paramiko's tracebacks never reach the terminal; host keys are pinned
when the inventory says so and recorded (and a change flagged) when it does not.
"""

from __future__ import annotations

import io
import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from rich.console import Console

from kubelab.grade import live
from kubelab.grade.live import HOST_KEYS, MAX_OUTPUT, fingerprint, grade_inventory
from kubelab.grade.rubric import Rubric
from tests.grade.class_hosts import _reply, class_hosts, requirements
from tests.grade.classroom import expected_scores, reply_files
from tests.grade.live_class import LiveStudent, inventory, live_class, rows, write_inventory
from tests.support.netns_hosts import NetnsHosts

pytestmark = [pytest.mark.netns, pytest.mark.integration]

DEADLINE = 30.0
STREAMS, REKEYS, ODD_NAMES, STALLS = "s002", "s003", "s004", "s006"
HANGS = "s005"  # live_class's own: its master hangs after login
# s007's inventory entry lists s006's hosts (live_class's shared entry): it stalls too.
ERRORS = {STREAMS, HANGS, STALLS, "s007"}
ESC = "\x1b"
# The hanging host uses all of the `hostname` probe's timeout and the stalling ones all
# of the connect timeout (15 s and 10 s in live.py), in the run's longest slots. Shorter
# ones end them the same way, with the same words; still ample for a healthy host.
PROBE_TIMEOUT = CONNECT_TIMEOUT = 5.0


@pytest.fixture(autouse=True)
def _short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "PROBE_TIMEOUT", PROBE_TIMEOUT)
    monkeypatch.setattr(live, "CONNECT_TIMEOUT", CONNECT_TIMEOUT)


@pytest.fixture(scope="module")
def students() -> list[LiveStudent]:
    class_ = live_class(6)
    by_id = {s.student: s for s in class_}
    by_id[STREAMS].behavior = {"master": "stream"}
    by_id[STALLS].behavior = {"master": "stall"}  # TCP connects, no SSH banner comes
    return class_


@pytest.fixture(scope="module")
def hosts(
    students: list[LiveStudent], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NetnsHosts]:
    why = requirements()
    if why:
        pytest.skip(why)
    with class_hosts(students, name="hostile") as running:
        odd = next(s for s in students if s.student == ODD_NAMES)
        table = reply_files(odd.cluster, tmp_path_factory.mktemp("odd-replies"))
        for entry in table:
            if entry["args"] == "*get nodes -o json":
                doc = json.loads(Path(entry["file"]).read_text())
                for node in doc["items"]:
                    # A terminal title, a screen clear, and a name too long to show.
                    node["metadata"]["name"] += f"{ESC}]0;owned\a{ESC}[2J" + "x" * 5000
                Path(entry["file"]).write_text(json.dumps(doc))
        for node in odd.host_names:
            running.set_replies(node, [_reply(e, False) for e in table])
        yield running


def grade(hosts: NetnsHosts, inventory_file: Path, out: Path, **kwargs: Any) -> str:
    """Grade the class; what the teacher's terminal showed."""
    terminal = io.StringIO()
    console = Console(file=terminal, force_terminal=False, width=200)
    hosts.call_in_ns(
        grade_inventory,
        inventory_file,
        2,
        out,
        concurrency=4,
        host_deadline=DEADLINE,
        console=console,
        **kwargs,
    )
    return terminal.getvalue()


def host_fingerprint(hosts: NetnsHosts, node: str) -> str:
    key_file = hosts.host(node).dir / "ssh_host_ed25519_key"
    return fingerprint(paramiko.Ed25519Key.from_private_key_file(str(key_file)))


def by_student(out: Path) -> dict[str, dict[str, str]]:
    return {r["student"]: r for r in rows(out)}


def test_hostile_hosts_cost_only_their_own_row(
    hosts: NetnsHosts,
    students: list[LiveStudent],
    rubric: Rubric,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    path = write_inventory(
        tmp_path / "inventory.yaml", inventory(students, user=hosts.user, key_file=hosts.key_file)
    )
    out = tmp_path / "out"
    started = time.monotonic()
    terminal = grade(hosts, path, out)
    print(f"graded {len(students)} clusters, one streaming, in {time.monotonic() - started:.1f} s")
    table = by_student(out)
    assert len(table) == len(students)

    assert {s for s, row in table.items() if row["status"] == "error"} == ERRORS
    assert f"printed more than {MAX_OUTPUT} bytes" in table[STREAMS]["error"]
    # Which of the two paramiko reports depends on which of its equal timeouts fires first.
    assert "no SSH banner" in table[STALLS]["error"]
    assert f"within {CONNECT_TIMEOUT:g} s" in table[STALLS]["error"]
    assert "no answer to `hostname`" in table[HANGS]["error"]

    odd = table[ODD_NAMES]
    assert odd["status"] == "graded"
    for output in [p for p in out.rglob("*") if p.is_file() and "evidence" not in p.parts]:
        assert ESC not in output.read_text(encoding="utf-8"), output
    assert (out / "results" / f"{ODD_NAMES}.json").stat().st_size < 64 * 1024

    for s in students:
        if s.student not in {*ERRORS, ODD_NAMES}:
            want = expected_scores(rubric, s.cluster.variant)["total"]
            assert float(table[s.student]["total"]) == want

    # No pin: said once, and each host's key recorded in the student's evidence.
    assert terminal.count("no pinned host key") == 1
    recorded = json.loads((out / "evidence" / "s001" / HOST_KEYS).read_text())
    master, node = students[0].host_names
    assert recorded["master"]["fingerprint"] == host_fingerprint(hosts, master)
    assert recorded["node1"]["fingerprint"] == host_fingerprint(hosts, node)
    assert recorded["master"]["pinned"] is False
    assert "Traceback" not in capfd.readouterr().err
    # The outputs and the evidence taken are the teacher's only.
    for folder in (out, out / "evidence", out / "results", out / "feedback"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_a_changed_host_key_is_flagged_then_refused_when_pinned(
    hosts: NetnsHosts, students: list[LiveStudent], tmp_path: Path
) -> None:
    rekeyed = next(s for s in students if s.student == REKEYS)
    master = rekeyed.host_names[0]
    # Only the students this test reads: the class's hanging and stalling hosts would
    # each use a whole deadline in every one of the three runs, and prove nothing here
    # (test_hostile_hosts_cost_only_their_own_row grades them).
    read = [s for s in students if s.student in {"s001", REKEYS, ODD_NAMES}]
    data = inventory(read, user=hosts.user, key_file=hosts.key_file)
    path = write_inventory(tmp_path / "inventory.yaml", data)
    out = tmp_path / "out"
    grade(hosts, path, out)
    before = host_fingerprint(hosts, master)
    assert "host-key" not in by_student(out)[REKEYS]["flags"]

    hosts.new_host_key(master)
    after = host_fingerprint(hosts, master)
    assert after != before
    unchanged = read[0].host_names[0]
    read_before = len(hosts.host(unchanged).calls())
    grade(hosts, path, out, force=True)
    row = by_student(out)[REKEYS]
    assert row["status"] == "graded"
    assert "host-key: master" in row["flags"] and before in row["flags"] and after in row["flags"]
    # --force read every cluster again over SSH; a key that did not change is not flagged.
    assert len(hosts.host(unchanged).calls()) > read_before
    assert by_student(out)["s001"]["status"] == "graded"
    assert "host-key" not in by_student(out)["s001"]["flags"]

    # Pinned: the old key in the inventory refuses the host before any command runs;
    # the right one (or a known_hosts file holding it) is accepted.
    calls = len(hosts.host(master).calls())
    data["students"][REKEYS]["master"]["host_key"] = before
    first = read[0]
    known_hosts = tmp_path / "known_hosts"
    with known_hosts.open("w") as f:
        for node, address in zip(
            first.host_names, [h["host"] for h in _hosts(data, "s001")], strict=True
        ):
            public = (hosts.host(node).dir / "ssh_host_ed25519_key").read_bytes()
            key = paramiko.Ed25519Key.from_private_key(io.StringIO(public.decode()))
            f.write(f"{address} {key.get_name()} {key.get_base64()}\n")
    data["students"]["s001"]["master"]["known_hosts"] = str(known_hosts)
    data["students"]["s001"]["nodes"][0]["known_hosts"] = str(known_hosts)
    path = write_inventory(tmp_path / "pinned.yaml", data)
    terminal = grade(hosts, path, out, force=True)
    table = by_student(out)
    assert table[REKEYS]["status"] == "error"
    assert f"host key {after} is not the pinned {before}" in table[REKEYS]["error"]
    assert len(hosts.host(master).calls()) == calls
    assert table["s001"]["status"] == "graded"
    assert "no pinned host key" in terminal  # the other students are still unpinned


def _hosts(data: dict[str, Any], student: str) -> list[dict[str, Any]]:
    entry = data["students"][student]
    return [entry["master"], *entry["nodes"]]
