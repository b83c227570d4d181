"""Hand-in archives: one per student and exercise, written by the student, read by the teacher.

    kubelab-ex<N>-<student>.tar.gz
        kubelab-ex<N>-<student>/report.json   the student's results and score per item
        kubelab-ex<N>-<student>/evidence/...  the evidence folder verify wrote

report.json is for the student and for a quick look; the teacher's grade comes from
evidence/ alone. Reading is defensive: archives come from students, so only plain
files and folders under the one top folder are taken, never links, devices, absolute
paths or "..", and the number of members and their sizes are capped.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kubelab import __version__
from kubelab.errors import KubelabError
from kubelab.grade.grading import FORMAT, StudentGrade, fmt, grade_evidence
from kubelab.grade.rubric import Rubric, load_rubric
from kubelab.verify import CheckResult
from kubelab.verify.evidence import now

REPORT = "report.json"
EVIDENCE = "evidence"
STUDENT_ID = re.compile(r"^[A-Za-z0-9-]{1,32}$")
# The student ID is the rest of the name: IDs may hold "-", the exercise is digits only.
NAME = re.compile(r"^kubelab-ex(?P<exercise>\d+)-(?P<student>[A-Za-z0-9-]{1,32})\.tar\.gz$")
NAME_PREFIX = "kubelab-ex"


class ArchiveError(KubelabError):
    """A hand-in that cannot be read: not a gzip tar, unsafe, too large, or misnamed."""


@dataclass(frozen=True)
class Limits:
    """What one hand-in may hold. A 3-node lab's evidence is well under 5 MB."""

    members: int = 5000
    file_bytes: int = 32 * 1024 * 1024
    total_bytes: int = 128 * 1024 * 1024


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Handin:
    student: str
    exercise: int
    archive: Path
    evidence_dir: Path
    report: dict[str, Any] | None  # report.json as handed in; None when absent or unreadable


def archive_name(exercise: int | str, student: str) -> str:
    return f"{NAME_PREFIX}{exercise}-{student}.tar.gz"


def check_student_id(student: str) -> str:
    if not STUDENT_ID.match(student or ""):
        raise KubelabError(
            f"student ID {student!r} is not usable in a file name",
            hint="use letters, digits and '-' only, at most 32 characters (e.g. 2021123456)",
        )
    return student


def parse_name(name: str) -> tuple[int, str] | None:
    """(exercise, student) from an archive's file name, or None when it is not one of ours."""
    match = NAME.match(name)
    return (int(match["exercise"]), match["student"]) if match else None


# --- writing (the student) -------------------------------------------------------


def make_handin(
    evidence_dir: Path | str,
    results: Sequence[CheckResult],
    student: str,
    exercise: int | str,
    out_dir: Path | str,
    *,
    rubric: Rubric | None = None,
) -> Path:
    """Write kubelab-ex<N>-<student>.tar.gz into out_dir: report.json and the evidence."""
    check_student_id(student)
    evidence_dir = Path(evidence_dir)
    if not evidence_dir.is_dir():
        raise KubelabError(
            f"no evidence folder at {evidence_dir}",
            hint="run `invoke verify` first; it writes the evidence the hand-in carries",
        )
    rubric = rubric or load_rubric(exercise)
    grade = grade_evidence(evidence_dir, student, rubric, source="verify")
    report = {
        "format": FORMAT,
        "kubelab_version": __version__,
        "student": student,
        "exercise": int(exercise),
        "created": now(),
        "note": "the teacher re-grades from evidence/; this report is for reading only",
        "results": [r.to_dict() for r in results],
        "items": [i.to_dict() for i in grade.items],
        "total": grade.total,
        "max_points": grade.max_points,
    }
    top = archive_name(exercise, student).removesuffix(".tar.gz")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{top}.tar.gz"
    # Written beside the target and renamed, so a half-written archive never has its name.
    fd, tmp = tempfile.mkstemp(prefix=f".{top}.", suffix=".tmp", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            _add_bytes(tar, f"{top}/{REPORT}", json.dumps(report, indent=2).encode() + b"\n")
            tar.add(evidence_dir, arcname=f"{top}/{EVIDENCE}", filter=_plain_only)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _plain_only(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    # Evidence is files and folders; anything else (a link) stays out of the hand-in.
    if not (info.isfile() or info.isdir()):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info


# --- reading (the teacher) -------------------------------------------------------


def safe_extract(archive: Path, dest: Path, top: str, limits: Limits = DEFAULT_LIMITS) -> None:
    """Extract `archive` into `dest`, taking only plain files and folders under `top/`."""
    dest.mkdir(parents=True, exist_ok=True)
    members = written = 0
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar:
                members += 1
                if members > limits.members:
                    raise ArchiveError(f"{archive.name}: more than {limits.members} entries")
                rel = _member_path(archive, member, top)
                target = dest.joinpath(*rel.parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if member.size > limits.file_bytes:
                    raise ArchiveError(
                        f"{archive.name}: {member.name} is {member.size} bytes "
                        f"(limit {limits.file_bytes})"
                    )
                written += member.size
                if written > limits.total_bytes:
                    raise ArchiveError(
                        f"{archive.name}: more than {limits.total_bytes} bytes unpacked"
                    )
                source = tar.extractfile(member)
                if source is None:
                    raise ArchiveError(f"{archive.name}: cannot read {member.name}")
                target.parent.mkdir(parents=True, exist_ok=True)
                # "xb": a second member with the same name is refused, not silently merged.
                with source, open(target, "xb") as out:
                    shutil.copyfileobj(source, out, 65536)
    except ArchiveError:
        raise
    except FileExistsError as exc:
        raise ArchiveError(f"{archive.name}: an entry appears twice ({exc.filename})") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ArchiveError(
            f"{archive.name}: not a readable .tar.gz ({type(exc).__name__}: {exc})"
        ) from None


def _member_path(archive: Path, member: tarfile.TarInfo, top: str) -> PurePosixPath:
    if not (member.isfile() or member.isdir()):
        raise ArchiveError(f"{archive.name}: {member.name} is not a plain file or folder")
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or "\\" in member.name or "\0" in member.name:
        raise ArchiveError(f"{archive.name}: unsafe path {member.name!r}")
    if not path.parts or path.parts[0] != top:
        raise ArchiveError(f"{archive.name}: {member.name} is outside {top}/")
    return path


def read_handin(archive: Path | str, dest: Path | str, limits: Limits = DEFAULT_LIMITS) -> Handin:
    """Check an archive's name, unpack it safely into `dest` (emptied first), return it."""
    archive = Path(archive)
    parsed = parse_name(archive.name)
    if parsed is None:
        raise ArchiveError(
            f"{archive.name}: not named kubelab-ex<N>-<student>.tar.gz",
            hint="hand-ins are made by `invoke verify --exercise N --student ID`",
        )
    exercise, student = parsed
    top = archive.name.removesuffix(".tar.gz")
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    safe_extract(archive, dest, top, limits)
    root = dest / top
    evidence_dir = root / EVIDENCE
    if not evidence_dir.is_dir():
        raise ArchiveError(f"{archive.name}: no {top}/{EVIDENCE}/ folder")
    report = None
    if (root / REPORT).is_file():
        try:
            loaded = json.loads((root / REPORT).read_text(encoding="utf-8"))
            report = loaded if isinstance(loaded, dict) else None
        except (ValueError, UnicodeDecodeError):
            report = None
    return Handin(student, exercise, archive, evidence_dir, report)


def summary_line(grade: StudentGrade) -> str:
    if not grade.graded:
        return f"{grade.student}: error: {grade.error}"
    return f"{grade.student}: {fmt(grade.total)}/{fmt(grade.max_points)}"
