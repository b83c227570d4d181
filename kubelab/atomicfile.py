"""Files written whole or not at all: the one way kubelab replaces a file.

A task, a teacher's other terminal or a grader may read any file kubelab writes at
any moment, and two kubelab processes may write the same one (two `invoke class.*`
on one class folder, two tasks on one lab). So the bytes go to a temporary file of
their own beside the target, made by mkstemp: a name no other writer uses, created
with O_EXCL, so neither a second writer nor a link planted under a fixed name can
meet it. The file gets its mode before the first byte, and is renamed over the
target when it is complete. On any failure the temporary file is removed and the
target is as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal, overload


@overload
def replacing(
    path: Path, *, mode: int = ..., binary: Literal[False] = ..., newline: str | None = ...
) -> contextlib.AbstractContextManager[IO[str]]: ...
@overload
def replacing(
    path: Path, *, mode: int = ..., binary: Literal[True], newline: None = ...
) -> contextlib.AbstractContextManager[IO[bytes]]: ...
def replacing(
    path: Path, *, mode: int = 0o600, binary: bool = False, newline: str | None = None
) -> contextlib.AbstractContextManager[IO[Any]]:
    """open(path, "w") (or "wb") that puts the finished file in place under path, with
    `mode` (exactly: the umask does not apply). UTF-8 text unless binary."""
    return _replacing(path, mode, binary, newline)


@contextlib.contextmanager
def _replacing(path: Path, mode: int, binary: bool, newline: str | None) -> Iterator[IO[Any]]:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            os.fchmod(fd, mode)
            if binary:
                out: IO[Any] = os.fdopen(fd, "wb")
            else:
                out = os.fdopen(fd, "w", encoding="utf-8", newline=newline)
        except BaseException:
            os.close(fd)
            raise
        with out:
            yield out
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: str | bytes, *, mode: int = 0o600) -> None:
    """Replace path with data (UTF-8 if text), whole or not at all, with `mode`."""
    if isinstance(data, bytes):
        with replacing(path, mode=mode, binary=True) as out:
            out.write(data)
    else:
        with replacing(path, mode=mode) as out:
            out.write(data)
