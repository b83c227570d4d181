"""Intake: every file in the hand-in folder, identified by what it holds and by its name.

Hand-ins do not arrive as `invoke verify` named them. An LMS prefixes the
submitter (`lisi_48227_1093377_kubelab-ex2-21370027.tar.gz`), a browser saves a
second download as `kubelab-ex2-21370031 (1).tar.gz`, Windows upper-cases the
extension, a student re-zips the folder (`.zip`) or renames it (`.tgz`), an upload
is cut off, a folder holds a stray README. So a file is identified twice:

    by its name      kubelab-ex<N>-<ID> anywhere in it, then .tar.gz, .tgz or .zip
    by its content   the archive's one top folder kubelab-ex<N>-<ID>/ and the
                     student and exercise that evidence/meta.json records

and each file ends as exactly one `Arrival` with an outcome: graded, an error row
(with the reason and what the student should do), superseded by another hand-in
of the same student, another exercise's, or not a hand-in. Nothing is dropped.

Extraction itself is archive.safe_extract (one safe path): a .zip is first
re-packed member by member into a .tar.gz under the same limits.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import shutil
import tarfile
import time
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubelab import safeio
from kubelab.grade.archive import (
    EVIDENCE,
    REPORT,
    ArchiveError,
    Limits,
    archive_name,
    check_bounds,
    safe_extract,
)
from kubelab.grade.integrity import _identity_keys
from kubelab.names import STUDENT_ID_PATTERN, is_student_id
from kubelab.verify.evidence import META

# kubelab-ex<N>-<ID> anywhere in the name (an LMS prefix before it), an optional
# browser copy number, then one of the archive extensions, in any case.
NAME = re.compile(
    rf"kubelab-ex(?P<exercise>\d+)-(?P<student>{STUDENT_ID_PATTERN}?)"
    r"(?:\s*\(\d+\))?\.(?P<ext>tar\.gz|tgz|tar|zip)$",
    re.IGNORECASE,
)
TOP = re.compile(rf"^kubelab-ex(?P<exercise>\d+)-(?P<student>{STUDENT_ID_PATTERN})$")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip", ".tar")
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
SMALL_JSON = 4 * 1024 * 1024  # meta.json / report.json larger than this are not read

# Outcomes: what became of a file.
GRADED = "graded"
ERROR = "error"
SUPERSEDED = "superseded"
OTHER_EXERCISE = "other-exercise"
NOT_HANDIN = "not-a-hand-in"

# Flags intake raises (kinds, as integrity's).
NAME_MISMATCH = "name-mismatch"
COPY = "copy"
LATE = "late"


class NotOurs(ArchiveError):
    """An archive that reads fine but is not laid out as a hand-in (no one top folder)."""


@dataclass
class Arrival:
    """One file found in the hand-in folder, and what became of it."""

    path: Path
    rel: str  # the path under the hand-in folder, as the teacher sees it
    size: int
    mtime: float  # the file's own time (when it was saved or downloaded)
    name_exercise: int | None = None
    name_student: str | None = None
    content_exercise: int | None = None
    content_student: str | None = None
    top: str | None = None  # the archive's one top folder
    readable: bool = False  # unpacked safely, with an evidence folder
    looks_like_archive: bool = False
    damaged: bool = False  # an archive that cannot be read (cut off, corrupt, unsafe)
    problem: str = ""  # why it cannot be graded
    advice: str = ""  # what the student should do about it
    unpacked: Path | None = None  # the top folder, once unpacked
    report: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    digest: str = ""  # sha256 over the evidence folder's files
    student: str | None = None  # whose row it goes to
    exercise: int | None = None
    outcome: str = ""
    detail: str = ""  # the outcome in words

    @property
    def evidence_dir(self) -> Path | None:
        return self.unpacked / EVIDENCE if self.unpacked else None

    @property
    def finished(self) -> str:
        """When the evidence was finished, as meta.json records it ('' when it does not)."""
        value = self.meta.get("finished") or self.meta.get("started")
        return str(value) if value else ""

    @property
    def packed(self) -> str:
        """When `invoke verify` packed the archive (its report.json's 'created')."""
        value = (self.report or {}).get("created")
        return str(value) if value else ""

    @property
    def file_time(self) -> str:
        return datetime.fromtimestamp(self.mtime, UTC).isoformat(timespec="seconds")

    def to_row(self) -> dict[str, str]:
        return {
            "file": self.rel,
            "outcome": self.outcome,
            "student": self.student or "",
            "exercise": "" if self.exercise is None else str(self.exercise),
            "detail": self.detail,
        }


@dataclass
class Intake:
    """The whole folder: every file's arrival, and the one hand-in chosen per student."""

    exercise: int
    arrivals: list[Arrival]
    chosen: dict[str, Arrival]  # student -> the hand-in to grade
    failed: dict[str, Arrival]  # student -> why no hand-in of theirs can be graded
    flags: dict[str, list[tuple[str, str]]]  # student -> (kind, detail) raised by intake

    def outcome(self, kind: str) -> list[Arrival]:
        return [a for a in self.arrivals if a.outcome == kind]

    def misfiled(self) -> list[Arrival]:
        return self.outcome(OTHER_EXERCISE)


# --- identification -----------------------------------------------------------------


def parse_loose_name(name: str) -> tuple[int, str] | None:
    """(exercise, student) from a file name as hand-ins really arrive, or None."""
    match = NAME.search(name)
    if not match:
        return None
    return int(match["exercise"]), match["student"]


def list_files(folder: Path, skip: Path | None = None) -> list[Path]:
    """Every regular file under `folder` (links are listed too: they are reported, not
    read), except under `skip` (the outputs, when the teacher puts them in there)."""
    skipped = skip.resolve() if skip else None
    return sorted(
        p
        for p in folder.rglob("*")
        if (p.is_file() or p.is_symlink())
        and not (skipped and p.parent.resolve().is_relative_to(skipped))
    )


def _sniff(path: Path) -> tuple[bytes, bool]:
    """The file's first bytes, and whether it is a plain (ustar) tar."""
    with path.open("rb") as f:
        head = f.read(512)
    return head[:8], head[257:262] == b"ustar"


def identify(path: Path, folder: Path, dest: Path, limits: Limits) -> Arrival:
    """Look at one file: its name, then (if it is an archive) what it holds, unpacked
    into `dest`."""
    rel = str(path.relative_to(folder))
    stat = path.lstat()
    arrival = Arrival(path, rel, stat.st_size, stat.st_mtime)
    parsed = parse_loose_name(path.name)
    if parsed:
        arrival.name_exercise, arrival.name_student = parsed
    if path.is_symlink():
        arrival.problem = "a symbolic link, not a file: not followed"
        arrival.advice = "upload the archive itself"
        arrival.looks_like_archive = bool(parsed)
        return arrival
    head, is_tar = _sniff(path)
    is_gzip, is_zip = head.startswith(GZIP_MAGIC), head.startswith(ZIP_MAGIC)
    arrival.looks_like_archive = (
        bool(parsed) or is_gzip or is_zip or is_tar or path.name.lower().endswith(ARCHIVE_SUFFIXES)
    )
    if not arrival.looks_like_archive:
        return arrival
    upload = arrival.name_student and path.name
    if stat.st_size == 0:
        arrival.damaged = True
        arrival.problem = "the file is empty"
        arrival.advice = f"your upload was empty: upload {upload or 'your hand-in'} again"
        return arrival
    if not (is_gzip or is_zip or is_tar):
        arrival.damaged = True
        arrival.problem = f"not a .tar.gz or .zip archive (it starts with {head[:8]!r})"
        arrival.advice = (
            "upload the kubelab-ex<N>-<ID>.tar.gz that `invoke verify` wrote, unchanged"
        )
        return arrival
    try:
        tarball = path
        if is_zip:
            tarball = _zip_to_tar(path, dest.with_suffix(".tar.gz"), limits)
        elif is_tar:  # a .tar.gz a browser un-gzipped on download (Safari does)
            tarball = _gzip_copy(path, dest.with_suffix(".tar.gz"), limits)
        arrival.top = _top_folder(tarball, limits)
        safe_extract(tarball, dest, arrival.top, limits)
    except ArchiveError as exc:
        arrival.problem = exc.message.split(": ", 1)[-1]
        arrival.advice = _advice(arrival, exc.message)
        arrival.damaged = not isinstance(exc, NotOurs)
        return arrival
    root = dest / arrival.top
    top_match = TOP.match(arrival.top)
    if not top_match and not arrival.name_student:
        arrival.problem = f"an archive of {arrival.top}/, not a kubelab hand-in"
        return arrival
    if top_match:
        arrival.content_exercise = int(top_match["exercise"])
        arrival.content_student = top_match["student"]
    meta = _small_json(root / EVIDENCE / META)
    if isinstance(meta, dict):
        arrival.meta = meta
        claimed = meta.get("student_id")
        if isinstance(claimed, str) and is_student_id(claimed):
            arrival.content_student = claimed
        if isinstance(meta.get("exercise"), int) and not isinstance(meta["exercise"], bool):
            arrival.content_exercise = meta["exercise"]
    report = _small_json(root / REPORT)
    arrival.report = report if isinstance(report, dict) else None
    if not (root / EVIDENCE).is_dir():
        arrival.problem = f"no {arrival.top}/{EVIDENCE}/ folder: there is nothing to grade"
        arrival.advice = (
            "run `invoke verify --exercise N --student ID` and upload the archive it writes"
        )
        return arrival
    arrival.unpacked = root
    arrival.readable = True
    arrival.digest = evidence_digest(root / EVIDENCE)
    return arrival


def _advice(arrival: Arrival, message: str) -> str:
    """What the student should do, naming the file as they know it (no LMS prefix)."""
    exercise, student = arrival.name_exercise, arrival.name_student
    name = archive_name(exercise, student) if student and exercise is not None else None
    if "cut off" in message:
        return f"your upload was cut off: upload {name or arrival.path.name} again"
    return (
        f"make the hand-in again with `invoke verify --exercise {exercise or 'N'} "
        f"--student {student or 'ID'}` and upload {name or 'the archive it writes'}, unchanged"
    )


def _top_folder(tarball: Path, limits: Limits) -> str:
    """The archive's one top folder; an archive with several or none is not ours."""
    # Headers are walked and bounded (long names, pax records, sizes, ratio) before
    # tarfile parses anything: tarfile itself would read a huge header into memory.
    check_bounds(tarball, limits)
    tops: set[str] = set()
    try:
        with tarfile.open(tarball, mode="r:gz") as tar:
            claimed = 0
            for count, member in enumerate(tar, start=1):
                if count > limits.members:
                    raise ArchiveError(f"{tarball.name}: more than {limits.members} entries")
                # Stop on what the headers claim, before reading a bomb's worth of data.
                claimed += member.size
                if member.size > limits.file_bytes or claimed > limits.total_bytes:
                    raise ArchiveError(
                        f"{tarball.name}: more than {limits.total_bytes} bytes unpacked "
                        f"(or a file over {limits.file_bytes})"
                    )
                parts = member.name.replace("\\", "/").lstrip("./").split("/")
                if parts and parts[0]:
                    tops.add(parts[0])
    except ArchiveError:
        raise
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ArchiveError(f"{tarball.name}: the archive is cut off ({exc})") from None
    except tarfile.ReadError as exc:
        if "unexpected end" in str(exc) or "truncated" in str(exc).lower():
            raise ArchiveError(f"{tarball.name}: the archive is cut off ({exc})") from None
        raise ArchiveError(f"{tarball.name}: not a readable .tar.gz ({exc})") from None
    except (tarfile.TarError, OSError) as exc:
        raise ArchiveError(f"{tarball.name}: not a readable .tar.gz ({exc})") from None
    if len(tops) != 1:
        shown = ", ".join(sorted(tops)[:4]) or "nothing"
        raise NotOurs(f"{tarball.name}: not one top folder kubelab-ex<N>-<ID>/ (it holds {shown})")
    return tops.pop()


def _gzip_copy(source: Path, target: Path, limits: Limits) -> Path:
    """A plain tar, gzipped, so the one safe extraction reads it."""
    if source.stat().st_size > limits.total_bytes + limits.members * 1024:
        raise ArchiveError(f"{source.name}: more than {limits.total_bytes} bytes unpacked")
    with source.open("rb") as raw, gzip.open(target, "wb", compresslevel=1) as out:
        shutil.copyfileobj(raw, out, 1 << 20)
    return target


def _zip_to_tar(source: Path, target: Path, limits: Limits) -> Path:
    """Re-pack a .zip as a .tar.gz so the one safe extraction reads it; links refused."""
    total = 0
    try:
        with zipfile.ZipFile(source) as archive, tarfile.open(target, mode="w:gz") as tar:
            infos = archive.infolist()
            if len(infos) > limits.members:
                raise ArchiveError(f"{source.name}: more than {limits.members} entries")
            for info in infos:
                if _mac_metadata(info.filename):
                    continue
                kind = (info.external_attr >> 16) & 0o170000
                if kind and kind not in (0o100000, 0o040000):
                    raise ArchiveError(f"{source.name}: {info.filename} is not a plain file")
                member = tarfile.TarInfo(info.filename.rstrip("/"))
                member.mtime = int(time.mktime((*info.date_time, 0, 0, -1)))
                if info.is_dir():
                    member.type = tarfile.DIRTYPE
                    tar.addfile(member)
                    continue
                with archive.open(info) as raw:
                    data = raw.read(limits.file_bytes + 1)
                if len(data) > limits.file_bytes:
                    raise ArchiveError(
                        f"{source.name}: {info.filename} is over {limits.file_bytes} bytes"
                    )
                total += len(data)
                if total > limits.total_bytes:
                    raise ArchiveError(
                        f"{source.name}: more than {limits.total_bytes} bytes unpacked"
                    )
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    except ArchiveError:
        raise
    except (zipfile.BadZipFile, EOFError) as exc:
        raise ArchiveError(f"{source.name}: the .zip is cut off or damaged ({exc})") from None
    except (zipfile.LargeZipFile, NotImplementedError, RuntimeError, OSError, ValueError) as exc:
        raise ArchiveError(f"{source.name}: not a readable .zip ({exc})") from None
    return target


def _mac_metadata(name: str) -> bool:
    """What macOS's Finder adds to a zip it makes: not the student's files."""
    parts = name.split("/")
    return parts[0] == "__MACOSX" or parts[-1].startswith("._") or parts[-1] == ".DS_Store"


def _small_json(path: Path) -> Any:
    """A hand-in's meta.json or report.json as data, or None: read as hostile input
    (a regular file inside the hand-in, bounded in size and depth; see kubelab.safeio)."""
    try:
        return safeio.parse_json(safeio.read_confined(path.parent, path.name, SMALL_JSON))
    except (OSError, safeio.Unreadable):
        return None


def evidence_digest(folder: Path) -> str:
    """One sha256 over every file of an evidence folder (relative path and content)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


# --- deciding whose and which ---------------------------------------------------------


def _owner(arrival: Arrival, roster: Sequence[str] | None) -> str | None:
    """Whose row a file goes to: the name's ID (the submitter), unless only the content's
    ID is on the roster (a typo in a renamed file)."""
    by_name, by_content = arrival.name_student, arrival.content_student
    if by_name and by_content and by_name.lower() != by_content.lower():
        listed = {s.lower() for s in roster or ()}
        if roster and by_name.lower() not in listed and by_content.lower() in listed:
            return by_content
        return by_name
    return by_name or by_content


def _canonical(student: str, roster: Sequence[str] | None) -> str:
    """The roster's spelling of an ID (IDs are compared without case)."""
    for listed in roster or ():
        if listed.lower() == student.lower():
            return listed
    return student


def take_in(
    folder: Path,
    exercise: int,
    staging: Path,
    limits: Limits,
    roster: Sequence[str] | None = None,
    skip: Path | None = None,
) -> Intake:
    """Identify every file under `folder` (not under `skip`), choose one hand-in per
    student, say why."""
    staging.mkdir(parents=True, exist_ok=True)
    arrivals = [
        identify(p, folder, staging / f"{n:04d}", limits)
        for n, p in enumerate(list_files(folder, skip))
    ]
    flags: dict[str, list[tuple[str, str]]] = defaultdict(list)
    candidates: dict[str, list[Arrival]] = defaultdict(list)
    for arrival in arrivals:
        owner = _owner(arrival, roster)
        arrival.student = _canonical(owner, roster) if owner else None
        arrival.exercise = (
            arrival.content_exercise
            if arrival.content_exercise is not None
            else arrival.name_exercise
        )
        if not arrival.looks_like_archive:
            arrival.outcome = NOT_HANDIN
            arrival.detail = "not an archive: left alone"
            continue
        if arrival.student is None and not arrival.damaged:
            arrival.outcome = NOT_HANDIN
            arrival.detail = f"{arrival.problem or 'not a kubelab hand-in'}: left alone"
            continue
        if arrival.exercise is not None and arrival.exercise != exercise:
            arrival.outcome = OTHER_EXERCISE
            arrival.detail = (
                f"exercise {arrival.exercise}'s hand-in"
                + (f" of {arrival.student}" if arrival.student else "")
                + f", not exercise {exercise}'s: not graded here"
            )
            continue
        key = arrival.student or arrival.rel
        candidates[key].append(arrival)
        if (
            arrival.readable
            and arrival.name_student
            and arrival.content_student
            and arrival.name_student.lower() != arrival.content_student.lower()
        ):
            flags[key].append(
                (
                    NAME_MISMATCH,
                    f"{arrival.rel} is named for {arrival.name_student}, its contents are "
                    f"{arrival.content_student}'s ({arrival.top}/, meta.json)",
                )
            )
        if (
            arrival.readable
            and arrival.name_exercise is not None
            and arrival.content_exercise is not None
            and arrival.name_exercise != arrival.content_exercise
        ):
            flags[key].append(
                (
                    NAME_MISMATCH,
                    f"{arrival.rel} is named for exercise {arrival.name_exercise}, its "
                    f"contents are exercise {arrival.content_exercise}'s",
                )
            )
    chosen: dict[str, Arrival] = {}
    failed: dict[str, Arrival] = {}
    for key, group in sorted(candidates.items()):
        readable = sorted((a for a in group if a.readable), key=lambda a: (a.mtime, a.rel))
        broken = [a for a in group if not a.readable]
        if readable:
            pick = readable[-1]
            pick.outcome = GRADED
            pick.detail = f"graded as {key}"
            chosen[key] = pick
            for older in readable[:-1]:
                older.outcome = SUPERSEDED
                same = older.digest == pick.digest
                older.detail = (
                    f"the same hand-in as {pick.rel}: graded once"
                    if same
                    else f"an older hand-in of {key}: {pick.rel} is graded instead"
                )
            differing = [a.rel for a in readable[:-1] if a.digest != pick.digest]
            if differing:
                flags[key].append(
                    (
                        "duplicate",
                        f"{len(differing) + 1} different hand-ins; graded {pick.rel}, "
                        f"not {', '.join(differing)}",
                    )
                )
            for bad in broken:
                bad.outcome = SUPERSEDED
                bad.detail = f"unreadable ({bad.problem}); {pick.rel} is graded instead"
                if bad.mtime > pick.mtime:
                    # The student's last word may be the broken one: the teacher decides.
                    flags[key].append(
                        (
                            "duplicate",
                            f"the newer {bad.rel} cannot be read ({bad.problem}); "
                            f"graded the older {pick.rel}",
                        )
                    )
        else:
            pick = max(broken, key=lambda a: (a.mtime, a.rel))
            pick.outcome = ERROR
            pick.detail = f"{pick.problem}; {pick.advice}" if pick.advice else pick.problem
            failed[key] = pick
            for other in broken:
                if other is not pick:
                    other.outcome = SUPERSEDED
                    other.detail = f"unreadable too ({other.problem})"
    return Intake(exercise, arrivals, chosen, failed, dict(flags))


def place(arrival: Arrival, dest: Path) -> Path:
    """Move a chosen hand-in's unpacked folder to `dest` (replaced); return its evidence."""
    assert arrival.unpacked is not None
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True, mode=0o700)  # a student's hand-in: private from the start
    target = dest / arrival.unpacked.name
    shutil.move(str(arrival.unpacked), target)
    arrival.unpacked = target
    return target / EVIDENCE


# --- across the class: copy groups --------------------------------------------------


@dataclass(frozen=True)
class CopyGroup:
    students: tuple[str, ...]
    reasons: tuple[str, ...]  # "same evidence", "same cluster (kube-system UID ...)"


def copy_groups(
    digests: Mapping[str, str], identities: Mapping[str, Mapping[str, Any] | None]
) -> list[CopyGroup]:
    """Students joined by the same evidence (digests) or by one cluster (a kube-system
    UID or node boot ID in common, as integrity's shared-cluster flag), as groups."""
    parent: dict[str, str] = {}

    def find(s: str) -> str:
        parent.setdefault(s, s)
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    reasons: dict[frozenset[str], set[str]] = defaultdict(set)
    by_digest: dict[str, list[str]] = defaultdict(list)
    for student, digest in digests.items():
        if digest:
            by_digest[digest].append(student)
    pairs: list[tuple[str, str, str]] = []
    for same in by_digest.values():
        pairs += [(a, b, "same evidence") for a in same for b in same if a < b]
    owners: dict[tuple[str, str], set[str]] = defaultdict(set)
    for student, identity in identities.items():
        for key in _identity_keys(identity):
            owners[key].add(student)
    for sharing in owners.values():
        pairs += [(a, b, "same cluster") for a in sharing for b in sharing if a < b]
    for a, b, why in pairs:
        parent[find(a)] = find(b)
        reasons[frozenset((a, b))].add(why)
    groups: dict[str, set[str]] = defaultdict(set)
    for a, b, _ in pairs:
        groups[find(a)] |= {a, b}
    result = []
    for members in groups.values():
        said = sorted({r for pair, rs in reasons.items() if pair <= members for r in rs})
        result.append(CopyGroup(tuple(sorted(members)), tuple(said)))
    return sorted(result, key=lambda g: g.students)


def partners(groups: Sequence[CopyGroup]) -> dict[str, list[str]]:
    """Student -> the other students of their copy group."""
    found: dict[str, list[str]] = {}
    for group in groups:
        for student in group.students:
            found[student] = [s for s in group.students if s != student]
    return found
