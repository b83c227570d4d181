"""kubelab's folders in the user's cache folder: kept across processes, private.

$XDG_CACHE_HOME (absolute), else $HOME/.cache; then kubelab/<name>, mode 0700. Used
only while kubelab/ and kubelab/<name> are this user's own folders (no link, no other
owner) and no one else may write kubelab/: whoever could put a file there could make
kubelab read it (Jinja unpickles its bytecode cache). Never a shared temp folder.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def own_folder(name: str) -> Path | None:
    """kubelab/<name> in the user's cache folder, made 0700; None when the user's cache
    folder is not known or cannot be written, or when kubelab/ or kubelab/<name> is not
    this user's own folder (a link, another owner) or kubelab/ is writable by others:
    then nothing is read from it or written to it."""
    # The XDG rule: $XDG_CACHE_HOME, else $HOME/.cache; a relative or empty one is none.
    xdg, home = os.environ.get("XDG_CACHE_HOME", ""), os.environ.get("HOME", "")
    if os.path.isabs(xdg):
        base = Path(xdg)
    elif os.path.isabs(home):
        base = Path(home) / ".cache"
    else:
        return None
    try:
        own, folder = base / "kubelab", base / "kubelab" / name
        base.mkdir(parents=True, exist_ok=True)
        own.mkdir(mode=0o700, exist_ok=True)
        # kubelab/ also holds the box cache: it may stay readable, but no one else may
        # put a folder of theirs in it.
        if not _is_own_folder(own) or stat.S_IMODE(own.lstat().st_mode) & 0o022:
            return None
        folder.mkdir(mode=0o700, exist_ok=True)
        if not _is_own_folder(folder):
            return None
        if stat.S_IMODE(folder.lstat().st_mode) != 0o700:
            folder.chmod(0o700)
    except OSError:
        return None
    return folder


def _is_own_folder(path: Path) -> bool:
    info = path.lstat()
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
