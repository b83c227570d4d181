"""Joining a network namespace from the test process: the one setns(2) helper.

A network namespace belongs to a thread (setns(2)); threads started from it, and
the sockets they open, stay in it (paramiko's transport threads), while the test
itself never leaves the machine's namespace. The harnesses (NetnsHosts, NetnsLibvirt,
MultiHost) each make their namespaces; every client call into one goes through here.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def call_in_netns(netns: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs) in a new thread that first joins network namespace `netns`.

    Open every connection inside fn: an object used later from another thread would
    connect from outside. fn's result is returned and its exception raised in the
    caller's thread.
    """
    outcome: dict[str, Any] = {}

    def inside() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"setns({netns}): {os.strerror(code)}")
            finally:
                os.close(fd)
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=inside, name=f"in-{netns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]
