"""The evidence format: welcome-page detection, curl records, the writer and the reader."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from kubelab import safeio
from kubelab.errors import KubelabError
from kubelab.verify.evidence import (
    COMMANDS,
    NODES,
    BadEvidence,
    Evidence,
    EvidenceWriter,
    cluster_identity,
    curl_record,
    is_welcome_page,
    parse_curl_stdout,
)
from tests.verify.verify_captures import (
    NODES_READY,
    SERVICE_NODEPORT,
    WELCOME_PAGES,
    curl_stdout,
    fixture,
)


@pytest.mark.parametrize("page", WELCOME_PAGES)
def test_every_captured_welcome_page_is_recognised(page: str) -> None:
    assert is_welcome_page(fixture(page).read_bytes())


@pytest.mark.parametrize("page", WELCOME_PAGES)
def test_a_page_cut_short_is_not(page: str) -> None:
    body = fixture(page).read_bytes()
    assert not is_welcome_page(body[: len(body) // 2])


def test_other_bodies_are_not() -> None:
    assert not is_welcome_page(fixture(SERVICE_NODEPORT).read_bytes())
    assert not is_welcome_page(b"")


@pytest.mark.parametrize("page", WELCOME_PAGES)
def test_curl_record_digests_the_body(page: str) -> None:
    body = fixture(page).read_text()
    record = curl_record(
        "pod-ips", "master", "10.244.1.2", "http://10.244.1.2:80/", 0, curl_stdout(body, 200)
    )
    raw = fixture(page).read_bytes()
    assert record["http_status"] == 200
    assert record["body_bytes"] == len(raw)
    assert record["body_sha256"] == hashlib.sha256(raw).hexdigest()
    assert record["welcome_page"] is True
    assert record["stdout"] == "curl/pod-ips/master__10.244.1.2.out"


def test_no_response_has_no_status() -> None:
    body, status = parse_curl_stdout(curl_stdout("", 0))
    assert (body, status) == (b"", None)
    record = curl_record(
        "nodeport",
        "master",
        "10.0.0.1",
        "http://10.0.0.1:30080/",
        7,
        curl_stdout("", 0),
        "curl: (7) Failed to connect\n",
    )
    assert record["http_status"] is None and record["welcome_page"] is False
    assert record["error"] == "curl: (7) Failed to connect"


def test_writer_refuses_a_folder_with_files(tmp_path: Path) -> None:
    (tmp_path / "old.json").write_text("{}")
    with pytest.raises(KubelabError, match="is not empty"):
        EvidenceWriter(tmp_path)


def _record(writer: EvidenceWriter, **overrides: object) -> dict:
    values: dict = dict(
        check="nodes",
        node="master",
        argv=["kubectl", "get", "nodes", "-o", "json"],
        rc=0,
        stdout="",
        stderr="",
        error="",
        started="2026-01-01T00:00:00+00:00",
        finished="2026-01-01T00:00:01+00:00",
        duration=1.0,
        saves=NODES,
    )
    values.update(overrides)
    return writer.record(**values)


def test_a_failed_command_leaves_a_gap_that_says_why(tmp_path: Path) -> None:
    writer = EvidenceWriter(tmp_path)
    line = _record(writer, rc=1, stdout="partial", stderr="error: You must be logged in\n")
    assert not (tmp_path / NODES).exists()
    assert (tmp_path / line["stdout"]).read_text() == "partial"
    missing = Evidence(tmp_path).missing(NODES)
    assert str(missing) == (
        "no evidence: nodes.json (`kubectl get nodes -o json` on master exited 1: "
        "error: You must be logged in)"
    )


def test_a_successful_command_writes_its_file_exactly(tmp_path: Path) -> None:
    writer = EvidenceWriter(tmp_path)
    text = fixture(NODES_READY).read_text()
    _record(writer, stdout=text)
    assert (tmp_path / NODES).read_bytes() == fixture(NODES_READY).read_bytes()
    _record(writer, check="nodes", saves=None, stdout="x", duration=0.25)
    assert Evidence(tmp_path).duration("nodes") == 1.25
    assert Evidence(tmp_path).duration("api") == 0.0
    assert len((tmp_path / COMMANDS).read_text().splitlines()) == 2


def test_cluster_identity_comes_from_the_node_info(tmp_path: Path) -> None:
    (tmp_path / NODES).write_bytes(fixture(NODES_READY).read_bytes())
    identity = cluster_identity(Evidence(tmp_path))
    nodes = json.loads(fixture(NODES_READY).read_text())["items"]
    assert identity["kube_system_uid"] is None  # not in this folder
    assert [n["boot_id"] for n in identity["nodes"]] == [
        n["status"]["nodeInfo"]["bootID"] for n in nodes
    ]
    assert [n["machine_id"] for n in identity["nodes"]] == [
        n["status"]["nodeInfo"]["machineID"] for n in nodes
    ]


def test_a_json_file_is_checked_once_and_each_reader_gets_its_own_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / NODES).write_text(fixture(NODES_READY).read_text())
    checked: list[int] = []
    real_parse = safeio.parse_json

    def counting_parse(data: str | bytes, *args: int) -> object:
        checked.append(len(data))
        return real_parse(data, *args)

    monkeypatch.setattr(safeio, "parse_json", counting_parse)
    evidence = Evidence(tmp_path)
    first = evidence.json(NODES)
    first["items"].clear()  # a reader changing what it got
    second = evidence.json(NODES)
    assert second == json.loads(fixture(NODES_READY).read_text())
    assert second["items"] and second is not first
    assert len(checked) == 1
    # The file is read once: a folder changed under the grader does not change its view.
    (tmp_path / NODES).write_text('{"items": []}')
    assert evidence.json(NODES) == second


def test_a_json_file_that_fails_its_checks_fails_every_read(tmp_path: Path) -> None:
    (tmp_path / NODES).write_text("[" * 65 + "]" * 65)
    evidence = Evidence(tmp_path)
    for _ in range(2):
        with pytest.raises(BadEvidence, match="nested more than 64 deep"):
            evidence.json(NODES)
