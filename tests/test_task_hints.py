"""Every `invoke ...` line kubelab shows a user names a real task with real flags.

Hints in errors, manuals, hints.yaml and the README are read from the files and
parsed by invoke's own parser against tasks.py's collection, so a renamed task or
flag cannot leave a hint behind that fails when a student types it.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
from pathlib import Path

import pytest
from invoke import Collection
from invoke.parser import ParseError, Parser, ParserContext
from invoke.program import Program

REPO = Path(__file__).resolve().parents[1]
SOURCES = [
    *sorted((REPO / "kubelab").rglob("*.py")),
    *sorted((REPO / "labs").rglob("*.yaml")),
    *sorted((REPO / "labs" / "templates").rglob("*.j2")),
    REPO / "README.md",
]
# `invoke ...` in backticks, or at the start of a manual's line (up to the end of the
# line, a wide gap before a word, a bracket or a semicolon: what follows is prose).
QUOTED = re.compile(r"`(invoke [^`\n]+)`")
LINE = re.compile(
    r"^\s*(?:[^:：]*[:：]\s*)?(invoke [a-z][^\n`'\"(（;；]*?)\s*(?:$|\s{3,}(?=[^-\s])|[（(;；])",
    re.M,
)
# What stands for a value the user fills in: {x}, {{ x }}, <x>, UPPER words, ...
PLACEHOLDERS = re.compile(r"\{\{[^}]*\}\}|\{[^}]*\}|<[^>]*>|\b[A-Z][A-Z_]*\b|\.\.\.|…")


def shown_text(path: Path) -> str:
    """What a file can show a user: a Python module's strings (f-strings with each
    value as {x}; comments and docstrings of code are for us), any other file whole."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".py":
        return text
    nodes = list(ast.walk(ast.parse(text)))
    joined = [n for n in nodes if isinstance(n, ast.JoinedStr)]
    parts = {id(v) for n in joined for v in n.values}  # an f-string's pieces are in it
    parts |= {id(n.value) for n in nodes if isinstance(n, ast.Expr)}  # docstrings
    shown = [
        "".join(v.value if isinstance(v, ast.Constant) else "{x}" for v in n.values) for n in joined
    ]
    shown += [
        n.value
        for n in nodes
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in parts
    ]
    return "\n".join(shown)


def shown_commands() -> dict[str, str]:
    """Each `invoke` command line a user is shown -> the first file showing it."""
    found: dict[str, str] = {}
    for path in SOURCES:
        text = shown_text(path)
        for pattern in (QUOTED, LINE):
            for match in pattern.finditer(text):
                found.setdefault(match.group(1).strip(), str(path.relative_to(REPO)))
    return found


@functools.cache
def parser() -> Parser:
    """invoke's parser for tasks.py, loaded once for every command checked."""
    spec = importlib.util.spec_from_file_location("kubelab_tasks", REPO / "tasks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tasks = Collection.from_module(module)
    core = ParserContext(args=Program().core_args())
    return Parser(initial=core, contexts=tasks.to_contexts())


COMMANDS = shown_commands()


def test_the_hints_are_found() -> None:
    # The scan must see the hints it is meant to hold: a few that are known to exist.
    assert {"invoke up", "invoke verify --evidence DIR", "invoke lab --check"} <= set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS), ids=lambda c: c[:60])
def test_each_invoke_line_shown_to_a_user_parses(command: str) -> None:
    # A usage line's optional parts ([--yes], [--config FILE]) are tried as given.
    argv = PLACEHOLDERS.sub("1", command.replace("[", "").replace("]", "")).split()
    try:
        parsed = parser().parse_argv(argv[1:])
    except (ParseError, ValueError) as exc:
        pytest.fail(f"{COMMANDS[command]}: `{command}` does not parse: {exc}")
    core_only = any(parsed[0].flags[f].value for f in ("--list", "--help", "--version"))
    assert parsed[1:] or core_only, f"{COMMANDS[command]}: `{command}` names no task"
