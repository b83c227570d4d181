"""The hostile corpus: hand-ins built to harm the grader, one per class of fault (issue 14).

Every case starts from one honest student's evidence, written by verify's real
collect() over a replayed cluster of its own (classroom.py), then breaks one thing
the way an attacker would: a path that leads out of the folder, a file that is not a
file, JSON nested or sized to exhaust the grader, a wrong type in a field of every
file, text that drives a terminal or cannot be written as UTF-8, and tar archives
built to cost memory or disk (header bombs, ratio bombs, too many members, renamed
and duplicated members).

`build_corpus(root, secret)` writes the archives into root/handins and returns the
cases; `build_folders(root, secret)` writes evidence folders holding what a tar
cannot carry (links, FIFOs, sockets, devices). `secret` is a file outside both: the
cases point at it every way they can, and no output may ever contain its text.

    python -m tests.grade.hostile_corpus OUT   # writes the corpus into OUT to look at
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import socket
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubelab.grade.archive import EVIDENCE, REPORT, archive_name
from kubelab.verify import evaluate
from tests.grade.classroom import Variant, derive_cluster
from tests.grade.handin_class import collect_evidence

# The honest cluster every case is cut from: an index of its own, so it shares no
# identity with the synthetic class (whose rows must come out unchanged).
BASE_STUDENT = "2029900"
BASE_INDEX = 40
SECRET_TEXT = "kubelab-corpus-SECRET-7f3a9c"
ESC = "\x1b"


@dataclass(frozen=True)
class Case:
    student: str
    why: str  # what the student's row must say (in its error, a check, an item or a flag)
    error: bool = False  # the whole hand-in is an error row (not graded)


Mutation = Callable[[Path, Path], None]  # (evidence folder, secret file)


def _json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value))


def _edit(rel: str, change: Callable[[Any], Any]) -> Mutation:
    def mutate(evidence: Path, secret: Path) -> None:
        path = evidence / rel
        _json(path, change(json.loads(path.read_text())))

    return mutate


def _write(rel: str, data: bytes) -> Mutation:
    def mutate(evidence: Path, secret: Path) -> None:
        (evidence / rel).write_bytes(data)

    return mutate


def _commands(change: Callable[[list[dict[str, Any]], Path], None]) -> Mutation:
    def mutate(evidence: Path, secret: Path) -> None:
        path = evidence / "commands.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        change(lines, secret)
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    return mutate


def _nodes_from_elsewhere(where: Callable[[Path], str]) -> Mutation:
    """nodes.json gone, its command 'failed', and its stderr said to be at `where`."""

    def change(lines: list[dict[str, Any]], secret: Path) -> None:
        for line in lines:
            if line.get("saves") == "nodes.json":
                line.update(rc=1, stdout=None, stderr=where(secret))

    def mutate(evidence: Path, secret: Path) -> None:
        (evidence / "nodes.json").unlink()
        _commands(change)(evidence, secret)

    return mutate


def _curl_output_at(where: Callable[[Path], str]) -> Mutation:
    def mutate(evidence: Path, secret: Path) -> None:
        for record in sorted((evidence / "curl").rglob("*.json")):
            data = json.loads(record.read_text())
            data["stdout"] = where(secret)
            _json(record, data)

    return mutate


def _relative_to_extraction(secret: Path) -> str:
    # The grader unpacks into out/handins/<student>/<top>/evidence: climb far enough.
    return "../" * 12 + str(secret).lstrip("/")


def _node_name(name: str) -> Mutation:
    def change(doc: dict[str, Any]) -> dict[str, Any]:
        doc["items"][0]["metadata"]["name"] = name
        return doc

    return _edit("nodes.json", change)


def _nested(depth: int) -> bytes:
    return b'{"items": ' + b"[" * depth + b"]" * depth + b"}"


# --- the evidence cases: (student, mutation, why, whole hand-in an error row) -----------

EVIDENCE_CASES: list[tuple[Case, Mutation]] = [
    # Paths that lead out of the folder, every way a JSON field can name one.
    (
        Case("h-abs-stderr", "no evidence: nodes.json"),
        _nodes_from_elsewhere(lambda s: str(s)),
    ),
    (
        Case("h-dotdot-stderr", "no evidence: nodes.json"),
        _nodes_from_elsewhere(_relative_to_extraction),
    ),
    (
        Case("h-dev-stderr", "no evidence: nodes.json"),
        _nodes_from_elsewhere(lambda s: "/dev/zero"),
    ),
    (
        Case("h-abs-curl", "outside the evidence folder"),
        _curl_output_at(lambda s: str(s)),
    ),
    (
        Case("h-dotdot-curl", "outside the evidence folder"),
        _curl_output_at(_relative_to_extraction),
    ),
    (
        Case("h-proc-curl", "outside the evidence folder"),
        _curl_output_at(lambda s: "/proc/self/environ"),
    ),
    # Size and depth.
    (Case("h-deep-json", "nested more than 64 deep"), _write("nodes.json", _nested(200_000))),
    (Case("h-deepish-json", "nested more than 64 deep"), _write("nodes.json", _nested(500))),
    (
        Case("h-huge-number", "not JSON"),
        _write("nodes.json", b'{"items": [' + b"9" * 100_000 + b"]}"),
    ),
    (Case("h-nan", "not JSON"), _write("version.json", b'{"gitVersion": NaN}')),
    (
        Case("h-oversized", "more than the 8388608 allowed"),
        # Random hex: it does not compress, so the archive's ratio is honest.
        _write("pods.json", b'"' + os.urandom(4 * 1024 * 1024).hex().encode() + b'"'),
    ),
    (Case("h-not-utf8", "not UTF-8"), _write("nodes.json", b'{"items": [], "x": "\xff\xfe"}')),
    # Wrong types in every file.
    (
        Case("h-meta-list", "meta.json is not a JSON object", error=True),
        _write("meta.json", b"[]"),
    ),
    (
        Case("h-meta-nodes", "'expected' is not usable", error=True),
        _edit("meta.json", lambda m: {**m, "expected": {**m["expected"], "nodes": 5}}),
    ),
    (
        Case("h-meta-node-name", "'expected' is not usable", error=True),
        _edit(
            "meta.json",
            lambda m: {
                **m,
                "expected": {**m["expected"], "nodes": [{"name": 1, "role": "master"}]},
            },
        ),
    ),
    (
        Case("h-meta-nodeport", "'expected' is not usable", error=True),
        _edit("meta.json", lambda m: {**m, "expected": {**m["expected"], "nodeport": "30080"}}),
    ),
    (
        Case("h-meta-deadlines", "'expected' is not usable", error=True),
        _edit("meta.json", lambda m: {**m, "expected": {**m["expected"], "deadlines": [1]}}),
    ),
    (
        Case("h-meta-identity", "contradiction"),
        _edit("meta.json", lambda m: {**m, "cluster_identity": {"nodes": 5}, "student_id": {}}),
    ),
    (
        Case("h-cmd-argv", "'argv' is not a list of words", error=True),
        _commands(lambda lines, s: lines[0].update(argv=7)),
    ),
    (
        Case("h-cmd-timeout", "'timeout' is str", error=True),
        _commands(lambda lines, s: lines[0].update(timeout="60")),
    ),
    (
        Case("h-cmd-line", "not a JSON object", error=True),
        _commands(lambda lines, s: lines.insert(0, [])),  # type: ignore[arg-type]
    ),
    (
        Case("h-cmd-rc", "'rc' is bool", error=True),
        _commands(lambda lines, s: lines[0].update(rc=True)),
    ),
    (
        Case("h-nodes-items", "unreadable evidence"),
        _edit("nodes.json", lambda d: {**d, "items": [1, "x", None]}),
    ),
    (
        Case("h-pods-items", "not a Kubernetes list"),
        _edit("pods.json", lambda d: {**d, "items": {"a": 1}}),
    ),
    (Case("h-deployment-str", "unreadable evidence"), _write("nginx/deployment.json", b'"x"')),
    (
        Case("h-curl-record-list", "unreadable evidence"),
        _curl_output_at(lambda s: 5),  # type: ignore[arg-type,return-value]
    ),
    (
        Case("h-kube-system-uid", "cluster identity differs"),
        _edit("kube-system-namespace.json", lambda d: {"metadata": {"uid": {"a": [1]}}}),
    ),
    # Text that cannot be written, or that drives the teacher's terminal.
    (Case("h-surrogate", "hostname"), _node_name("\ud800master")),
    (Case("h-control", "hostname"), _node_name(f"{ESC}]0;pwned\a{ESC}[2J\r\nmaster")),
    (Case("h-long-name", "hostname"), _node_name("m" * 1_000_000)),
]


# --- archive cases: built byte by byte ---------------------------------------------------


def tar_header(name: str, size: int, kind: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0
    info.type = kind
    block = bytearray(info.tobuf(format=tarfile.USTAR_FORMAT))[:512]
    # The claimed size, in GNU base-256 (any size), then a fresh checksum.
    block[124:136] = b"\x80" + size.to_bytes(11, "big")
    block[148:156] = b" " * 8
    block[148:155] = f"{sum(block):06o}\0".encode()
    return bytes(block)


def _header_bomb(kind: bytes) -> Callable[[Path, str], None]:
    """A GNU long name (L) or pax (x) record claiming 8 GiB, then a few MB of zeros."""

    def write(path: Path, top: str) -> None:
        with gzip.open(path, "wb") as out:
            out.write(tar_header("././@LongLink", 8 << 30, kind))
            out.write(bytes(4 << 20))

    return write


def _members(add: Callable[[tarfile.TarFile, str], None]) -> Callable[[Path, str], None]:
    def write(path: Path, top: str) -> None:
        with tarfile.open(path, "w:gz") as tar:
            add(tar, top)

    return write


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"{}", kind: bytes = tarfile.REGTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _ratio_bomb(tar: tarfile.TarFile, top: str) -> None:
    # 30 MiB of zeros: under the per-member cap, about 30 KiB compressed.
    _add(tar, f"{top}/evidence/nodes.json", bytes(30 << 20))


def _many(tar: tarfile.TarFile, top: str) -> None:
    for n in range(5001):
        _add(tar, f"{top}/evidence/raw/{n}.stdout", b"")


def _special(kind: bytes) -> Callable[[tarfile.TarFile, str], None]:
    def add(tar: tarfile.TarFile, top: str) -> None:
        _add(tar, f"{top}/evidence/meta.json")
        info = tarfile.TarInfo(f"{top}/evidence/nodes.json")
        info.type = kind
        info.linkname = "/etc/passwd"
        info.devmajor, info.devminor = 1, 5
        tar.addfile(info)

    return add


def _duplicate(tar: tarfile.TarFile, top: str) -> None:
    _add(tar, f"{top}/evidence/nodes.json", b'{"items": []}')
    _add(tar, f"{top}/evidence/nodes.json", b'{"items": [1]}')


def _renamed(tar: tarfile.TarFile, top: str) -> None:
    _add(tar, f"kubelab-ex2-{BASE_STUDENT}/evidence/meta.json")


def _control_name(tar: tarfile.TarFile, top: str) -> None:
    _add(tar, f"{top}/evidence/{ESC}[2J{ESC}]0;pwned\a" + "x" * 5000, b"", tarfile.FIFOTYPE)


ARCHIVE_CASES: list[tuple[Case, Callable[[Path, str], None]]] = [
    (Case("h-longname-bomb", "a tar header record of", error=True), _header_bomb(b"L")),
    (Case("h-pax-bomb", "a tar header record of", error=True), _header_bomb(b"x")),
    (Case("h-ratio-bomb", "compression bomb", error=True), _members(_ratio_bomb)),
    (Case("h-many-members", "more than 5000 entries", error=True), _members(_many)),
    (Case("h-symlink", "not a plain file", error=True), _members(_special(tarfile.SYMTYPE))),
    (Case("h-hardlink", "not a plain file", error=True), _members(_special(tarfile.LNKTYPE))),
    (Case("h-device", "not a plain file", error=True), _members(_special(tarfile.CHRTYPE))),
    (Case("h-fifo", "not a plain file", error=True), _members(_special(tarfile.FIFOTYPE))),
    (Case("h-duplicate", "appears twice", error=True), _members(_duplicate)),
    # Identified by its contents (issue 11): another top folder is a name-mismatch flag.
    (Case("h-renamed", "name-mismatch", error=True), _members(_renamed)),
    (Case("h-control-member", "not a plain file", error=True), _members(_control_name)),
    (
        Case("h-not-gzip", "not a .tar.gz or .zip archive", error=True),
        lambda path, top: path.write_bytes(os.urandom(4096)),
    ),
]


def _report_cases() -> list[tuple[Case, Any]]:
    # report.json is for reading only: a broken one changes nothing, never crashes.
    return [
        (Case("h-report-types", "hostname"), {"results": 5, "items": "x"}),
        (Case("h-report-entries", "hostname"), {"results": [{"id": {}, "passed": []}, 7]}),
        (Case("h-report-deep", "hostname"), None),
    ]


# --- building ----------------------------------------------------------------------------


def base_evidence(root: Path) -> Path:
    cluster = derive_cluster(BASE_STUDENT, BASE_INDEX, Variant())
    return collect_evidence(cluster, root / "base" / "evidence")


def pack(evidence: Path, student: str, out: Path, report: bytes | None) -> Path:
    """A hand-in as make_handin writes it, but with any report.json bytes."""
    top = archive_name(2, student).removesuffix(".tar.gz")
    path = out / f"{top}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        if report is not None:
            _add(tar, f"{top}/{REPORT}", report)
        tar.add(evidence, arcname=f"{top}/{EVIDENCE}")
    return path


def build_corpus(root: Path, secret: Path) -> list[Case]:
    """Every hostile hand-in into root/handins; the cases, with what each row must say."""
    handins = root / "handins"
    handins.mkdir(parents=True, exist_ok=True)
    base = base_evidence(root)
    honest_report = json.dumps(
        {"results": [r.to_dict() for r in evaluate(base, _expected(base))]}
    ).encode()
    cases = []
    for case, mutate in EVIDENCE_CASES:
        evidence = root / "cases" / case.student / EVIDENCE
        shutil.copytree(base, evidence)
        mutate(evidence, secret)
        pack(evidence, case.student, handins, honest_report)
        cases.append(case)
    for case, report in _report_cases():
        data = json.dumps(report).encode() if report is not None else b"[" * 100_000
        pack(base, case.student, handins, data)
        cases.append(case)
    for case, write in ARCHIVE_CASES:
        name = archive_name(2, case.student)
        write(handins / name, name.removesuffix(".tar.gz"))
        cases.append(case)
    return cases


def _expected(evidence: Path) -> Any:
    from kubelab.grade.grading import expected_from_meta

    return expected_from_meta(json.loads((evidence / "meta.json").read_text()))


# --- folders: what a tar cannot carry --------------------------------------------------------

FOLDER_CASES = ("symlink-out", "symlink-dev", "fifo", "socket", "folder", "char-device")


def build_folders(root: Path, secret: Path) -> dict[str, Path]:
    """Evidence folders whose nodes.json is not a regular file inside the folder."""
    base = base_evidence(root)
    folders = {}
    for case in FOLDER_CASES:
        evidence = root / "folders" / case
        shutil.copytree(base, evidence)
        nodes = evidence / "nodes.json"
        nodes.unlink()
        if case == "symlink-out":
            nodes.symlink_to(secret)
        elif case == "symlink-dev":
            nodes.symlink_to("/dev/zero")
        elif case == "fifo":
            os.mkfifo(nodes)
        elif case == "socket":
            with socket.socket(socket.AF_UNIX) as sock:
                sock.bind(str(nodes))
        elif case == "folder":
            nodes.mkdir()
        elif case == "char-device":
            nodes.symlink_to("/dev/null")
        folders[case] = evidence
    return folders


if __name__ == "__main__":
    out = Path(sys.argv[1])
    secret_file = out / "secret.txt"
    out.mkdir(parents=True, exist_ok=True)
    secret_file.write_text(SECRET_TEXT + "\n")
    for built in build_corpus(out / "corpus", secret_file):
        print(f"{built.student}: {built.why}")
