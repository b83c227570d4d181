"""Exercise 1 on the real VMs, the way a student goes through it with `invoke lab`.

Last in the session (after destroy): a fresh exercise lab of two VMs for student
2023001 (tests/data/e2e/exercise.yaml). The lab has its own SSH key (`ssh.insert_key`):
kubelab logs in with the key Vagrant made, and Vagrant's insecure key is refused. The
checks fail at the start (plain hostnames, nothing prepared) and pass once the
solution stage ran; the grade then voids every item, naming the stage `--solve`
applied. A reset by snapshot takes the lab back to its start: a file made after it
and the solution's marker are gone. The reset time is printed next to the time
the start state took to make (a benchmark figure, not an assert).

The lab network has no NTP server, so chrony cannot synchronise: time-sync is the
one check that cannot pass here, before or after the solution.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kubelab.grade.grading import StudentGrade, grade_evidence
from kubelab.grade.rubric import load_rubric
from kubelab.labs import STATE_NAME
from kubelab.transport import targets_from_ssh_config
from tests.e2e.lab import BOX_NAME, FIGURES, E2ELab

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.incremental]

STUDENT = "2023001"
NODES = ("master", "node1")  # tests/data/e2e/exercise.yaml
NO_NTP_HERE = {"time-sync"}
PREP_CHECKS = {
    "hostname",
    "name-resolution",
    "time-sync",
    "firewall",
    "selinux",
    "swap",
    "kernel-modules",
    "sysctls",
}
BROKEN = "/root/kubelab-broken-after-the-start"


@pytest.fixture(scope="module")
def config(e2e_lab: E2ELab, local_repo: Path) -> Path:
    return e2e_lab.config("prepare", "exercise")  # carries the local packages `--solve` installs


def lab(e2e_lab: E2ELab, config: Path, *args: str, timeout: float = 2400):
    return e2e_lab.invoke("lab", *args, "--box", BOX_NAME, config=config, timeout=timeout)


def verify_results(
    e2e_lab: E2ELab, config: Path, name: str
) -> tuple[dict[str, bool], StudentGrade]:
    """`invoke verify --exercise 1` (student remembered): check id -> passed, the grade
    of its evidence (as a teacher's re-grade makes it)."""
    report = e2e_lab.lab_dir / f"{name}.json"
    out = e2e_lab.lab_dir / "evidence" / name
    run = e2e_lab.invoke(
        "verify", "--exercise", "1", "--json", str(report), "--evidence-out", str(out),
        config=config,
    )  # fmt: skip
    assert report.is_file(), run
    results = {r["id"]: r["passed"] for r in json.loads(report.read_text())["results"]}
    assert (e2e_lab.lab_dir / f"kubelab-ex1-{STUDENT}.tar.gz").is_file(), run
    return results, grade_evidence(out, STUDENT, load_rubric(1))


def test_the_exercise_starts_with_bare_vms_and_a_snapshot(e2e_lab: E2ELab, config: Path) -> None:
    started = lab(e2e_lab, config, "--exercise", "1", "--student", STUDENT)
    assert started.rc == 0, started
    FIGURES["invoke lab --exercise 1: boot 2 VMs to the start state + snapshot (wall)"] = (
        f"{started.seconds:.0f} s"
    )
    assert "exercise 1: Node preparation" in started.output
    assert f"invoke verify --exercise 1 --student {STUDENT}" in started.output
    assert "--solve" not in started.output and "invoke up" not in started.output
    state = json.loads((e2e_lab.lab_dir / STATE_NAME).read_text())
    assert state["student"] == STUDENT and state["snapshot"] == "kubelab-exercise-1-start"
    hostnames = e2e_lab.run_on(NODES, "hostname")
    assert {n: r.stdout.strip() for n, r in hostnames.items()} == {n: n for n in NODES}


def test_the_lab_has_its_own_key_and_refuses_the_insecure_one(e2e_lab: E2ELab) -> None:
    shown = e2e_lab.ssh_config(["master"])
    target = targets_from_ssh_config(shown)["master"]
    own_key = e2e_lab.lab_dir / ".vagrant/machines/master/libvirt/private_key"
    assert target.key_files == (own_key,)
    insecure = e2e_lab.netns.vagrant_home / "insecure_private_key"
    assert insecure.is_file()
    assert e2e_lab.login(shown) == "in"
    assert "login refused" in e2e_lab.login(shown.replace(str(target.key_file), str(insecure)))


def test_checks_fail_before_the_solution(e2e_lab: E2ELab, config: Path) -> None:
    check = lab(e2e_lab, config, "--check")
    assert check.rc == 0, check
    assert re.search(r"steps done", check.output), check
    results, grade = verify_results(e2e_lab, config, "before")
    assert set(results) == PREP_CHECKS
    assert not results["hostname"] and not results["kernel-modules"], results
    assert grade.total is not None and grade.total < 100
    assert not [i for i in grade.items if i.voided]


def test_solve_warns_then_the_checks_pass_and_the_grade_is_void(
    e2e_lab: E2ELab, config: Path
) -> None:
    solved = lab(e2e_lab, config, "--solve", "--yes")
    assert solved.rc == 0, solved
    warning = solved.output.index("exercise 1 will then not count")
    assert warning < solved.output.index("Node preparation"), solved  # said before it starts
    FIGURES["invoke lab --solve: stage 1 on 2 VMs (wall)"] = f"{solved.seconds:.0f} s"
    results, grade = verify_results(e2e_lab, config, "after")
    assert {c for c, ok in results.items() if not ok} <= NO_NTP_HERE, results
    assert grade.total == 0
    assert all("prepare on master, applied by solve" in i.voided for i in grade.items)
    markers = (e2e_lab.lab_dir / "evidence" / "after" / "provenance" / "master.txt").read_text()
    assert '"applied_by": "solve"' in markers


def test_reset_brings_back_the_start_state(e2e_lab: E2ELab, config: Path) -> None:
    broken = e2e_lab.run_on(["master"], "touch", BROKEN, sudo=True)
    assert broken["master"].rc == 0
    reset = lab(e2e_lab, config, "--reset")
    assert reset.rc == 0, reset
    FIGURES["invoke lab --reset: revert 2 VMs to the start snapshot (wall)"] = (
        f"{reset.seconds:.0f} s"
    )
    looked = e2e_lab.run_on(
        NODES, "sh", "-c", f"ls {BROKEN} /var/lib/kubelab/stages/prepare.json", sudo=True
    )
    for node, result in looked.items():
        assert result.rc != 0 and "prepare.json" in result.stderr, (node, result)
    state = json.loads((e2e_lab.lab_dir / STATE_NAME).read_text())
    assert len(state["restores"]) == 1
    results, grade = verify_results(e2e_lab, config, "reset")
    assert not results["kernel-modules"], results
    assert any("restored kubelab-exercise-1-start" in f.detail for f in grade.flags)


def test_clean_up(e2e_lab: E2ELab, config: Path) -> None:
    destroyed = e2e_lab.invoke("destroy", "--yes", config=config)
    assert destroyed.rc == 0, destroyed
    (e2e_lab.lab_dir / STATE_NAME).unlink()
