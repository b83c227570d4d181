"""One class grading in a process of its own, reporting what it cost (for the hostile corpus).

    python -m tests.grade.hostile_probe HANDINS OUT

Prints one JSON object: the peak resident memory (VmHWM) and every file the
grading opened, created, renamed or removed, as Python's audit hooks saw them
(sys.addaudithook: every open() and os.open() in the process, whoever calls it).
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

from kubelab.grade.gradebook import grade_handins

# Audit events that create, rename or remove a file or folder.
_CHANGES = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.symlink"}


def peak_rss_kib() -> int:
    """This process's own peak resident memory. Not ru_maxrss: Linux keeps in it the
    high-water mark of the memory exec replaced, which under vfork (how subprocess
    starts this) is the parent's, the test process's, however large that has grown."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # no /proc: an upper bound


def main(handins: Path, out: Path) -> dict[str, Any]:
    opened: list[tuple[str, bool]] = []
    changed: list[tuple[str, str]] = []

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and isinstance(args[0], str | bytes | os.PathLike):
            path, mode, flags = args
            writes = bool(mode and any(c in str(mode) for c in "wax+")) or bool(
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            )
            opened.append((os.fsdecode(path), writes))
        elif event in _CHANGES and args and isinstance(args[0], str | bytes | os.PathLike):
            changed.append((event, os.fsdecode(args[0])))

    sys.addaudithook(hook)
    report = grade_handins(handins, 2, out, gradescope=True)
    # What grading did, taken before the probe reads /proc for its own figure.
    grading_opened, grading_changed = list(opened), list(changed)
    return {
        "peak_rss_kib": peak_rss_kib(),
        "students": len(report.grades),
        "opened": grading_opened,
        "changed": grading_changed,
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]))))
