"""The lab's exercise: what `invoke lab` remembers in the lab folder.

Every task reads it back (a lab started for an exercise keeps its student), so it
lives apart from kubelab.labs, whose exercise files and their pydantic models only
the exercise tasks need.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kubelab import atomicfile
from kubelab.errors import KubelabError

STATE_NAME = "exercise.json"
_STATE_MAX = 64 * 1024  # bytes read of the state file
_RESTORES_KEPT = 50


@dataclass(frozen=True)
class LabState:
    """The exercise a lab was started for, and for whom: every task reads it back."""

    exercise: int
    student: str
    language: str = "en"
    started_at: str = ""
    snapshot: str = ""  # the libvirt snapshot of the start state, on every VM
    restores: tuple[Mapping[str, str], ...] = ()  # `--reset`s: snapshot, restored_at

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["restores"] = [dict(r) for r in self.restores]
        return data

    @classmethod
    def from_dict(cls, data: Any) -> LabState:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        exercise, student = data.get("exercise"), data.get("student")
        if isinstance(exercise, bool) or not isinstance(exercise, int):
            raise ValueError("exercise is not a number")
        if not isinstance(student, str):
            raise ValueError("student is not text")
        restores = data.get("restores") or []
        if not isinstance(restores, list):
            raise ValueError("restores is not a list")
        return cls(
            exercise=exercise,
            student=student,
            language=str(data.get("language") or "en"),
            started_at=str(data.get("started_at") or ""),
            snapshot=str(data.get("snapshot") or ""),
            restores=tuple(
                {k: str(v) for k, v in r.items()}
                for r in restores[-_RESTORES_KEPT:]
                if isinstance(r, dict)
            ),
        )

    def restored(self, when: str) -> LabState:
        record = {"snapshot": self.snapshot, "restored_at": when}
        return LabState(**{**self.__dict__, "restores": (*self.restores, record)})


def read_state(lab_dir: Path) -> LabState | None:
    """The lab's exercise state, or None when the lab was not started for an exercise."""
    path = lab_dir / STATE_NAME
    try:
        with path.open("rb") as f:
            raw = f.read(_STATE_MAX + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KubelabError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if len(raw) > _STATE_MAX:
            raise ValueError(f"larger than {_STATE_MAX} bytes")
        return LabState.from_dict(json.loads(raw))
    except ValueError as exc:
        raise KubelabError(
            f"{path} is not a kubelab exercise state ({exc})",
            hint="delete it and start the exercise again: invoke lab --exercise N --student ID",
        ) from None


def write_state(lab_dir: Path, state: LabState) -> Path:
    """Write the state whole or not at all (a temporary file renamed over it)."""
    lab_dir.mkdir(parents=True, exist_ok=True)
    path = lab_dir / STATE_NAME
    atomicfile.write_atomic(path, json.dumps(state.to_dict(), indent=2) + "\n")
    return path
