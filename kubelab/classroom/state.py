"""The class folder: what kubelab writes for a class, and the one file it reads back.

<class>/known_hosts        host keys, pinned at first contact
<class>/ssh-pinned         the ssh libvirt and vagrant use (rendered, see hostkeys.py)
<class>/class.json         each student's host and slot (written before any boot)
<class>/labs/<student>/    one lab folder each: its own Vagrantfile, scripts, logs
<class>/students/<student>/ssh_config   how to reach that lab through its host
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubelab import atomicfile
from kubelab.errors import KubelabError
from kubelab.templating import VAGRANT_TEMPLATES, environment

CONNECT_TIMEOUT = 10
STATE_VERSION = 1


@dataclass(frozen=True)
class ClassPaths:
    root: Path

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def ssh_command(self) -> Path:
        return self.root / "ssh-pinned"

    @property
    def state_file(self) -> Path:
        return self.root / "class.json"

    def lab_dir(self, student: str) -> Path:
        return self.root / "labs" / student

    def ssh_config(self, student: str) -> Path:
        return self.root / "students" / student / "ssh_config"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"


@dataclass(frozen=True)
class Seat:
    """Where one student's lab lives: its host and its slot there (keeps labs apart)."""

    host: str
    slot: int


def prepare(paths: ClassPaths) -> None:
    """The class folder and its ssh wrapper (written again each time: it is generated)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.log_dir.mkdir(exist_ok=True)
    text = (
        environment(VAGRANT_TEMPLATES, trim=False)
        .get_template("classroom/ssh-pinned.sh.j2")
        .render(
            class_dir=paths.root.resolve(),
            known_hosts=paths.known_hosts.resolve(),
            connect_timeout=CONNECT_TIMEOUT,
        )
    )
    atomicfile.write_atomic(paths.ssh_command, text, mode=0o755)


def load_seats(paths: ClassPaths) -> dict[str, Seat]:
    if not paths.state_file.exists():
        return {}
    try:
        data = json.loads(paths.state_file.read_text())
        return {s: Seat(str(v["host"]), int(v["slot"])) for s, v in data["students"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KubelabError(
            f"{paths.state_file} is not a class state kubelab wrote ({exc})",
            hint="restore it, or move the class folder aside and start again",
        ) from None


def save_seats(paths: ClassPaths, seats: dict[str, Seat]) -> None:
    data: dict[str, Any] = {
        "version": STATE_VERSION,
        "students": {s: {"host": seat.host, "slot": seat.slot} for s, seat in seats.items()},
    }
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    paths.state_file.parent.mkdir(parents=True, exist_ok=True)
    atomicfile.write_atomic(paths.state_file, text, mode=0o644)
