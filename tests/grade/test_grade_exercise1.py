"""Exercise 1 graded from node-prep evidence, and what kubelab's own work voids.

A small class of hand-ins, built from the probe outputs in tests/data/verify/node-prep:
students who prepared their nodes themselves (named each way the manuals do), one
who ran `--solve`, one who ran `invoke up`. Each grade is written down before it runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubelab.grade.grading import grade_evidence
from kubelab.grade.rubric import KUBELAB_APPLIED, Rubric, load_rubric
from kubelab.labs import list_exercises
from kubelab.verify.evidence import META, node_prep_path
from kubelab.verify.expect import NODE_PREP, Expected
from kubelab.verify.provenance import markers_path, start_label

DATA = Path(__file__).resolve().parents[1] / "data" / "verify" / "node-prep"
STUDENT = "2023001"
LAB = (
    ("master", "master", "192.168.56.10"),
    ("node1", "node", "192.168.56.11"),
    ("node2", "node", "192.168.56.12"),
)


def prepared(names: tuple[str, str, str] | None = None) -> dict[str, str]:
    """The prepared probe outputs, the hostnames renamed to `names` if given."""
    files = {m: (DATA / f"prepared-{m}.txt").read_text() for m, _, _ in LAB}
    if names:
        old = ("k8s-master-2023001", "2023001-node1", "2023001-node2")
        for machine in files:
            for before, after in zip(old, names, strict=True):
                files[machine] = files[machine].replace(before, after)
    return files


def marker(stage: str, applied_by: str) -> str:
    record = {"stage": stage, "applied_by": applied_by, "applied_at": "2026-12-01T09:00:00Z"}
    return f"{stage}.sha256\tab12\n{stage}.json\t{json.dumps(record)}\n"


def hand_in(root: Path, probe: dict[str, str], markers: str = "", student: str = STUDENT) -> Path:
    expected = Expected(
        nodes=LAB,
        kubernetes_version="1.31.13",
        pod_cidr="10.244.0.0/16",
        student_id=student,
        phases=(NODE_PREP,),
    )
    root.mkdir(parents=True)
    (root / META).write_text(
        json.dumps(
            {"format": 2, "exercise": 1, "student_id": student, "expected": expected.to_dict()}
        )
    )
    for machine, text in probe.items():
        path = root / node_prep_path(machine)
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        if markers:
            path = root / markers_path(machine)
            path.parent.mkdir(exist_ok=True)
            path.write_text(markers)
    return root


@pytest.fixture
def rubric() -> Rubric:
    return load_rubric(1)


def broken_swap_on_node2() -> dict[str, str]:
    files = prepared()
    files["node2"] = files["node2"].replace("fstab_swap=0", "fstab_swap=1")
    return files


def fresh_master() -> dict[str, str]:
    return {**prepared(), "master": (DATA / "fresh-centos7.txt").read_text()}


# Each student: the probe outputs, the stage markers kubelab left, the total written down.
CLASS = {
    "own work, k8s-master-<ID> and <ID>-node1": (prepared(), "", 100),
    "own work, master<ID> and node1-<ID>": (
        prepared(("master2023001", "node1-2023001", "node2-2023001")),
        "",
        100,
    ),
    # swap: 2 of 3 nodes x 15 points.
    "swap left in node2's fstab": (broken_swap_on_node2(), "", 95),
    # The master untouched: 2/3 of every item (10 -> 6.67, 15 -> 10), and nobody can
    # resolve its name: name-resolution 0.
    "master not prepared": (fresh_master(), "", 56.68),
    "ran --solve": (prepared(), marker("prepare", "solve"), 0),
    "ran invoke up": (prepared(), marker("prepare", "up"), 0),
}


@pytest.mark.parametrize("student", sorted(CLASS))
def test_each_grade_is_as_written_down(student: str, rubric: Rubric, tmp_path: Path) -> None:
    probe, markers, total = CLASS[student]
    grade = grade_evidence(hand_in(tmp_path / "e", probe, markers), STUDENT, rubric)
    assert grade.graded, grade.error
    assert grade.total == total
    voided = [s for s in grade.items if s.voided]
    flags = [f for f in grade.flags if f.kind == KUBELAB_APPLIED]
    if markers:
        # Every item void, each saying which stage kubelab applied and by what.
        assert len(voided) == len(rubric.items) == len(flags)
        by = "solve" if "solve" in student else "up"
        assert all(f"prepare on master, applied by {by}" in s.voided for s in voided)
        assert all(s.detail.startswith("void: ") for s in voided)
    else:
        assert voided == [] and flags == []


def test_a_teacher_can_let_solve_count_for_a_demo(rubric: Rubric, tmp_path: Path) -> None:
    demo = rubric.model_copy(update={"allow_solve": True})
    solved = hand_in(tmp_path / "solve", prepared(), marker("prepare", "solve"))
    assert grade_evidence(solved, STUDENT, demo).total == 100
    upped = hand_in(tmp_path / "up", prepared(), marker("prepare", "up"))
    assert grade_evidence(upped, STUDENT, demo).total == 0  # `invoke up` still voids


def test_the_exercise_start_state_never_voids(tmp_path: Path) -> None:
    rubric = load_rubric(2)
    start = marker("prepare", start_label(2))
    folder = hand_in(tmp_path / "e", prepared(), start)
    # Exercise 2's evidence without a cluster: no item is void for the prepare stage.
    assert [s.id for s in grade_evidence(folder, STUDENT, rubric).items if s.voided] == []


def test_a_hand_in_without_provenance_loads_and_voids_nothing(
    rubric: Rubric, tmp_path: Path
) -> None:
    folder = hand_in(tmp_path / "e", prepared())
    meta = json.loads((folder / META).read_text())
    meta["format"] = 1
    (folder / META).write_text(json.dumps(meta))
    assert grade_evidence(folder, STUDENT, rubric).total == 100


@pytest.mark.parametrize("exercise", list_exercises(), ids=lambda e: f"exercise-{e.number}")
def test_no_rubric_item_is_satisfied_by_its_exercises_start(exercise) -> None:
    """An item's work is done by stages after the start: the start state cannot earn it."""
    rubric = load_rubric(exercise.number)
    for item in rubric.items:
        assert not set(item.voided_by) & set(exercise.start), item.id
        # Every scored item names the stages that do its work (extra credit may be work
        # no stage does, like the monitoring UI).
        assert item.voided_by or item.optional, item.id
        assert set(item.voided_by) <= set(exercise.solution), item.id


def test_a_rubric_says_what_verify_must_collect() -> None:
    from kubelab.grade.rubric import rubric_phases

    assert rubric_phases(load_rubric(1)) == ("node-prep",)
    assert rubric_phases(load_rubric(2)) == ("cluster", "own", "probe")
    # ... the same as the exercise's own checks ask for.
    assert [rubric_phases(load_rubric(e.number)) for e in list_exercises()] == [
        e.phases for e in list_exercises()
    ]


@pytest.mark.parametrize("width", [80, 160])
def test_the_score_table_fits_the_terminal(rubric: Rubric, tmp_path: Path, width: int) -> None:
    from rich.console import Console

    from kubelab.grade.grading import score_table

    grade = grade_evidence(hand_in(tmp_path / "e", broken_swap_on_node2()), STUDENT, rubric)
    console = Console(width=width, record=True, color_system=None)
    console.print(score_table(grade, width=width))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= width
    # The failing item's reason and hint are there, whole words, at either width.
    flat = " ".join(part.strip(" │") for part in text.splitlines())
    assert "node2: /etc/fstab still mounts swap at boot" in flat
    assert "hint: Swap must be off now" in flat
    assert ("detail" in text.splitlines()[2]) == (width >= 100)
