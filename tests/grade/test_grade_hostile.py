"""The hostile corpus graded with an honest class: one student's file never harms the rest.

For every case (hostile_corpus.py): the class run finishes, every honest student's
row is what it is without the corpus, nothing is read or written outside the
hand-in and output folders (Python's audit hooks see every open), the offending
row says why, no output holds the secret the cases point at or a terminal control
character, and the run's peak memory stays under MEMORY_BOUND_MIB.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kubelab import REPO_ROOT
from kubelab.grade.gradebook import grade_handins
from kubelab.grade.grading import grade_evidence
from kubelab.grade.rubric import Rubric
from tests.grade.handin_class import SyntheticClass
from tests.grade.hostile_corpus import (
    ARCHIVE_CASES,
    FOLDER_CASES,
    SECRET_TEXT,
    Case,
    build_corpus,
    build_folders,
)

# The whole class and corpus (50 hand-ins, a 30 MiB ratio bomb, an 8 GiB header claim)
# are graded in one process that must stay under this much resident memory.
MEMORY_BOUND_MIB = 300


@pytest.fixture(scope="module")
def hostile_run(
    synthetic_class: SyntheticClass, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("hostile")
    secret = root / "secret.txt"
    secret.write_text(SECRET_TEXT + "\n")
    handins = root / "handins"
    shutil.copytree(synthetic_class.handins, handins)
    cases = build_corpus(root / "corpus", secret)
    for archive in (root / "corpus" / "handins").iterdir():
        archive.rename(handins / archive.name)
    clean_out, out = root / "clean", root / "out"
    grade_handins(synthetic_class.handins, 2, clean_out, gradescope=True)
    started = time.monotonic()
    probe = subprocess.run(
        [sys.executable, "-m", "tests.grade.hostile_probe", str(handins), str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    seconds = time.monotonic() - started
    report = json.loads(probe.stdout)
    print(
        f"\nhostile class run: {report['students']} rows in {seconds:.1f} s, "
        f"peak RSS {report['peak_rss_kib'] / 1024:.0f} MiB"
    )
    return {
        "cases": cases,
        "report": report,
        "root": root,
        "handins": handins,
        "out": out,
        "clean": clean_out,
        "secret": secret,
    }


def rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / "gradebook.csv").open(newline="") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


def row_text(out: Path, student: str) -> str:
    result = json.loads((out / "results" / f"{student}.json").read_text())
    parts = [result["error"], *(f"{f['kind']}: {f['detail']}" for f in result["flags"])]
    parts += [c["detail"] for c in result["checks"]] + [i["detail"] for i in result["items"]]
    return "\n".join(parts)


def test_every_honest_row_is_unchanged(hostile_run: dict[str, Any]) -> None:
    clean, hostile = rows(hostile_run["clean"]), rows(hostile_run["out"])
    assert clean and set(clean) <= set(hostile)
    for student, row in clean.items():
        assert hostile[student] == row, student


def test_every_case_is_one_row_that_says_why(hostile_run: dict[str, Any]) -> None:
    hostile = rows(hostile_run["out"])
    cases: list[Case] = hostile_run["cases"]
    assert len(cases) >= 40
    for case in cases:
        row = hostile[case.student]
        assert row["status"] == ("error" if case.error else "graded"), (case, row.get("error"))
        assert case.why in row_text(hostile_run["out"], case.student), case
    # And each one got its feedback, as every student does.
    for case in cases:
        assert (hostile_run["out"] / "feedback" / f"{case.student}.md").is_file()


def test_nothing_read_or_written_outside_the_handins_and_outputs(
    hostile_run: dict[str, Any],
) -> None:
    handins, out = hostile_run["handins"], hostile_run["out"]
    code = {REPO_ROOT / "kubelab", REPO_ROOT / "labs", Path(sys.prefix), Path(sys.base_prefix)}

    def inside(path: str, roots: set[Path]) -> bool:
        real = Path(os.path.abspath(os.path.join(REPO_ROOT, path)))
        return any(real == r or r in real.parents for r in roots)

    report = hostile_run["report"]
    reads = {p for p, writes in report["opened"] if not writes}
    # mkdir(parents=True, exist_ok=True) asks for out/'s existing parents too.
    out_parents = {str(p) for p in out.parents}
    changed = {p for event, p in report["changed"] if event != "os.mkdir" or p not in out_parents}
    writes = {p for p, writes in report["opened"] if writes} | changed
    assert reads and writes
    # shutil.rmtree (clearing a refused hand-in's partial unpacking) opens and removes
    # each entry by its bare name relative to its folder's descriptor: such a name must
    # be one the grader itself wrote under out/.
    full_writes = {p for p in writes if os.sep in p}
    assert not [p for p in full_writes if not inside(p, {out})]
    written_names = {part for p in full_writes for part in Path(p).parts}
    bare = {p for p in reads | writes if os.sep not in p}
    assert bare <= written_names
    assert not [p for p in reads - bare if not inside(p, {handins, out, *code})]
    assert str(hostile_run["secret"]) not in reads


def test_no_output_holds_the_secret_or_a_control_character(hostile_run: dict[str, Any]) -> None:
    out = hostile_run["out"]
    files = [p for p in out.rglob("*") if p.is_file() and "handins" not in p.parts]
    assert len(files) > 100
    for path in files:
        data = path.read_bytes()
        assert SECRET_TEXT.encode() not in data, path
        assert b"\x1b" not in data, path
        data.decode("utf-8")  # every output is valid UTF-8 (no lone surrogate stopped it)
    # Echoed text is capped: the 1 MB node name costs the outputs a few hundred bytes.
    assert (out / "results" / "h-long-name.json").stat().st_size < 64 * 1024


def test_memory_stays_under_the_bound(hostile_run: dict[str, Any]) -> None:
    peak_mib = hostile_run["report"]["peak_rss_kib"] / 1024
    print(f"peak RSS {peak_mib:.0f} MiB (bound {MEMORY_BOUND_MIB} MiB)")
    assert peak_mib < MEMORY_BOUND_MIB


def test_outputs_and_unpacked_handins_are_private(hostile_run: dict[str, Any]) -> None:
    out = hostile_run["out"]
    # gradescope.py writes its files itself; the 0700 folder they sit in keeps others out.
    assert stat.S_IMODE((out / "gradescope").stat().st_mode) == 0o700
    for path in [out, *out.rglob("*")]:
        if path.parent != out and path.relative_to(out).parts[:1] == ("gradescope",):
            continue
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode & 0o077 == 0, (path, oct(mode))


def test_refused_archives_leave_nothing_unpacked(hostile_run: dict[str, Any]) -> None:
    unpacked = hostile_run["out"] / "handins"
    for case, _ in ARCHIVE_CASES:
        if case.why == "name-mismatch":
            continue  # not refused: read by its contents (intake), graded as an error row
        assert not (unpacked / case.student).exists(), case


@pytest.mark.parametrize("case", FOLDER_CASES)
def test_an_evidence_folder_cannot_lead_out_or_hang(
    case: str, rubric: Rubric, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET_TEXT + "\n")
    folders = build_folders(tmp_path, secret)
    grade = grade_evidence(folders[case], "2029900", rubric)
    assert grade.graded
    nodes = next(c for c in grade.checks if c.id == "nodes")
    assert nodes.detail.startswith("unreadable evidence: nodes.json"), nodes.detail
    assert SECRET_TEXT not in json.dumps(grade.to_dict())
