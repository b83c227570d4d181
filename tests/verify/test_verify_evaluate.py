"""evaluate() over whole folders: verdicts, determinism, and missing evidence never passing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kubelab.verify.checks import checks_for, evaluate
from kubelab.verify.evidence import (
    CLEANUP,
    DEPLOYMENT,
    ENDPOINTS,
    NGINX_PODS,
    NODES,
    PODS,
    SERVICE,
    VERSION,
    curl_record_path,
)
from tests.verify.verify_captures import Folder, build_folder


def test_healthy_folder_passes_every_check(folder: Folder) -> None:
    results = evaluate(folder.root, folder.expected)
    assert [r.id for r in results] == [c.id for c in checks_for(folder.expected)]
    assert "dns" not in [r.id for r in results] and "swap" not in [r.id for r in results]
    assert [r.id for r in results if not r.passed] == []
    assert all(r.hint == "" for r in results)


def test_evaluate_twice_gives_identical_results(tmp_path: Path) -> None:
    folder = build_folder(tmp_path / "e", spread=False)  # with a failure in it too
    first = evaluate(folder.root, folder.expected)
    second = evaluate(folder.root, folder.expected)
    assert first == second
    assert any(not r.passed for r in first)


def test_a_copied_folder_gives_the_same_results(folder: Folder, tmp_path: Path) -> None:
    # What a grader does: unpack the hand-in elsewhere and evaluate it there.
    copy = tmp_path / "handed-in"
    shutil.copytree(folder.root, copy)
    assert evaluate(copy, folder.expected) == evaluate(folder.root, folder.expected)


# Each file, and the checks whose evidence it is.
NEEDED_BY = {
    VERSION: ["api"],
    NODES: ["nodes", "nginx-rollout"],
    PODS: ["system-pods"],
    DEPLOYMENT: ["nginx-rollout"],
    NGINX_PODS: ["nginx-rollout", "pod-ips"],
    SERVICE: ["cluster-ip", "nodeport"],
    ENDPOINTS: ["cluster-ip"],
    CLEANUP: ["cleanup"],
}


@pytest.mark.parametrize("rel", sorted(NEEDED_BY))
def test_removed_file_fails_its_checks_as_no_evidence(folder: Folder, rel: str) -> None:
    (folder.root / rel).unlink()
    results = {r.id: r for r in evaluate(folder.root, folder.expected)}
    for check_id in NEEDED_BY[rel]:
        assert not results[check_id].passed
        assert results[check_id].detail == f"no evidence: {rel}"
        assert "missing" in results[check_id].hint
    others = [i for i, r in results.items() if i not in NEEDED_BY[rel] and not r.passed]
    assert others == []


@pytest.mark.parametrize("check_id", ["pod-ips", "cluster-ip", "nodeport"])
def test_removed_curl_record_fails_as_no_evidence(folder: Folder, check_id: str) -> None:
    record = sorted((folder.root / "curl" / check_id).glob("*.json"))[0]
    record.unlink()
    results = {r.id: r for r in evaluate(folder.root, folder.expected)}
    assert not results[check_id].passed
    assert "no evidence: curl/" + check_id in results[check_id].detail
    assert [i for i, r in results.items() if not r.passed] == [check_id]


def test_empty_folder_passes_nothing(tmp_path: Path, folder: Folder) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    results = evaluate(empty, folder.expected)
    assert [r.id for r in results if r.passed] == []
    assert all(r.detail.startswith("no evidence: ") for r in results)


def test_garbage_instead_of_json_is_unreadable_not_passing(folder: Folder) -> None:
    (folder.root / SERVICE).write_text("<html>502 Bad Gateway</html>\n")
    results = {r.id: r for r in evaluate(folder.root, folder.expected)}
    for check_id in ("cluster-ip", "nodeport"):
        assert not results[check_id].passed
        assert results[check_id].detail.startswith(f"unreadable evidence: {SERVICE}")


def test_wrong_shape_is_unreadable_not_a_crash(folder: Folder) -> None:
    nodes = folder.load(NODES)
    nodes["items"][0]["status"] = 3  # an edited file: a number where an object belongs
    folder.save(NODES, nodes)
    result = {r.id: r for r in evaluate(folder.root, folder.expected)}["nodes"]
    assert not result.passed
    assert result.detail.startswith("unreadable evidence")


def test_curl_record_path_is_the_documented_layout() -> None:
    assert (
        curl_record_path("pod-ips", "master", "10.244.1.2")
        == "curl/pod-ips/master__10.244.1.2.json"
    )
