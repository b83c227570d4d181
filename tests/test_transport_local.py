"""The transport's LocalTarget: a command on this machine, with the SSH targets' contract.

Real processes in /bin/sh, no network: quoting, stdin, exit codes, the deadline (the
command and what it started are stopped), the output cap, a death by signal.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from kubelab.transport import TIMEOUT_RC, LocalTarget, Transport, TransportError, command_line
from tests.test_transport import echoed, nasty_args

HOST = "host"


@pytest.fixture
def transport() -> Transport:
    return Transport({HOST: LocalTarget(HOST)})


def test_arguments_arrive_as_given(transport: Transport, tmp_path: Path) -> None:
    marker = tmp_path / "touched"
    args = nasty_args(marker)
    result = transport.run(HOST, "printf '%s\\0'", *args)
    assert result.ok, result.stderr
    assert echoed(result.stdout) == args
    assert result.command == command_line("printf '%s\\0'", *args)
    assert not marker.exists()  # no argument was run by a shell
    assert transport.connections_opened == 0


def test_stdin_reaches_the_command_whole(transport: Transport) -> None:
    # More than a pipe holds (64 KiB): input and output must move together.
    data = os.urandom(3 * 1024 * 1024)
    result = transport.run(HOST, "sha256sum", stdin=data)
    assert result.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    echoed_back = transport.run(HOST, "cat", stdin="line one\nline two\n")
    assert echoed_back.stdout == "line one\nline two\n"


def test_a_command_that_ignores_its_stdin(transport: Transport) -> None:
    result = transport.run(HOST, "true", stdin=b"x" * (1024 * 1024))
    assert (result.rc, result.timed_out) == (0, False)


def test_exit_code_and_stderr(transport: Transport) -> None:
    result = transport.run(HOST, "sh -c", "echo out; echo err >&2; exit 3")
    assert (result.rc, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.ok


def test_the_deadline_stops_the_command_and_what_it_started(
    transport: Transport, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child"
    script = f"sleep 300 & echo $! > {pid_file}; wait"
    result = transport.run(HOST, "sh -c", script, timeout=1)
    assert (result.rc, result.timed_out) == (TIMEOUT_RC, True)
    child = int(pid_file.read_text())
    # SIGKILL was sent to its session; on a busy machine it takes a moment to land.
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_a_command_that_ignores_term_is_killed(transport: Transport) -> None:
    result = transport.run(HOST, "sh -c", "trap '' TERM; echo started; sleep 300", timeout=1)
    assert (result.rc, result.timed_out, result.stdout) == (TIMEOUT_RC, True, "started\n")


def test_a_background_process_holding_stdout_does_not_hold_the_result(
    transport: Transport,
) -> None:
    # It inherits stdout and outlives the command: the result comes without it.
    result = transport.run(HOST, "sh -c", "sleep 5 & echo done", timeout=60)
    assert (result.rc, result.timed_out, result.stdout) == (0, False, "done\n")


def test_killed_by_a_signal_has_no_exit_status(transport: Transport) -> None:
    result = transport.run(HOST, "kill -9 $$")  # the shell that runs the line
    assert (result.rc, result.timed_out) == (-1, False)


def test_output_past_the_cap_stops_the_command() -> None:
    capped = Transport({HOST: LocalTarget(HOST)}, max_output=100_000)
    with pytest.raises(TransportError, match="printed more than 100000 bytes"):
        capped.run(HOST, "yes", timeout=30)


def test_an_unknown_node(transport: Transport) -> None:
    with pytest.raises(TransportError, match="no SSH target for node 'master'"):
        transport.run("master", "true")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: its parent (the killed shell's session) was not us.
    stat = Path(f"/proc/{pid}/stat")
    return stat.is_file() and stat.read_text().split(")")[-1].split()[0] != "Z"
