"""Rubrics as data, partial credit from the evidence, and the student's hand-in."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from kubelab.errors import ConfigError, KubelabError
from kubelab.grade.archive import make_handin
from kubelab.grade.grading import grade_evidence, score_table
from kubelab.grade.rubric import RUBRICS_DIR, Rubric, load_rubric, parse_rubric
from kubelab.verify import evaluate
from kubelab.verify.checks import ALL_CHECK_IDS
from tests.grade.classroom import Variant, derive_cluster, expected_scores
from tests.grade.handin_class import collect_evidence


@pytest.mark.parametrize("path", sorted(RUBRICS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_rubric_loads(path: Path) -> None:
    rubric = load_rubric(path=path)
    assert rubric.exercise == int(path.stem)
    assert rubric.max_points > 0
    for item in rubric.items:
        assert set(item.checks) <= set(ALL_CHECK_IDS)


def test_exercise_2_rubric_follows_the_manual(rubric: Rubric) -> None:
    # The manual's graded tasks: two nodes, pods on both, a monitoring UI (the
    # student-ID hostnames are exercise 1's, whose solution is exercise 2's start).
    assert rubric.requires.nodes == 2 and rubric.requires.masters == 1
    credits = {i.id: i.credit for i in rubric.items}
    assert "hostnames" not in credits
    # The student's own nginx, by the parts verify saw; verify's probe is the network.
    assert credits["own-deployment"] == credits["own-nodeport"] == "parts"
    assert set(rubric.item_ids) >= {"own-deployment", "own-pod-ips", "own-nodeport", "network"}
    assert [i.id for i in rubric.items if i.optional] == ["monitoring-ui"]
    assert rubric.max_points == sum(i.points for i in rubric.items if not i.optional)


def test_a_bad_rubric_reports_every_problem_at_once() -> None:
    doc = yaml.safe_load((RUBRICS_DIR / "2.yaml").read_text())
    doc["items"][0]["credit"] = "vibes"
    doc["items"][1]["points"] = -3
    doc["items"][2]["checks"] = ["nginx-rollout", "no-such-check"]
    doc["items"][3]["id"] = doc["items"][4]["id"]
    with pytest.raises(ConfigError) as caught:
        parse_rubric(doc, source="2.yaml")
    problems = caught.value.problems
    assert len(problems) == 4, problems
    assert any("credit 'vibes' is unknown" in p for p in problems)
    assert any("points must be a positive number" in p for p in problems)
    assert any("no verify check 'no-such-check'" in p for p in problems)
    assert any("id used twice" in p for p in problems)


def test_no_rubric_for_an_exercise_is_one_clear_error() -> None:
    with pytest.raises(KubelabError, match="no rubric for exercise 99"):
        load_rubric(99)


VARIANTS = {
    "working": Variant(),
    "node-not-ready": Variant(not_ready=(0,)),
    "both-not-ready": Variant(not_ready=(0, 1)),
    "master-tainted": Variant(master_tainted=True),
    "one-pod-down": Variant(pods_down=1),
    "nodeport-down-on-master": Variant(nodeport_down=(0,)),
    "monitoring": Variant(monitoring=True),
    "unnamed-with-scope": Variant(named=False, monitoring=True),
    "no-own-nginx": Variant(own=False),
    "no-own-nginx-tainted": Variant(own=False, master_tainted=True),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_partial_credit_is_measured_in_the_evidence(
    name: str, rubric: Rubric, tmp_path: Path
) -> None:
    variant = VARIANTS[name]
    cluster = derive_cluster("s42", 3, variant)
    evidence = collect_evidence(cluster, tmp_path / "evidence")
    grade = grade_evidence(evidence, "s42", rubric)
    want = expected_scores(rubric, variant)
    assert {i.id: i.score for i in grade.items} == {k: want[k] for k in rubric.item_ids}
    assert grade.total == want["total"]
    for item in grade.items:
        assert bool(item.hint) == (item.score < item.points), item


def test_a_monitoring_pod_that_is_not_ready_earns_nothing(rubric: Rubric, tmp_path: Path) -> None:
    evidence = collect_evidence(
        derive_cluster("s42", 3, Variant(monitoring=True)), tmp_path / "evidence"
    )
    pods = json.loads((evidence / "pods.json").read_text())
    scope = next(p for p in pods["items"] if p["metadata"]["name"].startswith("weave-scope"))
    next(c for c in scope["status"]["conditions"] if c["type"] == "Ready")["status"] = "False"
    (evidence / "pods.json").write_text(json.dumps(pods))
    item = grade_evidence(evidence, "s42", rubric).item("monitoring-ui")
    assert item is not None and item.score == 0
    assert "weave-scope-app" in item.detail and "not ready" in item.detail


def test_a_lab_configuring_fewer_nodes_than_the_exercise_scores_the_missing_ones(
    rubric: Rubric, tmp_path: Path
) -> None:
    evidence = collect_evidence(derive_cluster("s42", 3), tmp_path / "evidence")
    meta = json.loads((evidence / "meta.json").read_text())
    meta["expected"]["nodes"] = meta["expected"]["nodes"][:1]  # edited down to the master
    (evidence / "meta.json").write_text(json.dumps(meta))
    item = grade_evidence(evidence, "s42", rubric).item("cluster-ready")
    assert item is not None and item.score == 15
    assert "the exercise needs 2 nodes, the lab configures 1" in item.detail


def test_evidence_without_meta_is_an_error_grade(rubric: Rubric, tmp_path: Path) -> None:
    evidence = collect_evidence(derive_cluster("s42", 3), tmp_path / "evidence")
    (evidence / "meta.json").unlink()
    grade = grade_evidence(evidence, "s42", rubric)
    assert grade.status == "error" and "meta.json" in grade.error and grade.total is None


def test_make_handin_packs_report_and_evidence(rubric: Rubric, tmp_path: Path) -> None:
    cluster = derive_cluster("2021042", 3, Variant(master_tainted=True))
    evidence = collect_evidence(cluster, tmp_path / "evidence")
    results = evaluate(evidence, cluster.expected())
    archive = make_handin(evidence, results, "2021042", 2, tmp_path / "out")
    assert archive.name == "kubelab-ex2-2021042.tar.gz"
    assert [p.name for p in archive.parent.iterdir()] == [archive.name]  # no temp file left
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        report = json.loads(tar.extractfile("kubelab-ex2-2021042/report.json").read())  # type: ignore[union-attr]
        assert all(m.isfile() or m.isdir() for m in tar.getmembers())
    assert "kubelab-ex2-2021042/evidence/nodes.json" in names
    assert "kubelab-ex2-2021042/evidence/commands.jsonl" in names
    assert [r["id"] for r in report["results"]] == [r.id for r in results]
    want = expected_scores(rubric, Variant(master_tainted=True))
    assert {i["id"]: i["score"] for i in report["items"]} == {k: want[k] for k in rubric.item_ids}
    assert report["total"] == want["total"] and report["student"] == "2021042"


def test_the_score_table_shows_every_item(rubric: Rubric, tmp_path: Path) -> None:
    evidence = collect_evidence(
        derive_cluster("s42", 3, Variant(pods_down=1)), tmp_path / "evidence"
    )
    console = Console(width=160, record=True, color_system=None)
    console.print(score_table(grade_evidence(evidence, "s42", rubric)))
    text = console.export_text()
    for item in rubric.items:
        assert item.id in text
    # one of 2 own pod IPs down: 7.5/15; verify's pod-ips check fails: network 2/3 of 10.
    assert "7.5/15" in text and "6.67/10" in text and "89.17/100" in text and "hint:" in text


@pytest.mark.parametrize("student", ["", "../x", "a b", "x" * 33])
def test_make_handin_refuses_a_student_id_unfit_for_a_file_name(
    student: str, tmp_path: Path
) -> None:
    with pytest.raises(KubelabError, match="student ID"):
        make_handin(tmp_path, [], student, 2, tmp_path / "out")
