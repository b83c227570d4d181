"""Reading students' archives defensively: nothing escapes the extraction folder."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from kubelab.grade.archive import ArchiveError, Limits, read_handin
from kubelab.grade.gradebook import grade_handins
from tests.grade.handin_class import SyntheticClass
from tests.grade.hostile_corpus import tar_header

TOP = "kubelab-ex2-2021001"


def archive_with(path: Path, add: Callable[[tarfile.TarFile], None]) -> Path:
    """A hand-in holding a normal evidence file plus whatever `add` puts in."""
    with tarfile.open(path, "w:gz") as tar:
        data = b'{"kind": "List", "items": []}\n'
        info = tarfile.TarInfo(f"{TOP}/evidence/nodes.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        add(tar)
    return path


def add_file(name: str, data: bytes = b"x") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    return add


def add_link(name: str, target: str, kind: bytes) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = target
        tar.addfile(info)

    return add


UNSAFE = {
    "parent-path": (add_file(f"{TOP}/../../escaped.txt"), "unsafe path"),
    "absolute-path": (add_file("/tmp/kubelab-escaped.txt"), "unsafe path"),
    "outside-top": (add_file("other/evidence/x.json"), "outside"),
    "symlink": (
        add_link(f"{TOP}/evidence/pods.json", "/etc/passwd", tarfile.SYMTYPE),
        "not a plain file",
    ),
    "hardlink": (
        add_link(f"{TOP}/evidence/pods.json", "/etc/shadow", tarfile.LNKTYPE),
        "not a plain file",
    ),
    "device": (add_link(f"{TOP}/evidence/dev", "", tarfile.CHRTYPE), "not a plain file"),
    "twice": (add_file(f"{TOP}/evidence/nodes.json"), "appears twice"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_members_are_refused(case: str, tmp_path: Path) -> None:
    add, why = UNSAFE[case]
    archive = archive_with(tmp_path / f"{TOP}.tar.gz", add)
    dest = tmp_path / "x" / "out"
    with pytest.raises(ArchiveError, match=why):
        read_handin(archive, dest)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "x" / "escaped.txt").exists()
    assert not Path("/tmp/kubelab-escaped.txt").exists()


def test_size_and_count_limits(tmp_path: Path) -> None:
    big = archive_with(
        tmp_path / f"{TOP}.tar.gz", add_file(f"{TOP}/evidence/pods.json", b"0" * 4096)
    )
    with pytest.raises(ArchiveError, match="limit 1000"):
        read_handin(big, tmp_path / "a", Limits(file_bytes=1000))
    with pytest.raises(ArchiveError, match="more than 3000 bytes unpacked"):
        read_handin(big, tmp_path / "b", Limits(total_bytes=3000))
    with pytest.raises(ArchiveError, match="more than 1 entries"):
        read_handin(big, tmp_path / "c", Limits(members=1))


def test_not_gzip_and_no_evidence(tmp_path: Path) -> None:
    junk = tmp_path / f"{TOP}.tar.gz"
    junk.write_bytes(b"PK\x03\x04 a zip, not a tar.gz")
    with pytest.raises(ArchiveError, match="not a readable .tar.gz"):
        read_handin(junk, tmp_path / "a")
    empty = tmp_path / "empty" / f"{TOP}.tar.gz"
    empty.parent.mkdir()
    with tarfile.open(empty, "w:gz") as tar:
        add_file(f"{TOP}/report.json", b"{}")(tar)
    with pytest.raises(ArchiveError, match="no kubelab-ex2-2021001/evidence/ folder"):
        read_handin(empty, tmp_path / "b")


def test_an_unsafe_archive_is_an_error_row_not_a_crash(
    synthetic_class: SyntheticClass, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    archive_with(folder / f"{TOP}.tar.gz", add_file(f"{TOP}/../../../escaped.txt"))
    report = grade_handins(folder, 2, tmp_path / "out")
    assert [(g.student, g.status) for g in report.grades] == [("2021001", "error")]
    assert "unsafe path" in report.grades[0].error
    assert not (tmp_path / "escaped.txt").exists()
    assert (tmp_path / "out" / "gradebook.csv").read_text().count("\n") == 2


def test_a_header_summed_as_signed_bytes_is_read_and_a_wrong_sum_is_not(tmp_path: Path) -> None:
    # Old tars summed the header as signed bytes; bytes over 127 (an owner named in
    # Latin-1) make the two sums differ. tarfile takes either; so must the header walk.
    data = b'{"kind": "List", "items": []}\n'
    info = tarfile.TarInfo(f"{TOP}/evidence/nodes.json")
    info.size, info.uname = len(data), "\xe9l\xe8ve"
    block = bytearray(info.tobuf(format=tarfile.USTAR_FORMAT, encoding="latin-1")[:512])
    block[148:156] = b" " * 8
    signed = sum(b - 256 if b > 127 else b for b in block)
    assert signed != sum(block)
    body = data.ljust(512, b"\0") + bytes(1024)
    for checksum, readable in ((signed, True), (signed + 1, False)):
        block[148:155] = f"{checksum:06o}\0".encode()
        archive = tmp_path / str(checksum) / f"{TOP}.tar.gz"
        archive.parent.mkdir()
        with gzip.open(archive, "wb") as out:
            out.write(bytes(block) + body)
        if readable:
            handin = read_handin(archive, tmp_path / "read")
            assert (handin.evidence_dir / "nodes.json").read_bytes() == data
        else:
            with pytest.raises(ArchiveError, match="a damaged tar header"):
                read_handin(archive, tmp_path / "refused")


def test_pax_sizes_and_damaged_headers_are_checked_before_unpacking(tmp_path: Path) -> None:
    # A pax record's size= overrides the next header's own; it is held to the same cap.
    record = b"size=41943040\n"
    record = str(len(record) + 3).encode() + b" " + record
    pax = tar_header(f"{TOP}/evidence/nodes.json", len(record), b"x")
    member = tar_header(f"{TOP}/evidence/nodes.json", 0, tarfile.REGTYPE)
    claimed = tmp_path / f"{TOP}.tar.gz"
    with gzip.open(claimed, "wb") as out:
        out.write(pax + record.ljust(512, b"\0") + member + bytes(1024))
    with pytest.raises(ArchiveError, match="an entry of 41943040 bytes"):
        read_handin(claimed, tmp_path / "a")
    damaged = tmp_path / "damaged" / f"{TOP}.tar.gz"
    damaged.parent.mkdir()
    block = bytearray(member)
    block[0:1] = b"X"  # the name changed, the checksum not
    with gzip.open(damaged, "wb") as out:
        out.write(bytes(block) + bytes(1024))
    with pytest.raises(ArchiveError, match="a damaged tar header"):
        read_handin(damaged, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
