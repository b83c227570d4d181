"""Hints for failed checks: data in labs/hints.yaml, filled with the failing thing's names."""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

from kubelab import REPO_ROOT

HINTS_FILE = REPO_ROOT / "labs" / "hints.yaml"


@functools.cache
def load(path: Path = HINTS_FILE) -> dict[str, str]:
    with path.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{path}: expected a mapping of hint names to text")
    return {str(k): " ".join(v.split()) for k, v in data.items()}


class _Fields(dict[str, object]):
    # A placeholder the caller did not fill stays visible instead of failing the check.
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def hint(key: str, **fields: object) -> str:
    """The hint `key` with its placeholders filled; KeyError for an unknown key."""
    return load()[key].format_map(_Fields(fields))


class Hints:
    """The hints of one check: one per kind of problem, in the order first met.

    The detail names every failing node and pod; the hint shows how to look
    into the first of each kind, so ten Pending pods do not make ten hints.
    """

    def __init__(self) -> None:
        self._texts: dict[str, str] = {}

    def add(self, key: str, **fields: object) -> None:
        if key not in self._texts:
            self._texts[key] = hint(key, **fields)

    def __bool__(self) -> bool:
        return bool(self._texts)

    def text(self) -> str:
        return "\n".join(self._texts.values())
