"""kubelab/atomicfile.py: a file is replaced whole or not at all, with its mode, and
writers of the same file never meet."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kubelab import atomicfile

REPO = Path(__file__).resolve().parents[1]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_text_and_bytes_are_written_whole_with_the_mode_asked(tmp_path: Path) -> None:
    old_umask = os.umask(0o077)  # the mode is exact: the umask does not narrow it
    try:
        atomicfile.write_atomic(tmp_path / "wrapper.sh", "#!/bin/sh\n", mode=0o755)
    finally:
        os.umask(old_umask)
    atomicfile.write_atomic(tmp_path / "key", b"\x00secret\xff")
    assert (tmp_path / "wrapper.sh").read_text() == "#!/bin/sh\n"
    assert _mode(tmp_path / "wrapper.sh") == 0o755
    assert (tmp_path / "key").read_bytes() == b"\x00secret\xff"
    assert _mode(tmp_path / "key") == 0o600  # the default: readable by its owner only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key", "wrapper.sh"]


def test_text_is_utf8_whatever_the_locale(tmp_path: Path) -> None:
    atomicfile.write_atomic(tmp_path / "names", "Zoë 张三\n")
    assert (tmp_path / "names").read_bytes() == "Zoë 张三\n".encode()


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "grades.csv"
    target.write_text("the old grades\n")
    with pytest.raises(RuntimeError), atomicfile.replacing(target, newline="") as out:
        out.write("half of the new")
        raise RuntimeError("the writer failed midway")
    assert target.read_text() == "the old grades\n"
    assert [p.name for p in tmp_path.iterdir()] == ["grades.csv"]


def test_a_link_planted_in_the_folder_is_never_written_through(tmp_path: Path) -> None:
    # The old code wrote through a fixed "<name>.partial": a link planted under that
    # name sent the bytes elsewhere. The temporary name is mkstemp's, made with O_EXCL.
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    for name in ("known_hosts.partial", ".known_hosts.partial", ".known_hosts.tmp"):
        (tmp_path / name).symlink_to(victim)
    atomicfile.write_atomic(tmp_path / "known_hosts", "host key\n")
    assert victim.read_text() == "untouched\n"
    assert (tmp_path / "known_hosts").read_text() == "host key\n"


def test_writers_in_many_processes_never_meet(tmp_path: Path) -> None:
    # Two teacher commands on one class folder write the same files at once. Each of 6
    # processes writes its own 64 KiB text 20 times; every read in between, and the
    # end, must be one writer's whole text, and no temporary file is left.
    target = tmp_path / "state.json"
    writer = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from kubelab import atomicfile
        me = sys.argv[1]
        for _ in range(20):
            atomicfile.write_atomic(Path({str(target)!r}), me * 65536, mode=0o644)
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", writer, chr(ord("a") + i)]) for i in range(6)]
    while any(p.poll() is None for p in procs):
        if target.exists():
            text = target.read_text()
            assert len(text) == 65536 and len(set(text)) == 1, "a reader saw a mixed file"
    assert all(p.wait() == 0 for p in procs)
    final = target.read_text()
    assert len(final) == 65536 and len(set(final)) == 1
    assert _mode(target) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
