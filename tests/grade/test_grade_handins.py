"""The teacher's flow over a synthetic class: gradebook, flags, errors, feedback, Gradescope."""

from __future__ import annotations

import csv
import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kubelab.grade.gradebook import ClassReport, grade_handins, safe_file_name
from kubelab.grade.grading import fmt
from kubelab.grade.rubric import Rubric
from tests.grade.classroom import expected_scores
from tests.grade.handin_class import (
    CORRUPT,
    EDITED_REPORT,
    MISNAMED,
    MISSING,
    OWNER_OF_SHARED,
    VARIANTS,
    SyntheticClass,
)


@pytest.fixture(scope="module")
def graded(
    synthetic_class: SyntheticClass, tmp_path_factory: pytest.TempPathFactory
) -> ClassReport:
    out = tmp_path_factory.mktemp("graded")
    return grade_handins(
        synthetic_class.handins, 2, out, gradescope=True, roster=synthetic_class.roster
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def flag_kinds(row: dict[str, str]) -> set[str]:
    return {part.split(":", 1)[0] for part in row["flags"].split("; ") if part}


def test_gradebook_matches_the_rubric_exactly(graded: ClassReport, rubric: Rubric) -> None:
    rows = {r["student"]: r for r in read_csv(graded.out_dir / "gradebook.csv")}
    for student, variant in VARIANTS.items():
        want = expected_scores(rubric, variant)
        row = rows[student]
        assert row["status"] == "graded", row
        got = {item: row[item] for item in rubric.item_ids}
        assert got == {item: fmt(want[item]) for item in rubric.item_ids}, student
        assert row["total"] == fmt(want["total"])
        assert row["max"] == fmt(rubric.max_points) == "100"
        assert row["error"] == ""


def test_one_row_per_student_and_explicit_errors(graded: ClassReport) -> None:
    rows = read_csv(graded.out_dir / "gradebook.csv")
    students = [r["student"] for r in rows]
    assert len(students) == len(set(students))
    # The browser copy is identified by its content (2021001's archive), not doubled.
    assert set(students) == {*VARIANTS, CORRUPT, MISSING}
    errors = {r["student"]: r for r in rows if r["status"] == "error"}
    assert set(errors) == {CORRUPT, MISSING}
    assert "cut off" in errors[CORRUPT]["error"]
    assert errors[MISSING]["error"] == "no hand-in found"
    assert f"{MISNAMED} is named for 2021011" in {r["student"]: r for r in rows}["2021001"]["flags"]
    for row in errors.values():
        assert row["total"] == "" and all(row[i] == "" for i in ("cluster-ready", "network"))
    assert graded.summary().startswith("10 students: 8 graded, 2 not graded (errors), 4 flagged")
    # Named for exercise 3, but its contents are 2021001's exercise 2 hand-in: the
    # contents decide, the name is flagged (a real exercise 3 archive is in test_grade_intake).
    assert graded.skipped == []
    owner = next(g for g in graded.grades if g.student == OWNER_OF_SHARED)
    assert any(
        "named for exercise 3, its contents are exercise 2's" in f.detail for f in owner.flags
    )


def test_shared_cluster_is_flagged_on_both_students(graded: ClassReport) -> None:
    rows = {r["student"]: r for r in read_csv(graded.out_dir / "gradebook.csv")}
    copier = next(s for s, v in VARIANTS.items() if v.cluster_of)
    assert "shared-cluster" in flag_kinds(rows[copier])
    assert f"same cluster as {OWNER_OF_SHARED}" in rows[copier]["flags"]
    assert f"same cluster as {copier}" in rows[OWNER_OF_SHARED]["flags"]
    # The copier's node names carry the owner's ID, not theirs.
    assert "hostname" in flag_kinds(rows[copier])
    others = set(VARIANTS) - {copier, OWNER_OF_SHARED}
    assert not any("shared-cluster" in flag_kinds(rows[s]) for s in others)


def test_flags_are_listed_not_scored(graded: ClassReport, rubric: Rubric) -> None:
    rows = {r["student"]: r for r in read_csv(graded.out_dir / "gradebook.csv")}
    unnamed = next(s for s, v in VARIANTS.items() if not v.named)
    assert flag_kinds(rows[unnamed]) == {"hostname"}
    clean = [
        s
        for s, v in VARIANTS.items()
        if v.named and not v.cluster_of and s not in (OWNER_OF_SHARED, EDITED_REPORT)
    ]
    for student in clean:
        assert rows[student]["flags"] == "", student
    # The owner of the shared cluster keeps full marks: the flag is for the teacher.
    assert rows[OWNER_OF_SHARED]["total"] == fmt(
        expected_scores(rubric, VARIANTS[OWNER_OF_SHARED])["total"]
    )


def test_an_edited_report_is_graded_by_the_evidence(
    graded: ClassReport, synthetic_class: SyntheticClass, rubric: Rubric
) -> None:
    handin = next(synthetic_class.handins.rglob(f"kubelab-ex2-{EDITED_REPORT}.tar.gz"))
    report = json.loads(
        (
            graded.out_dir
            / "handins"
            / EDITED_REPORT
            / handin.name.removesuffix(".tar.gz")
            / "report.json"
        ).read_text()
    )
    assert report["total"] == report["max_points"]  # what the edited report claims
    assert all(r["passed"] for r in report["results"])
    grade = next(g for g in graded.grades if g.student == EDITED_REPORT)
    want = expected_scores(rubric, VARIANTS[EDITED_REPORT])
    assert grade.total == want["total"] < report["total"]
    network = grade.item("network")
    assert network is not None and network.score < network.points
    assert not next(c for c in grade.checks if c.id == "pod-ips").passed
    stored = [f for f in grade.flags if f.kind == "stored-verdict"]
    assert len(stored) == 1 and "pod-ips (pass in report.json, fail by the evidence)" in (
        stored[0].detail
    )


def test_feedback_per_student_with_hints(graded: ClassReport) -> None:
    folder = graded.out_dir / "feedback"
    names = sorted(p.stem for p in folder.glob("*.md"))
    assert len(names) == len(graded.grades)
    tainted = next(s for s, v in VARIANTS.items() if v.master_tainted)
    text = (folder / f"{tainted}.md").read_text()
    # own-deployment: its pods are not on the tainted master (2/3 of 25).
    assert "**Score: 91.67 / 100**" in text
    assert "no ready nginx pod on the master" in text and "kubectl taint nodes" in text
    # A shared-cluster flag names another student: it stays out of feedback.
    assert "same cluster" not in (folder / f"{OWNER_OF_SHARED}.md").read_text()
    assert "Not graded" in (folder / f"{CORRUPT}.md").read_text()


def test_gradescope_results_per_student(graded: ClassReport, rubric: Rubric) -> None:
    for grade in graded.grades:
        path = graded.out_dir / "gradescope" / safe_file_name(grade.student) / "results.json"
        data = json.loads(path.read_text())
        if not grade.graded:
            assert data["score"] == 0 and data["tests"] == [] and "Not graded" in data["output"]
            continue
        assert data["score"] == grade.total
        assert [t["name"].removesuffix(" (extra credit)") for t in data["tests"]] == [
            i.title for i in rubric.items
        ]
        assert sum(t["score"] for t in data["tests"]) == pytest.approx(data["score"])
        assert sum(t["max_score"] for t in data["tests"]) == rubric.max_points
        for test, item in zip(data["tests"], grade.items, strict=True):
            assert set(test) >= {"name", "score", "max_score", "output", "status"}
            # Extra credit counts in the score, not in the maximum (max_score 0).
            assert test["max_score"] == (0 if item.optional else item.points)
            # Extra credit not earned costs nothing: never shown as failed.
            full = item.score >= item.points
            assert test["status"] == ("passed" if full or item.optional else "failed")
            assert len(test["tags"]) == len(set(test["tags"]))


def test_since_flags_evidence_taken_before(synthetic_class: SyntheticClass, tmp_path: Path) -> None:
    future = datetime.now(UTC) + timedelta(days=1)
    report = grade_handins(synthetic_class.handins, 2, tmp_path / "late", since=future)
    graded = [g for g in report.grades if g.graded]
    assert graded and all(any(f.kind == "stale" for f in g.flags) for g in graded)
    past = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    report = grade_handins(synthetic_class.handins, 2, tmp_path / "fresh", since=past)
    assert not any(f.kind == "stale" for g in report.grades for f in g.flags)


def test_self_contradicting_evidence_is_flagged(
    synthetic_class: SyntheticClass, tmp_path: Path
) -> None:
    from kubelab.grade.grading import grade_evidence
    from kubelab.grade.rubric import load_rubric

    evidence = tmp_path / "evidence"
    shutil.copytree(synthetic_class.evidence["2021001"], evidence)
    # nodes.json loses the worker that pods.json still places pods on ...
    nodes = json.loads((evidence / "nodes.json").read_text())
    worker = nodes["items"].pop()["metadata"]["name"]
    (evidence / "nodes.json").write_text(json.dumps(nodes))
    # ... and one curl verdict loses the output it was drawn from.
    record = next((evidence / "curl" / "pod-ips").glob("*.json"))
    (evidence / json.loads(record.read_text())["stdout"]).unlink()
    grade = grade_evidence(evidence, "2021001", load_rubric(2))
    details = [f.detail for f in grade.flags if f.kind == "contradiction"]
    assert any(f"on {worker}" in d and "pods.json" in d for d in details), details
    assert any(
        "curl verdicts without their curl output" in d and record.name in d for d in details
    ), details


def test_a_resubmission_is_one_row_graded_from_the_newest(
    synthetic_class: SyntheticClass, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    newest = next(synthetic_class.handins.rglob("kubelab-ex2-2021005.tar.gz"))
    first = next(synthetic_class.handins.rglob("kubelab-ex2-2021001.tar.gz"))
    (folder / "monday").mkdir(parents=True)
    (folder / "friday").mkdir()
    # Monday's hand-in is another cluster's (2021001's evidence under 2021005's name).
    shutil.copy(first, folder / "monday" / newest.name)
    shutil.copy(newest, folder / "friday" / newest.name)
    old = datetime.now(UTC).timestamp() - 3600
    os.utime(folder / "monday" / newest.name, (old, old))
    report = grade_handins(folder, 2, tmp_path / "out")
    assert [g.student for g in report.grades] == ["2021005"]
    grade = report.grades[0]
    assert grade.source.endswith(f"friday/{newest.name}")
    assert grade.total == 91.67  # the tainted master of 2021005's own cluster
    # Monday's file carries 2021001's evidence under 2021005's name: said so too.
    assert sorted(f.kind for f in grade.flags) == ["duplicate", "name-mismatch"]
