"""The SSH transport: parsing, quoting and timeouts, then real sshd hosts in a namespace.

Unit tests need no network. The others run against real OpenSSH sshd hosts at the lab
addresses 192.168.56.10-12 inside a network namespace of the test's own
(support/netns_hosts.py); every client connection is made from inside it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kubelab.errors import KubelabError
from kubelab.transport import (
    TIMEOUT_RC,
    CommandResult,
    SSHTarget,
    Transport,
    TransportError,
    command_line,
    remote_line,
    targets_from_ssh_config,
)
from tests.support.netns_hosts import (
    STUBS,
    NetnsHosts,
    Reply,
    fixture,
    missing_requirements,
    write_key,
)

F = TypeVar("F", bound=Callable[..., Any])
DATA = Path(__file__).parent / "data" / "transport"
LAB = {"master": "192.168.56.10", "node1": "192.168.56.11", "node2": "192.168.56.12"}
NODES_JSON = "nodes-kubeadm-v1.21.0-1cp-2workers-Ready.extract.json"
# Arguments a shell would mangle if quoting were wrong anywhere on the way.
NASTY_ARGS = [
    "two words",
    "it's",
    '"double"',
    "$(touch {marker})",
    "`touch {marker}`",
    "line one\nline two",
    "$HOME",
    "*",
    "",
    "-n",
    "tab\there",
    "back\\slash",
    "semi; touch {marker}",
    "unicode ✓",
    "'; touch {marker}; '",
]

_missing = missing_requirements()
IN_NETNS = [
    pytest.mark.integration,
    pytest.mark.netns,
    pytest.mark.skipif(_missing is not None, reason=f"real sshd hosts: {_missing}"),
]


def nasty_args(marker: Path) -> list[str]:
    return [arg.replace("{marker}", str(marker)) for arg in NASTY_ARGS]


def echoed(stdout: str) -> list[str]:
    """The arguments `printf '%s\\0'` printed, one per NUL."""
    return stdout.split("\0")[:-1]


# -- vagrant ssh-config and inventories ------------------------------------------


def test_targets_from_vagrant_ssh_config() -> None:
    targets = targets_from_ssh_config((DATA / "vagrant-ssh-config.txt").read_text())

    assert list(targets) == ["master", "node1", "node2"]
    master = targets["master"]
    assert (master.host, master.port, master.user) == ("192.168.121.47", 22, "vagrant")
    assert master.key_file == Path(
        "/home/student/kubelab/.lab/.vagrant/machines/master/libvirt/private_key"
    )
    assert targets["node2"].host == "192.168.121.92"


def test_ssh_config_identity_file_with_spaces_is_unquoted() -> None:
    targets = targets_from_ssh_config((DATA / "vagrant-ssh-config-spaces.txt").read_text())

    assert targets["node1"].key_file == Path(
        "/home/Jane Doe/kubelab/.lab/.vagrant/machines/node1/libvirt/private_key"
    )


def test_ssh_config_of_vagrant_2_4_keeps_every_key_in_order() -> None:
    # insert_key = false: Vagrant 2.4 lists its ed25519 insecure key first.
    targets = targets_from_ssh_config((DATA / "vagrant-2.4-ssh-config-insecure.txt").read_text())

    keys = Path("/home/student/.vagrant.d/insecure_private_keys")
    assert targets["master"].key_files == (keys / "vagrant.key.ed25519", keys / "vagrant.key.rsa")
    assert targets["node2"].key_file == keys / "vagrant.key.ed25519"


def test_every_command_gets_the_sbin_path_whatever_sshd_gives() -> None:
    # CentOS 7's sshd: a non-login command gets PATH=/usr/local/bin:/usr/bin, and ip,
    # sysctl and modprobe are in /usr/sbin there.
    found = subprocess.run(
        ["sh", "-c", remote_line("command -v sysctl ip", timeout=10)],
        env={"PATH": "/usr/local/bin:/usr/bin", "SHELL": "/bin/sh"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0, found.stderr
    assert all("/sbin/" in line or line.startswith("/usr/bin/") for line in found.stdout.split())


def test_ssh_config_without_machines_is_an_error() -> None:
    with pytest.raises(KubelabError, match="no machine"):
        targets_from_ssh_config("")


# -- the command line: quoting in one place, timeout(1), sudo --------------------


def test_command_line_quotes_arguments_not_the_command() -> None:
    line = command_line("kubectl get", "pods", "-l", "app=web server")

    assert line == "kubectl get pods -l 'app=web server'"


def run_locally(line: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """What the login shell on a VM does with the line sent to sshd (no network)."""
    env = {"PATH": f"{STUBS}:{os.environ['PATH']}", "SHELL": "/bin/bash", "HOME": str(tmp_path)}
    return subprocess.run(
        ["bash", "-c", line], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=30
    )


@pytest.mark.parametrize("sudo", [False, True], ids=["plain", "sudo"])
def test_remote_line_keeps_every_argument_verbatim(tmp_path: Path, sudo: bool) -> None:
    marker = tmp_path / "pwned"
    args = nasty_args(marker)

    done = run_locally(
        remote_line(command_line("printf '%s\\0'", *args), timeout=20, sudo=sudo), tmp_path
    )

    assert done.returncode == 0, done.stderr
    assert echoed(done.stdout) == args
    assert not marker.exists()


def test_remote_line_stops_the_command_at_its_timeout(tmp_path: Path) -> None:
    started = time.monotonic()
    done = run_locally(remote_line(command_line("sleep", 30), timeout=0.3), tmp_path)

    assert done.returncode == TIMEOUT_RC
    assert time.monotonic() - started < 10


def test_remote_line_rejects_a_timeout_that_means_forever() -> None:
    with pytest.raises(ValueError):
        remote_line("true", timeout=0)


# -- real sshd hosts ---------------------------------------------------------------


@pytest.fixture
def lab() -> Iterator[NetnsHosts]:
    """master, node1 and node2 at their lab addresses, in a namespace of the test's own."""
    with NetnsHosts("transport", list(LAB.values()), names=list(LAB)) as hosts:
        yield hosts


def transport_for(hosts: NetnsHosts) -> Transport:
    return Transport(hosts.targets(), connect_timeout=5)


def netns_test(fn: F) -> F:
    """Marks a test that runs against real sshd hosts (root, sshd, network namespaces)."""
    for mark in IN_NETNS:
        fn = mark(fn)
    return fn


@netns_test
def test_one_connection_per_node_across_many_commands(lab: NetnsHosts) -> None:
    def body() -> tuple[list[tuple[str, str]], int]:
        with transport_for(lab) as transport, ThreadPoolExecutor(max_workers=6) as pool:
            nodes = [list(LAB)[i % 3] for i in range(30)]
            results = list(pool.map(lambda n: transport.run(n, "hostname"), nodes))
            return [(r.node, r.stdout.strip()) for r in results], transport.connections_opened

    answered, opened = lab.call_in_ns(body)

    assert opened == 3
    assert len(answered) == 30
    assert all(node == hostname for node, hostname in answered)  # each reached its own host


@netns_test
def test_arguments_arrive_verbatim(lab: NetnsHosts) -> None:
    marker = lab.root / "home" / "pwned"
    args = nasty_args(marker)

    def body() -> list[list[str]]:
        with transport_for(lab) as transport:
            return [
                echoed(transport.run("node1", "printf '%s\\0'", *args, sudo=sudo).stdout)
                for sudo in (False, True)
            ]

    plain, through_sudo = lab.call_in_ns(body)

    assert plain == args
    assert through_sudo == args
    assert not marker.exists()


@netns_test
def test_failures_come_back_as_results(lab: NetnsHosts) -> None:
    lab.set_replies(
        "master",
        [
            Reply("get nodes -o json", file=fixture(NODES_JSON)),
            Reply("apply -f -", text="namespace/kubelab-verify created\n"),
            Reply("get pods -n kube-system", rc=1, stderr="a failure chosen by the test\n"),
        ],
    )
    manifest = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: kubelab-verify\n"

    def body() -> dict[str, CommandResult]:
        with transport_for(lab) as transport:
            return {
                "failed": transport.run("master", "sh -c", "echo out; echo err >&2; exit 3"),
                "nodes": transport.run("master", "kubectl", "get", "nodes", "-o", "json"),
                "applied": transport.run("master", "kubectl", "apply", "-f", "-", stdin=manifest),
                "kubectl_failed": transport.run(
                    "master", "kubectl", "get", "pods", "-n", "kube-system"
                ),
                "unknown": transport.run("master", "kubectl", "get", "pods"),
                "binary": transport.run("master", "printf", "ok\\377\\376"),
                "stdin": transport.run("master", "cat", stdin=b"from stdin\n"),
            }

    results = lab.call_in_ns(body)

    failed = results["failed"]
    assert (failed.rc, failed.stdout, failed.stderr, failed.ok) == (3, "out\n", "err\n", False)
    assert results["nodes"].ok
    assert results["nodes"].stdout == fixture(NODES_JSON).read_text()
    assert results["applied"].ok
    assert (results["kubectl_failed"].rc, results["kubectl_failed"].stderr) == (
        1,
        "a failure chosen by the test\n",
    )
    assert results["unknown"].rc == 1 and "get pods" in results["unknown"].stderr
    assert results["binary"].stdout == "ok\ufffd\ufffd"
    assert results["stdin"].stdout == "from stdin\n"
    records = lab.host("master").call_records()
    assert [r["argv"][1:3] for r in records] == [
        ["get", "nodes"],
        ["apply", "-f"],
        ["get", "pods"],
        ["get", "pods"],
    ]
    assert records[1]["stdin"] == manifest


@netns_test
def test_timeout_returns_124_and_the_connection_keeps_working(lab: NetnsHosts) -> None:
    def body() -> tuple[CommandResult, CommandResult, int]:
        with transport_for(lab) as transport:
            stopped = transport.run("node1", "sleep", "300", timeout=1)
            after = transport.run("node1", "echo", "still here")
            return stopped, after, transport.connections_opened

    stopped, after, opened = lab.call_in_ns(body)

    assert (stopped.rc, stopped.timed_out, stopped.ok) == (TIMEOUT_RC, True, False)
    assert stopped.duration < 10
    assert after.ok and after.stdout == "still here\n"
    assert opened == 1
    # timeout(1) on the host stopped the command; nothing is left behind on the "VM".
    deadline = time.monotonic() + 5
    while any(argv[:2] == ["sleep", "300"] for argv in lab.processes()):
        assert time.monotonic() < deadline, "the timed-out command still runs on the host"
        time.sleep(0.1)


@netns_test
def test_a_host_that_hangs_after_login_times_out_and_recovers(lab: NetnsHosts) -> None:
    lab.set_behavior("node2", "hang")

    def body() -> tuple[CommandResult, CommandResult, int]:
        with transport_for(lab) as transport:
            hung = transport.run("node2", "true", timeout=1)
            lab.set_behavior("node2", "ok")
            after = transport.run("node2", "true")
            return hung, after, transport.connections_opened

    hung, after, opened = lab.call_in_ns(body)

    assert (hung.rc, hung.timed_out) == (TIMEOUT_RC, True)
    assert after.ok
    assert opened == 1


@netns_test
def test_put_writes_a_file(lab: NetnsHosts) -> None:
    folder = lab.root / "home" / "uploads"
    data = bytes(range(256)) * 64

    def body() -> None:
        with transport_for(lab) as transport:
            assert transport.run("master", "mkdir", folder).ok
            transport.put("master", data, str(folder / "blob.bin"), 0o640)
            assert (folder / "blob.bin").read_bytes() == data
            transport.put("master", b"again\n", str(folder / "blob.bin"), 0o600)
            transport.put("master", b"#!/bin/sh\n", str(folder / "script.sh"), 0o755)
            with pytest.raises(KubelabError, match="could not write /proc/nope"):
                transport.put("master", b"x", "/proc/nope")
            assert transport.connections_opened == 1

    lab.call_in_ns(body)

    assert (folder / "blob.bin").read_bytes() == b"again\n"
    assert (folder / "blob.bin").stat().st_mode & 0o777 == 0o600
    assert (folder / "script.sh").stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in folder.iterdir()) == ["blob.bin", "script.sh"]  # no temp files


@netns_test
def test_large_input_and_output_move_together(
    lab: NetnsHosts, capsys: pytest.CaptureFixture[str]
) -> None:
    # cat answers while it reads: far more than the SSH windows and pipes hold at once.
    text = base64.b64encode(os.urandom(6 * 1024 * 1024)).decode()
    blob = os.urandom(24 * 1024 * 1024)
    target = lab.root / "home" / "big.bin"

    def body() -> tuple[CommandResult, float]:
        with transport_for(lab) as transport:
            echoed_back = transport.run("node1", "cat", stdin=text, timeout=120)
            started = time.perf_counter()
            transport.put("node1", blob, str(target))
            return echoed_back, time.perf_counter() - started

    echoed_back, put_seconds = lab.call_in_ns(body)

    assert echoed_back.ok and echoed_back.stdout == text
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(blob).digest()
    with capsys.disabled():
        print(
            f"\n[transport put] {len(blob) >> 20} MiB in {put_seconds:.2f} s "
            f"({len(blob) / put_seconds / 1e6:.0f} MB/s)"
        )


@netns_test
def test_a_background_process_holding_stdout_does_not_hold_the_command(lab: NetnsHosts) -> None:
    def body() -> CommandResult:
        with transport_for(lab) as transport:
            return transport.run("master", "sh -c", "sleep 60 & echo started", timeout=30)

    result = lab.call_in_ns(body)

    assert result.ok and result.stdout == "started\n"
    assert result.duration < 10


@netns_test
def test_a_garbage_host_answers_and_the_transport_passes_it_on(lab: NetnsHosts) -> None:
    lab.set_behavior("node1", "garbage")

    def body() -> CommandResult:
        with transport_for(lab) as transport:
            return transport.run("node1", "kubectl", "get", "nodes", "-o", "json")

    result = lab.call_in_ns(body)

    assert result.ok  # judging the answer is the caller's job
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout)


@netns_test
def test_refused_address_raises_naming_node_and_address() -> None:
    with NetnsHosts(
        "refuse", list(LAB.values()), names=list(LAB), behaviors={"node2": "refuse"}
    ) as hosts:

        def body() -> tuple[str, str, bool]:
            with transport_for(hosts) as transport:
                with pytest.raises(TransportError) as caught:
                    transport.run("node2", "true")
                return (
                    str(caught.value.message),
                    caught.value.hint,
                    transport.run("node1", "true").ok,
                )

        message, hint, others_fine = hosts.call_in_ns(body)

    assert "node2" in message and "192.168.56.12" in message and "refused" in message
    assert hint
    assert others_fine


@netns_test
def test_connection_dropped_mid_output_raises_then_reconnects(lab: NetnsHosts) -> None:
    lab.set_replies("node1", [Reply("get nodes -o json", file=fixture(NODES_JSON), drop_after=300)])

    def body() -> tuple[str, CommandResult, int]:
        with transport_for(lab) as transport:
            assert transport.run("node1", "true").ok
            with pytest.raises(TransportError) as caught:
                transport.run("node1", "kubectl", "get", "nodes", "-o", "json")
            after = transport.run("node1", "echo", "back")
            return caught.value.message, after, transport.connections_opened

    message, after, opened = lab.call_in_ns(body)

    assert "node1" in message and "192.168.56.11" in message
    assert "connection lost" in message and "kubectl get nodes" in message
    assert after.ok and after.stdout == "back\n"
    assert opened == 2  # the dropped connection was replaced


@netns_test
def test_a_host_that_drops_every_session_raises(lab: NetnsHosts) -> None:
    lab.set_behavior("master", "drop")

    def body() -> str:
        with transport_for(lab) as transport, pytest.raises(TransportError) as caught:
            transport.run("master", "cat", "/etc/hostname")
        return caught.value.message

    assert "master" in lab.call_in_ns(body)


@netns_test
def test_login_failures_and_unreachable_addresses_raise(
    lab: NetnsHosts, monkeypatch: pytest.MonkeyPatch
) -> None:
    stranger = lab.root / "stranger_key"
    write_key(stranger)
    monkeypatch.setenv("KUBELAB_TEST_KEY", lab.key_file.read_text())
    good = lab.targets()["master"]
    targets = {
        "wrong-key": SSHTarget("wrong-key", good.host, good.port, good.user, stranger),
        "env-key": SSHTarget(
            "env-key", good.host, good.port, good.user, key_env="KUBELAB_TEST_KEY"
        ),
        "no-route": SSHTarget("no-route", "192.168.57.1", 22, good.user, lab.key_file),
        "missing-key": SSHTarget("missing-key", good.host, 22, good.user, lab.root / "absent"),
    }

    def body() -> dict[str, str]:
        outcome = {}
        with Transport(targets, connect_timeout=3) as transport:
            for name in targets:
                try:
                    outcome[name] = "ok" if transport.run(name, "true").ok else "failed"
                except TransportError as exc:
                    outcome[name] = exc.message
        return outcome

    outcome = lab.call_in_ns(body)

    assert "login refused" in outcome["wrong-key"]
    assert outcome["env-key"] == "ok"
    assert "192.168.57.1" in outcome["no-route"] and "unreachable" in outcome["no-route"]
    assert "cannot read SSH key" in outcome["missing-key"]


@netns_test
def test_sbin_tools_run_under_the_path_sshd_gives_a_plain_command(lab: NetnsHosts) -> None:
    # Debian's sshd, like CentOS 7's, gives /usr/local/bin:/usr/bin:/bin: no sbin.
    def body() -> tuple[str, str]:
        with transport_for(lab) as transport:
            bare = transport.run("master", "printenv PATH")
            sysctl = transport.run("master", "sysctl", "-n", "kernel.ostype")
            return bare.stdout, sysctl.stdout

    path, ostype = lab.call_in_ns(body)
    assert "/usr/sbin" in path.split(":")
    assert ostype.strip() == "Linux"


@netns_test
def test_a_refused_first_key_falls_through_to_the_next(lab: NetnsHosts) -> None:
    # Vagrant 2.4 with insert_key = false offers its ed25519 insecure key first; the
    # centos/7 box (2020) trusts only the RSA one. OpenSSH then tries the next key.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_file = lab.root / "vagrant.key.rsa"
    rsa_file.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    rsa_file.chmod(0o600)
    ed25519_file = lab.root / "vagrant.key.ed25519"
    write_key(ed25519_file)  # a key the host does not trust
    authorized = lab.root / "authorized_keys"
    trusted = authorized.read_text()
    public = rsa_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    authorized.write_text(public.decode() + "\n")
    good = lab.targets()["master"]
    both = SSHTarget(
        "master", good.host, good.port, good.user, ed25519_file, more_key_files=(rsa_file,)
    )
    missing_first = SSHTarget(
        "master",
        good.host,
        good.port,
        good.user,
        lab.root / "no-such-key",
        more_key_files=(rsa_file,),
    )
    only_first = SSHTarget("master", good.host, good.port, good.user, ed25519_file)

    def body(target: SSHTarget) -> str:
        try:
            with Transport({"master": target}, connect_timeout=5) as transport:
                return transport.run("master", "echo", "in").stdout.strip()
        except TransportError as exc:
            return exc.message

    try:
        assert lab.call_in_ns(lambda: body(both)) == "in"
        assert lab.call_in_ns(lambda: body(missing_first)) == "in"
        assert "login refused" in lab.call_in_ns(lambda: body(only_first))
    finally:
        authorized.write_text(trusted)


@netns_test
def test_a_host_that_never_greets_times_out_at_connect(lab: NetnsHosts) -> None:
    lab.set_behavior("node2", "stall")

    def body() -> tuple[str, float, bool]:
        with Transport(lab.targets(), connect_timeout=2) as transport:
            started = time.monotonic()
            with pytest.raises(TransportError) as caught:
                transport.run("node2", "true")
            waited = time.monotonic() - started
            return caught.value.message, waited, transport.run("master", "true").ok

    message, waited, others_fine = lab.call_in_ns(body)

    assert "node2" in message and "192.168.56.12" in message and "handshake" in message
    assert waited < 30  # bounded by connect_timeout, not by the host
    assert others_fine


@netns_test
def test_vagrant_format_ssh_config_drives_the_transport(lab: NetnsHosts) -> None:
    text = lab.ssh_config_text()
    vagrant_printed = (DATA / "vagrant-ssh-config.txt").read_text()
    # Same lines in the same order as vagrant's own output, values aside.
    assert [line.split()[0] for line in text.splitlines() if line] == [
        line.split()[0] for line in vagrant_printed.splitlines() if line
    ]

    def body() -> list[str]:
        with Transport(targets_from_ssh_config(text), connect_timeout=5) as transport:
            return [
                transport.run(node, "cat", "/etc/hostname").stdout.strip()
                for node in transport.targets
            ]

    assert lab.call_in_ns(body) == list(LAB)


@netns_test
@pytest.mark.skipif(missing_requirements(nginx=True) is not None, reason="nginx-light is missing")
def test_nginx_serves_the_welcome_page_on_pod_addresses(lab: NetnsHosts) -> None:
    pod_ip = "10.244.1.2"
    lab.start_nginx(pod_ip)
    curl = ["curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}", f"http://{pod_ip}/"]

    def body() -> tuple[CommandResult, CommandResult]:
        with transport_for(lab) as transport:
            served = transport.run("node1", *curl)
            lab.stop_nginx(pod_ip)
            stopped = transport.run("node1", *curl)
            return served, stopped

    served, stopped = lab.call_in_ns(body)

    page, _, status = served.stdout.rpartition("\n")
    welcome = fixture("nginx-1.21.2-to-1.29.5-welcome-index.html").read_text()
    assert (status, page) == ("200", welcome)
    assert stopped.rc == 7  # curl: could not connect


# Three times the pool's 16 threads: every thread takes several hosts in turn. A class's
# 100 hosts are bench.grade's figure.
SMOKE_HOSTS = 48


@netns_test
def test_many_hosts_through_a_bounded_pool(capsys: pytest.CaptureFixture[str]) -> None:
    addresses = [f"10.99.{i // 200}.{i % 200 + 1}" for i in range(SMOKE_HOSTS)]
    started = time.perf_counter()
    with NetnsHosts("smoke", addresses, prefix=16) as hosts:
        up = time.perf_counter() - started

        def body() -> tuple[dict[str, str], int, float]:
            begun = time.perf_counter()
            with transport_for(hosts) as transport, ThreadPoolExecutor(max_workers=16) as pool:
                results = list(pool.map(lambda n: transport.run(n, "hostname"), transport.targets))
                answers = {r.node: r.stdout.strip() for r in results if r.ok}
                return answers, transport.connections_opened, time.perf_counter() - begun

        answers, opened, wall = hosts.call_in_ns(body)
        expected = {name: name for name in hosts.hosts}
    total = time.perf_counter() - started

    assert answers == expected
    assert opened == SMOKE_HOSTS
    with capsys.disabled():
        print(
            f"\n[{SMOKE_HOSTS} sshd hosts] harness up in {up:.1f} s; connect + one command "
            f"each through 16 threads: {wall:.2f} s; with teardown: {total:.1f} s"
        )
