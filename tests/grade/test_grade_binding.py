"""What binds evidence to its cluster: API-made facts re-checked against each other.

A student who copies another's passing evidence and rewrites the identity fields
(kube-system UID, boot IDs, node names) is still caught by every pod UID the API
server gave the other cluster; one who edits a pod or an endpoint by hand breaks
the agreement between nginx/pods.json, nodes.json and nginx/endpoints.json.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kubelab.grade.grading import add_class_flags, grade_evidence
from kubelab.grade.integrity import binding_flags
from kubelab.grade.rubric import Rubric
from kubelab.verify import Evidence
from tests.grade.hostile_corpus import base_evidence


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return base_evidence(tmp_path_factory.mktemp("binding"))


def edited(honest: Path, tmp_path: Path, rel: str, change: Callable[[Any], None]) -> Path:
    evidence = tmp_path / "evidence"
    shutil.copytree(honest, evidence)
    doc = json.loads((evidence / rel).read_text())
    change(doc)
    (evidence / rel).write_text(json.dumps(doc))
    return evidence


def test_honest_evidence_is_bound(honest: Path) -> None:
    assert binding_flags(Evidence(honest)) == []


def test_a_pod_moved_by_hand_is_flagged(honest: Path, tmp_path: Path) -> None:
    def move(doc: Any) -> None:
        doc["items"][0]["status"]["hostIP"] = "192.168.56.99"

    flags = binding_flags(Evidence(edited(honest, tmp_path, "nginx/pods.json", move)))
    assert [f.detail.split(":")[0] for f in flags] == [
        "pods whose hostIP is not their node's InternalIP"
    ]


def test_endpoints_of_other_pods_are_flagged(honest: Path, tmp_path: Path) -> None:
    def swap(doc: Any) -> None:
        doc["subsets"][0]["addresses"][0]["targetRef"]["uid"] = (
            "0" * 8 + "-0000-0000-0000-" + "0" * 12
        )

    flags = binding_flags(Evidence(edited(honest, tmp_path, "nginx/endpoints.json", swap)))
    assert len(flags) == 1 and "names pods that nginx/pods.json lacks" in flags[0].detail


def test_copied_evidence_with_new_identity_still_shares_pod_uids(
    honest: Path, rubric: Rubric, tmp_path: Path
) -> None:
    def new_identity(doc: Any) -> None:
        doc["metadata"]["uid"] = "11111111-2222-3333-4444-555555555555"

    copy = edited(honest, tmp_path, "kube-system-namespace.json", new_identity)
    nodes = json.loads((copy / "nodes.json").read_text())
    for n, node in enumerate(nodes["items"]):
        node["status"]["nodeInfo"]["bootID"] = f"{n:08d}-0000-0000-0000-000000000000"
    (copy / "nodes.json").write_text(json.dumps(nodes))
    grades = [grade_evidence(honest, "2029900", rubric), grade_evidence(copy, "2029901", rubric)]
    add_class_flags(grades)
    shared = [f.detail for f in grades[1].flags if f.kind == "shared-cluster"]
    assert len(shared) == 1 and shared[0].startswith("same cluster as 2029900 (pod UID ")
