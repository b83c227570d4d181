"""Reading what someone else wrote: confined paths, capped sizes, bounded JSON, clean text.

Evidence folders, hand-ins and live hosts are hostile (a student's file must never
harm the teacher or the class), so everything the grader reads from them goes
through here:

  - `read_confined(root, rel)`: `rel` must name a regular file inside `root` after
    every link is resolved; no absolute paths, no "..", no devices, FIFOs or sockets
    (opened non-blocking, so a FIFO cannot hang the grader), at most `max_bytes`;
  - `parse_json(text)`: at most MAX_JSON_BYTES of text, nested at most MAX_JSON_DEPTH
    deep, no NaN/Infinity, numbers of bounded length;
  - `shown(text)`: what may be echoed into a message, a terminal or an output file:
    control characters and lone surrogates replaced, at most `limit` characters.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

# One evidence file: a 3-node lab's largest (pods.json) is well under 1 MiB.
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_JSON_BYTES = MAX_FILE_BYTES
# kubectl's deepest output (a pod's managedFields) nests about 15 levels.
MAX_JSON_DEPTH = 64
# Longest echoed value (a name, a reason) in a message or an output file.
SHOWN_CHARS = 200

# C0 and C1 controls (ESC drives a terminal), DEL, and lone surrogates (they cannot be
# written as UTF-8, so one would stop a file being written).
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_UNPRINTABLE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class Unreadable(Exception):
    """The file cannot be taken as data: the reason, in words."""


def confined(root: Path, rel: str) -> Path:
    """`root/rel` when it stays inside root once every link is resolved; else Unreadable."""
    if not isinstance(rel, str) or not rel:
        raise Unreadable("not a relative path")
    if "\0" in rel or "\\" in rel:
        raise Unreadable("a path with a NUL or a backslash")
    parts = rel.split("/")
    if rel.startswith("/") or ".." in parts:
        raise Unreadable("a path outside the evidence folder")
    base = os.path.realpath(root)
    real = os.path.realpath(os.path.join(base, rel))
    if real != base and not real.startswith(base + os.sep):
        raise Unreadable("a link out of the evidence folder")
    return Path(real)


def read_confined(root: Path, rel: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file `rel` inside `root`, at most `max_bytes`.

    Raises FileNotFoundError when there is no such file, Unreadable otherwise.
    """
    path = confined(root, rel)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: a link
        # swapped in after the check above is refused, not followed.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise Unreadable(exc.strerror or type(exc).__name__) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Unreadable("not a regular file (a device, FIFO, socket or folder)")
        if info.st_size > max_bytes:
            raise Unreadable(f"{info.st_size} bytes, more than the {max_bytes} allowed")
        chunks = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise Unreadable(f"more than the {max_bytes} bytes allowed")
        return data
    finally:
        os.close(fd)


def is_confined_file(root: Path, rel: str) -> bool:
    try:
        path = confined(root, rel)
        return stat.S_ISREG(os.lstat(path).st_mode)
    except (Unreadable, OSError):
        return False


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(data: str | bytes, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """JSON text as Python data, bounded in size, depth and number length; Unreadable if not."""
    if len(data) > max_bytes:
        raise Unreadable(f"JSON of {len(data)} bytes, more than the {max_bytes} allowed")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Unreadable(f"not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise Unreadable(f"JSON nested more than {MAX_JSON_DEPTH} deep") from None
    except ValueError as exc:  # JSONDecodeError, and Python's limit on digits in an int
        raise Unreadable(f"not JSON ({shown(str(exc), 120)})") from None
    if _depth_over(value, MAX_JSON_DEPTH):
        raise Unreadable(f"JSON nested more than {MAX_JSON_DEPTH} deep")
    return value


def parse_accepted_json(text: str) -> Any:
    """Python data from text that parse_json accepted before: a fresh copy of the same
    value, without its checks again (they hold for the same text)."""
    return json.loads(text, parse_constant=_no_constant)


def _depth_over(value: Any, limit: int) -> bool:
    # Level by level: one list per level, its scalars dropped by a comprehension, is
    # about half the CPU of a stack of (item, depth) pairs, and grading walks every
    # evidence file.
    level = [value]
    depth = 1
    while True:
        level = [item for item in level if isinstance(item, dict | list)]
        if not level:
            return False
        if depth > limit:
            return True
        children: list[Any] = []
        for item in level:
            children.extend(item.values() if isinstance(item, dict) else item)
        level = children
        depth += 1


def shown(text: object, limit: int = SHOWN_CHARS, *, lines: bool = False) -> str:
    """`text` made safe to echo: controls and lone surrogates as '?', at most `limit` chars.

    `lines` keeps newlines and tabs (multi-line hints and details); otherwise they
    become '?' too, so one value stays on one line.
    """
    value = text if isinstance(text, str) else str(text)
    value = (_UNPRINTABLE if lines else _UNPRINTABLE_LINE).sub("?", value)
    if len(value) > limit:
        value = value[: max(limit - 3, 0)] + "..."
    return value


def shown_tree(value: Any, limit: int = SHOWN_CHARS) -> Any:
    """`value` (JSON-like data drawn from evidence) with every string made safe by shown()."""
    if isinstance(value, str):
        return shown(value, limit)
    if isinstance(value, dict):
        return {shown(str(k), limit): shown_tree(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [shown_tree(v, limit) for v in value]
    return value
