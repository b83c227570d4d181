"""Hints for failed checks: data in labs/hints.yaml, filled with the failing thing's names.

A hint is text (English), or a mapping by language (en, zh). The language is the
exercise's (`invoke lab --lang`), set for one evaluation with `language(...)`; a
hint without that language falls back to English.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator
from pathlib import Path

import yaml

from kubelab import REPO_ROOT

HINTS_FILE = REPO_ROOT / "labs" / "hints.yaml"
DEFAULT_LANGUAGE = "en"
_language: contextvars.ContextVar[str] = contextvars.ContextVar(
    "kubelab_hint_language", default=DEFAULT_LANGUAGE
)


def _flat(text: str) -> str:
    return " ".join(text.split())


@functools.cache
def load(path: Path = HINTS_FILE) -> dict[str, dict[str, str]]:
    """Hint name -> language -> text."""
    with path.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of hint names to text")
    hints: dict[str, dict[str, str]] = {}
    for key, value in data.items():
        if isinstance(value, str):
            hints[str(key)] = {DEFAULT_LANGUAGE: _flat(value)}
        elif (
            isinstance(value, dict)
            and DEFAULT_LANGUAGE in value
            and all(isinstance(v, str) for v in value.values())
        ):
            hints[str(key)] = {str(lang): _flat(text) for lang, text in value.items()}
        else:
            raise ValueError(f"{path}: {key}: a hint is text, or text by language with 'en'")
    return hints


@contextlib.contextmanager
def language(lang: str | None) -> Iterator[None]:
    """Hints given inside this block are in `lang` where the hint has it."""
    token = _language.set(lang or DEFAULT_LANGUAGE)
    try:
        yield
    finally:
        _language.reset(token)


class _Fields(dict[str, object]):
    # A placeholder the caller did not fill stays visible instead of failing the check.
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def hint(key: str, **fields: object) -> str:
    """The hint `key` with its placeholders filled; KeyError for an unknown key."""
    texts = load()[key]
    text = texts.get(_language.get(), texts[DEFAULT_LANGUAGE])
    return text.format_map(_Fields(fields))


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
