"""The exercise lab: what `invoke lab` remembers, what it says, what it refuses."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from kubelab import labs
from kubelab.config import validate_config
from kubelab.errors import KubelabError
from kubelab.grade.rubric import load_rubric
from kubelab.plan import make_plan
from kubelab.render import render
from kubelab.verify.checks import CheckResult, Part
from kubelab.verify.lab import expected_from_plan
from kubelab.verify.provenance import SOLVE, start_label
from tests.support.invoke_in_process import run_task

STUDENT = "2023001"


def plan(exercise: int | None = 1, student: str = STUDENT, tmp: Path = Path("/tmp/lab")):
    return make_plan(validate_config({"student_id": student}), tmp, exercise)


# --- the state file ---------------------------------------------------------------


def test_the_state_round_trips_and_is_written_whole(tmp_path: Path) -> None:
    state = labs.LabState(1, STUDENT, "zh", "2026-12-01T10:00:00Z", "kubelab-exercise-1-start")
    state = state.restored("2026-12-01T11:00:00Z")
    labs.write_state(tmp_path, state)
    assert labs.read_state(tmp_path) == state
    assert [p.name for p in tmp_path.iterdir()] == [labs.STATE_NAME]  # no temporary left
    assert labs.read_state(tmp_path / "elsewhere") is None


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"exercise": "1", "student": STUDENT}),
        json.dumps({"exercise": 1, "student": 7}),
        json.dumps({"exercise": 1, "student": "x", "restores": "all"}),
        json.dumps({"exercise": 1, "student": "x", "pad": "x" * 70_000}),
    ],
)
def test_a_hostile_state_file_is_one_clear_error(tmp_path: Path, text: str) -> None:
    (tmp_path / labs.STATE_NAME).write_text(text)
    with pytest.raises(KubelabError, match="is not a kubelab exercise state") as raised:
        labs.read_state(tmp_path)
    assert "\n" not in raised.value.message


# --- what it says ------------------------------------------------------------------


def test_next_commands_carry_the_real_id_and_never_the_solution() -> None:
    for exercise in labs.list_exercises():
        lines = labs.next_commands(exercise, labs.LabState(exercise.number, STUDENT))
        assert f"--student {STUDENT}" in " ".join(lines)
        assert not any("--solve" in line or "invoke up" in line for line in lines)


@pytest.mark.parametrize("lang", labs.LANGUAGES)
def test_no_manual_suggests_a_command_that_applies_the_solution(lang: str) -> None:
    for exercise in labs.list_exercises():
        text = labs.manual_text(exercise, plan(exercise.number), lang)
        assert "--solve" not in text and "invoke up" not in text, exercise.number
        assert f"--student {STUDENT}" in text


def test_solve_warns_that_the_exercise_will_not_count() -> None:
    exercise = labs.load_exercise(1)
    warning = labs.solve_warning(exercise)
    assert "exercise 1 will then not count" in warning
    assert all(item.id in warning for item in load_rubric(1).items)


def test_up_in_an_exercise_lab_says_what_it_would_do() -> None:
    state = labs.LabState(1, STUDENT)
    question = labs.up_warning(plan(1), state)
    assert "this lab is exercise 1's (student 2023001)" in question
    assert "prepare, repos" in question and "would then not count" in question
    assert question.endswith("Build it anyway?")


def test_applied_by_names_the_start_and_the_solution() -> None:
    exercise = labs.load_exercise(2)
    assert labs.applied_by(exercise, solve=False) == {"prepare": start_label(2)}
    solved = labs.applied_by(exercise, solve=True)
    assert solved["prepare"] == start_label(2)
    assert {solved[s] for s in exercise.solution} == {SOLVE}


def test_a_lab_past_the_start_is_refused_with_the_way_out() -> None:
    exercise = labs.load_exercise(2)
    labs.refuse_past_start(exercise, {"prepare": ["master"]})  # the start itself: fine
    with pytest.raises(KubelabError, match="past exercise 2's start") as raised:
        labs.refuse_past_start(exercise, {"prepare": ["master"], "init-master": ["master"]})
    assert "invoke lab --exercise 2 --reset" in raised.value.hint


def test_check_rows_follow_the_manuals_steps() -> None:
    exercise = labs.load_exercise(1)
    results = [
        CheckResult(
            "sysctls", "sysctls", False, "x", parts=(Part("node1", False, "ip_forward 0"),)
        ),
        CheckResult("hostname", "hostname", True, "ok", parts=(Part("master", True),)),
    ]
    assert labs.step_rows(exercise, results) == [
        ("1", "hostname", True, "ok"),
        ("8", "sysctls", False, "node1: ip_forward 0"),
    ]


# --- what verify collects for an exercise, and what Vagrant names the VMs -------------


def test_exercise_1_collects_the_node_preparation_only() -> None:
    assert labs.load_exercise(1).phases == ("node-prep",)
    assert labs.load_exercise(2).phases == ("cluster", "own", "probe")
    expected = expected_from_plan(plan(1), phases=labs.load_exercise(1).phases, language="zh")
    assert expected.student_id == STUDENT and expected.language == "zh"


def test_an_exercise_lab_boots_with_plain_hostnames(ruby) -> None:
    for exercise, want in ((1, lambda n: n.name), (None, lambda n: n.hostname)):
        lab = plan(exercise)
        reply = ruby.evaluate(render(lab)["Vagrantfile"])
        assert reply["ok"], reply["error"]
        settings = {tuple(path): value for path, value in reply["records"]}
        for node in lab.nodes:
            assert settings[("config", "vm", "define", node.name, "vm", "hostname")] == want(node)


def test_the_shipped_manifests_of_exercise_2(tmp_path: Path) -> None:
    files = labs.exercise_files(plan(2, tmp=tmp_path), labs.load_exercise(2))
    assert set(files) == {"kube-flannel.yml", "weave-scope.yaml"}
    assert '"--iface=eth1"' in files["kube-flannel.yml"]
    assert "weave-scope-app" in files["weave-scope.yaml"]
    assert labs.exercise_files(plan(1, tmp=tmp_path), labs.load_exercise(1)) == {}


def test_a_demo_rubric_lets_solve_count(monkeypatch: pytest.MonkeyPatch) -> None:
    rubric = load_rubric(1).model_copy(update={"allow_solve": True})
    monkeypatch.setattr("kubelab.grade.rubric.load_rubric", lambda number: rubric)
    assert "this rubric lets it count" in labs.solve_warning(labs.load_exercise(1))


# --- the flags, as a student types them: checked before anything boots -----------------


def invoke_lab(*args: str, lab_dir: Path) -> subprocess.CompletedProcess[str]:
    """`invoke lab ARGS --lab-dir DIR` by invoke's Program in this process."""
    return run_task("lab", *args, "--lab-dir", str(lab_dir))


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--exercise", "1", "--lang", "fr"], "--lang must be one of zh, en"),
        (["--exercise", "1", "--check", "--reset"], "give one of --print, --check, --reset"),
        (["--exercise", "7"], "no exercise 7"),
        (["--check"], "give --exercise N"),
        (["--exercise", "1"], "give your student ID"),
    ],
)
def test_bad_flags_stop_before_anything_boots(args: list[str], says: str, tmp_path: Path) -> None:
    done = invoke_lab(*args, lab_dir=tmp_path / "lab")
    assert done.returncode == 2, done
    assert says in done.stderr and "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "lab").exists()


def test_print_shows_the_manual_with_no_vm(tmp_path: Path) -> None:
    done = invoke_lab("--exercise", "2", "--print", "--lang", "zh", "--student", STUDENT,
                      lab_dir=tmp_path / "lab")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "kubeadm reset -f" in done.stdout and "--iface=eth1" in done.stdout
    assert f"--student {STUDENT}" in done.stdout
    # A command line is never wrapped, whatever the terminal's width.
    command = next(line for line in done.stdout.splitlines() if "sudo kubeadm init" in line)
    assert len(command) > 80 and "--image-repository=" in command, command
    assert not (tmp_path / "lab").exists()
