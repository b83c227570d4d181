"""Exercise 1's checks over the node-prep probe's output: one part per node, with reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubelab.verify.checks import CHECKS, evaluate
from kubelab.verify.evidence import node_prep_path
from kubelab.verify.expect import NODE_PREP, Expected

DATA = Path(__file__).resolve().parents[1] / "data" / "verify" / "node-prep"
PREP_CHECKS = [c.id for c in CHECKS if c.phase == NODE_PREP]
STUDENT = "2023001"
LAB = (
    ("master", "master", "192.168.56.10"),
    ("node1", "node", "192.168.56.11"),
    ("node2", "node", "192.168.56.12"),
)


def expected(student: str = STUDENT) -> Expected:
    return Expected(
        nodes=LAB,
        kubernetes_version="1.31.13",
        pod_cidr="10.244.0.0/16",
        student_id=student,
        phases=(NODE_PREP,),
    )


def folder(tmp_path: Path, files: dict[str, str]) -> Path:
    """An evidence folder holding each machine's probe output (text, or a data file name)."""
    root = tmp_path / "evidence"
    for machine, text in files.items():
        path = root / node_prep_path(machine)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def prepared() -> dict[str, str]:
    return {m: (DATA / f"prepared-{m}.txt").read_text() for m, _, _ in LAB}


def edit(text: str, **changes: str) -> str:
    """The probe output with some keys set to other values (dots as __ in the names)."""
    lines = dict(line.split("=", 1) for line in text.splitlines())
    for key, value in changes.items():
        lines[key.replace("__", ".")] = value
    return "\n".join(f"{k}={v}" for k, v in lines.items()) + "\n"


def by_id(tmp_path: Path, files: dict[str, str], student: str = STUDENT) -> dict:
    return {r.id: r for r in evaluate(folder(tmp_path, files), expected(student))}


def test_prepared_nodes_pass_every_check_with_a_part_per_node(tmp_path: Path) -> None:
    results = by_id(tmp_path, prepared())
    assert list(results) == PREP_CHECKS
    for result in results.values():
        assert result.passed, (result.id, result.detail)
        assert [(p.subject, p.ok) for p in result.parts] == [(m, True) for m, _, _ in LAB]


def test_a_fresh_box_fails_every_check_with_its_reason(tmp_path: Path) -> None:
    fresh = (DATA / "fresh-centos7.txt").read_text()
    results = by_id(tmp_path, {**prepared(), "master": fresh})
    assert [r.id for r in results.values() if r.passed] == []
    master = {r.id: r.parts[0] for r in results.values()}
    assert all(p.subject == "master" and not p.ok for p in master.values())
    assert "swap is on now" in master["swap"].why and "/etc/fstab" in master["swap"].why
    assert "br_netfilter is not loaded" in master["kernel-modules"].why
    assert "net.ipv4.ip_forward is 0 now" in master["sysctls"].why
    assert "SELinux is enforcing now" in master["selinux"].why
    assert "6443/tcp" in master["firewall"].why
    assert "not synchronised (no)" in master["time-sync"].why
    assert "hostname master does not carry 2023001" in master["hostname"].why
    # The other nodes cannot resolve the master's name: their rows say so.
    assert results["name-resolution"].parts[1].why == "master does not resolve"
    # master's own name resolves to Vagrant's loopback line first.
    assert "master resolves to 127.0.1.1" in master["name-resolution"].why
    for result in results.values():
        assert result.hint, result.id


def test_one_failing_part_leaves_the_other_nodes_ok(tmp_path: Path) -> None:
    files = prepared()
    files["node2"] = edit(files["node2"], fstab_swap="1")
    swap = by_id(tmp_path, files)["swap"]
    assert not swap.passed
    assert [(p.subject, p.ok) for p in swap.parts] == [
        ("master", True),
        ("node1", True),
        ("node2", False),
    ]
    assert swap.parts[2].why == "/etc/fstab still mounts swap at boot"


@pytest.mark.parametrize(
    ("ports", "closed"),
    [
        ("6443/tcp 2379-2380/tcp 10250/tcp 10257/tcp 10259/tcp 30000-32767/tcp 8472/udp", ""),
        ("6443/tcp 2379-2381/tcp 10250-10260/tcp 30000-32767/tcp 8472/udp", ""),
        (
            "6443/tcp 2379/tcp 10250/tcp 10257/tcp 10259/tcp 30000/tcp 8472/tcp",
            "2379-2380/tcp, 30000-32767/tcp, 8472/udp",
        ),
    ],
)
def test_firewalld_may_run_when_the_chapters_ports_are_open(
    tmp_path: Path, ports: str, closed: str
) -> None:
    files = prepared()
    files["master"] = edit(files["master"], firewalld="active", firewalld_ports=ports)
    firewall = by_id(tmp_path, files)["firewall"]
    assert firewall.passed == (not closed)
    if closed:
        assert firewall.parts[0].why == f"firewalld runs and does not open {closed}"


def test_sysctls_set_now_but_not_at_boot_fail(tmp_path: Path) -> None:
    files = prepared()
    files["node1"] = edit(files["node1"], sysctl_boot__net__ipv4__ip_forward="unset")
    part = by_id(tmp_path, files)["sysctls"].parts[1]
    assert (part.subject, part.ok) == ("node1", False)
    assert part.why == "net.ipv4.ip_forward is unset at boot (/etc/sysctl.d)"


def test_no_selinux_at_all_passes(tmp_path: Path) -> None:
    files = prepared()
    files["node1"] = edit(files["node1"], selinux_now="absent", selinux_boot="")
    assert by_id(tmp_path, files)["selinux"].passed


def test_hostname_needs_a_student_id(tmp_path: Path) -> None:
    hostname = by_id(tmp_path, prepared(), student="")["hostname"]
    assert not hostname.passed
    assert hostname.parts[0].why == "no student ID to look for (give --student ID)"


def test_a_node_without_probe_output_fails_only_its_own_parts(tmp_path: Path) -> None:
    files = prepared()
    del files["node1"]
    results = by_id(tmp_path, files)
    for result in results.values():
        assert [p.ok for p in result.parts][::2] == [True, True], result.id
        assert not result.parts[1].ok and "no evidence" in result.parts[1].why


def test_hostile_probe_output_is_capped(tmp_path: Path) -> None:
    files = prepared()
    files["master"] = edit(files["master"], hostname="x" * 100_000) + "junk\n" * 10_000
    hostname = by_id(tmp_path, files)["hostname"]
    assert not hostname.parts[0].ok
    assert len(hostname.parts[0].why) < 700
