"""One regular file out of a box's tar, for tests that take a box apart.

tarfile's extraction filters (`extract(..., filter="data")`) came in Python 3.11.4;
Debian 12's Python, which install.sh builds the venv from, is 3.11.2. Reading the
member and writing it ourselves is safe on every 3.11: the name written is the
member's base name in a folder of the test's own, never a path from the archive.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path


def copy_member(tar: tarfile.TarFile, name: str, folder: Path) -> Path:
    """Write the regular file `name` of tar into folder under its base name; return it."""
    member = tar.getmember(name)
    source = tar.extractfile(member) if member.isfile() else None
    if source is None:
        raise ValueError(f"{name}: not a regular file in {tar.name}")
    target = folder / Path(name).name
    with source, target.open("wb") as out:
        shutil.copyfileobj(source, out, 1024 * 1024)
    return target
