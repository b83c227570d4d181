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

import gzip
import io
import json
import os
import re
import shutil
import tarfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kubelab import __version__, atomicfile, safeio
from kubelab.errors import KubelabError
from kubelab.grade.grading import FORMAT, StudentGrade, fmt, grade_evidence
from kubelab.grade.rubric import Rubric, load_rubric
from kubelab.names import STUDENT_ID_PATTERN, is_student_id
from kubelab.verify import CheckResult
from kubelab.verify.evidence import now

shown = safeio.shown

REPORT = "report.json"
EVIDENCE = "evidence"
# The student ID is the rest of the name: IDs may hold "-", the exercise is digits only.
NAME = re.compile(rf"^kubelab-ex(?P<exercise>\d+)-(?P<student>{STUDENT_ID_PATTERN})\.tar\.gz$")
NAME_PREFIX = "kubelab-ex"


class ArchiveError(KubelabError):
    """A hand-in that cannot be read: not a gzip tar, unsafe, too large, or misnamed."""


@dataclass(frozen=True)
class Limits:
    """What one hand-in may hold. A 3-node lab's evidence is well under 5 MB.

    `header_bytes` bounds the tar records that carry no file but metadata for the next
    one (GNU long names, pax headers): tarfile reads them whole into memory, so one
    such record claiming gigabytes would cost gigabytes. `ratio` bounds how much the
    archive may grow when unpacked (gzip of JSON is about 10:1; a bomb is 1000:1),
    checked once `ratio_floor` bytes are out, so small archives are never refused.
    """

    members: int = 5000
    file_bytes: int = 32 * 1024 * 1024
    total_bytes: int = 128 * 1024 * 1024
    header_bytes: int = 64 * 1024
    ratio: int = 100
    ratio_floor: int = 4 * 1024 * 1024


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
    if not is_student_id(student or ""):
        raise KubelabError(
            f"student ID {student!r} is not usable in a file name",
            hint="use letters, digits and '-' (not at either end), at most 32 characters "
            "(e.g. 2021123456)",
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
    # A half-written archive never has its name.
    with (
        atomicfile.replacing(target, binary=True) as raw,
        tarfile.open(fileobj=raw, mode="w:gz") as tar,
    ):
        _add_bytes(tar, f"{top}/{REPORT}", json.dumps(report, indent=2).encode() + b"\n")
        tar.add(evidence_dir, arcname=f"{top}/{EVIDENCE}", filter=_plain_only)
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
    """Extract `archive` into `dest`, taking only plain files and folders under `top/`.

    The archive is first walked record by record without tarfile (check_bounds), so
    nothing it claims is believed before it is counted; then unpacked. Files are
    created 0600 and folders 0700. On any failure nothing of it is left in `dest`.
    """
    try:
        check_bounds(archive, limits)
        _extract(archive, dest, top, limits)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _private_dirs(path: Path, base: Path) -> None:
    """mkdir -p of `path` below `base`, every new folder 0700 from its creation
    (pathlib's parents=True would make the intermediate ones with the default mode)."""
    current = base
    for part in path.relative_to(base).parts:
        current = current / part
        current.mkdir(exist_ok=True, mode=0o700)


def _extract(archive: Path, dest: Path, top: str, limits: Limits) -> None:
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
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
                    _private_dirs(target, dest)
                    continue
                if member.size > limits.file_bytes:
                    raise ArchiveError(
                        f"{archive.name}: {shown(member.name)} is {member.size} bytes "
                        f"(limit {limits.file_bytes})"
                    )
                written += member.size
                if written > limits.total_bytes:
                    raise ArchiveError(
                        f"{archive.name}: more than {limits.total_bytes} bytes unpacked"
                    )
                source = tar.extractfile(member)
                if source is None:
                    raise ArchiveError(f"{archive.name}: cannot read {shown(member.name)}")
                _private_dirs(target.parent, dest)
                # O_EXCL: a second member with the same name is refused, not silently
                # merged; O_NOFOLLOW: never through a link; 0600: the teacher's only.
                fd = os.open(
                    target,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                )
                with source, os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(source, out, 65536)
    except ArchiveError:
        raise
    except FileExistsError as exc:
        raise ArchiveError(
            f"{archive.name}: an entry appears twice ({shown(Path(exc.filename).name)})"
        ) from None
    except (tarfile.TarError, EOFError, zlib.error, OSError, UnicodeError, ValueError) as exc:
        raise ArchiveError(
            f"{archive.name}: not a readable .tar.gz ({type(exc).__name__}: {shown(exc, 120)})"
        ) from None


# Tar record types that describe the next record rather than being a member.
_META_TYPES = {b"L", b"K", b"x", b"g", b"X"}
_BLOCK = 512


def check_bounds(archive: Path, limits: Limits = DEFAULT_LIMITS) -> None:
    """Walk the gzip'd tar stream's headers; ArchiveError at the first bound it breaks.

    Reads the stream once, in blocks, holding at most one block and one metadata
    record (at most `limits.header_bytes`) in memory.
    """
    compressed = archive.stat().st_size
    stream_cap = limits.total_bytes + (limits.members * 2 + 2) * _BLOCK + 4 * limits.header_bytes
    try:
        with gzip.open(archive, "rb") as raw:
            unpacked = 0
            counts = {False: 0, True: 0}  # members, metadata records
            pax_size: int | None = None

            def read(size: int) -> bytes:
                nonlocal unpacked
                data = raw.read(size)
                unpacked += len(data)
                if unpacked > stream_cap:
                    raise ArchiveError(
                        f"{archive.name}: more than {limits.total_bytes} bytes unpacked"
                    )
                if unpacked > limits.ratio_floor and unpacked > limits.ratio * compressed:
                    raise ArchiveError(
                        f"{archive.name}: unpacks to more than {limits.ratio} times its size "
                        "(a compression bomb?)"
                    )
                return data

            while True:
                header = read(_BLOCK)
                if len(header) < _BLOCK or header == bytes(_BLOCK):
                    return  # the end-of-archive blocks (or a short tail tarfile reports)
                size = _header_size(header)
                if size is None or not _checksum_ok(header):
                    # Where a header must be, something else: a walk that lost its
                    # place could no longer vouch for what follows.
                    raise ArchiveError(f"{archive.name}: a damaged tar header")
                kind = header[156:157]
                if pax_size is not None and kind not in _META_TYPES:
                    size, pax_size = pax_size, None  # a pax header's size= overrides
                # Each member may carry metadata records of its own; count the two apart.
                counts[kind in _META_TYPES] += 1
                if max(counts.values()) > limits.members:
                    raise ArchiveError(f"{archive.name}: more than {limits.members} entries")
                if kind in _META_TYPES and size > limits.header_bytes:
                    raise ArchiveError(
                        f"{archive.name}: a tar header record of {size} bytes "
                        f"(limit {limits.header_bytes})"
                    )
                if size > limits.file_bytes:
                    raise ArchiveError(
                        f"{archive.name}: an entry of {size} bytes (limit {limits.file_bytes})"
                    )
                padded = -(-size // _BLOCK) * _BLOCK
                if kind == b"x":
                    pax_size = _pax_size(read(padded)[:size])
                    continue
                left = padded
                while left > 0:
                    chunk = read(min(left, 65536))
                    if not chunk:
                        return
                    left -= len(chunk)
    except ArchiveError:
        raise
    except EOFError as exc:  # the gzip stream ends early: an upload cut short
        raise ArchiveError(f"{archive.name}: the archive is cut off ({shown(exc, 120)})") from None
    except (OSError, zlib.error, ValueError) as exc:
        raise ArchiveError(
            f"{archive.name}: not a readable .tar.gz ({type(exc).__name__}: {shown(exc, 120)})"
        ) from None


_ASCII = bytes(range(128))  # deleted by translate(): what is left are the bytes over 127


def _checksum_ok(header: bytes) -> bool:
    """The header's checksum, summed as unsigned or as signed bytes (tarfile takes both)."""
    try:
        stored = int(header[148:156].split(b"\0", 1)[0].strip(b" ") or b"0", 8)
    except ValueError:
        return False
    rest = header[:148] + b" " * 8 + header[156:]
    unsigned = sum(rest)
    # As signed bytes each byte over 127 counts 256 less; counted in C, not per byte in
    # Python (every header of every hand-in is checked).
    return stored in (unsigned, unsigned - 256 * len(rest.translate(None, _ASCII)))


def _pax_size(records: bytes) -> int | None:
    """The size= of a pax extended header ("<len> size=<n>\\n" records), if it has one."""
    for record in records.split(b"\n"):
        _, _, field = record.partition(b" ")
        if field.startswith(b"size="):
            try:
                return int(field[5:])
            except ValueError:
                return None
    return None


def _header_size(header: bytes) -> int | None:
    """The size field of a tar header: octal, or GNU's base-256 for large values."""
    field = header[124:136]
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" \0")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        return None


def _member_path(archive: Path, member: tarfile.TarInfo, top: str) -> PurePosixPath:
    if not (member.isfile() or member.isdir()):
        raise ArchiveError(f"{archive.name}: {shown(member.name)} is not a plain file or folder")
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or "\\" in member.name or "\0" in member.name:
        raise ArchiveError(f"{archive.name}: unsafe path {shown(repr(member.name))}")
    if not path.parts or path.parts[0] != top:
        raise ArchiveError(f"{archive.name}: {shown(member.name)} is outside {top}/")
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
    try:
        loaded = safeio.parse_json(safeio.read_confined(root, REPORT))
        report = loaded if isinstance(loaded, dict) else None
    except (OSError, safeio.Unreadable):
        report = None  # report.json is for reading only: without one, the grade is the same
    return Handin(student, exercise, archive, evidence_dir, report)


def summary_line(grade: StudentGrade) -> str:
    if not grade.graded:
        return f"{grade.student}: error: {grade.error}"
    return f"{grade.student}: {fmt(grade.total)}/{fmt(grade.max_points)}"
