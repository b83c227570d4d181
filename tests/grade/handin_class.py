"""A synthetic class of hand-ins for the grading tests, built by verify itself.

Each student's evidence is written by verify's real collect() against a replay of
the student's derived cluster (classroom.py), then packed by make_handin(), exactly
as a student's `invoke verify --exercise 2 --student ID` would.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubelab.grade.archive import make_handin
from kubelab.verify import collect, evaluate
from tests.grade.classroom import Cluster, ReplayTransport, Variant, derive_cluster

IMAGE = "docker.io/library/nginx:1.27"
OWNER_OF_SHARED = "2021001"

# The class: who hands in what. Expected scores come from classroom.expected_scores.
VARIANTS: dict[str, Variant] = {
    "2021001": Variant(),
    "2021002": Variant(monitoring=True),
    "2021003": Variant(not_ready=(1,)),
    "2021004": Variant(named=False),
    "2021005": Variant(master_tainted=True),
    "2021006": Variant(pods_down=1, nodeport_down=(1,)),
    "2021007": Variant(pods_down=2),  # and its report.json edited to claim a pass
    "2021008": Variant(cluster_of=OWNER_OF_SHARED),  # ran verify on 2021001's cluster
}
EDITED_REPORT = "2021007"
CORRUPT = "2021009"
MISSING = "2021010"  # on the roster, never handed in
MISNAMED = "kubelab-ex2-2021011 (1).tar.gz"  # a browser's second download


def cluster_for(student: str, variant: Variant) -> Cluster:
    students = sorted(VARIANTS)
    owner = variant.cluster_of
    return derive_cluster(
        student,
        students.index(student) + 1,
        variant,
        owner_index=students.index(owner) + 1 if owner else None,
    )


def collect_evidence(cluster: Cluster, out: Path) -> Path:
    """verify's collect() over the replayed cluster: the evidence a student's run leaves."""
    return collect(
        ReplayTransport(cluster),
        cluster.expected(),
        out,
        image=IMAGE,
        student_id=cluster.student,
        exercise=2,
        lab_config={"name": "kubelab", "student_id": cluster.student},
    )


def edit_report(archive: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite report.json inside a hand-in, as a student with a text editor would."""
    with tarfile.open(archive, "r:gz") as tar:
        members = [
            (m, tar.extractfile(m).read() if m.isfile() else None)  # type: ignore[union-attr]
            for m in tar.getmembers()
        ]
    with tarfile.open(archive, "w:gz") as tar:
        for member, data in members:
            if member.name.endswith("/report.json"):
                report = json.loads(data)  # type: ignore[arg-type]
                change(report)
                data = json.dumps(report, indent=2).encode()
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data) if data is not None else None)


@dataclass
class SyntheticClass:
    handins: Path  # the folder the teacher grades
    roster: Path
    clusters: dict[str, Cluster] = field(default_factory=dict)
    evidence: dict[str, Path] = field(default_factory=dict)


def build_class(root: Path) -> SyntheticClass:
    handins = root / "handins"
    handins.mkdir(parents=True)
    made = SyntheticClass(handins, root / "roster.csv")
    for student, variant in VARIANTS.items():
        cluster = cluster_for(student, variant)
        evidence = collect_evidence(cluster, root / "runs" / student)
        results = evaluate(evidence, cluster.expected())
        # Students hand in from folders of their own; the teacher gets them all.
        archive = make_handin(evidence, results, student, 2, handins / f"from-{student}")
        made.clusters[student] = cluster
        made.evidence[student] = evidence
        if student == EDITED_REPORT:

            def claim_everything(report: dict[str, Any]) -> None:
                for result in report["results"]:
                    result["passed"] = True
                for item in report["items"]:
                    item["score"] = item["points"]
                report["total"] = report["max_points"]

            edit_report(archive, claim_everything)
    # A hand-in cut off in the middle of its upload.
    whole = make_handin(made.evidence["2021001"], [], CORRUPT, 2, root / "upload").read_bytes()
    (handins / f"kubelab-ex2-{CORRUPT}.tar.gz").write_bytes(whole[: len(whole) // 3])
    good = (handins / "from-2021001" / "kubelab-ex2-2021001.tar.gz").read_bytes()
    (handins / MISNAMED).write_bytes(good)
    # A hand-in for another exercise is not this gradebook's business.
    (handins / "kubelab-ex3-2021001.tar.gz").write_bytes(good)
    roster = ["student_id", *VARIANTS, CORRUPT, MISSING]
    made.roster.write_text("\n".join(roster) + "\n")
    return made
