"""What the tasks print: tables and the one-line error form.

tasks.py stays wiring; the shapes of the output live here.

rich is imported when something is first drawn with it, not when tasks.py imports
this module: it costs a tenth of the start of every task, and a task that prints
plain lines (`invoke render`, `print_line`) needs none of it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from kubelab.backend.vagrant_driver import Box
    from kubelab.doctor import Finding
    from kubelab.labs import Exercise
    from kubelab.lifecycle import NodeStatus

# `ui.console` (stdout) and `ui.err_console` (stderr), made on first use.
_STDERR = {"console": False, "err_console": True}


def __getattr__(name: str) -> Console:
    if name not in _STDERR:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from rich.console import Console

    made = Console(stderr=_STDERR[name], highlight=False)
    globals()[name] = made  # later reads find it without coming here
    return made


def _console(name: str = "console") -> Console:
    """`console` or `err_console` for this module's own functions (a module's
    __getattr__ answers only reads from outside it)."""
    made: Console = globals()[name] if name in globals() else __getattr__(name)
    return made


def print_line(text: str) -> None:
    """One plain line on stdout, as it is: no markup read, no wrapping (a path or a
    value from the config prints whatever characters it holds)."""
    print(text, flush=True)


def node_table(nodes: Iterable[NodeStatus], title: str = "") -> Table:
    from rich.table import Table

    table = Table(title=title or None)
    for column in ("node", "hostname", "role", "private IP", "state"):
        table.add_column(column)
    for n in nodes:
        style = "green" if n.state == "running" else "yellow"
        table.add_row(n.name, n.hostname, n.role, n.ip, f"[{style}]{n.state}[/]")
    return table


def findings_table(findings: Iterable[Finding]) -> Table:
    from rich.table import Table

    table = Table(title="host preflight")
    for column in ("check", "result", "detail", "fix"):
        table.add_column(column, overflow="fold")
    colour = {"ok": "green", "warn": "yellow", "fail": "red"}
    for f in findings:
        table.add_row(f.check, f"[{colour[f.status]}]{f.status}[/]", f.detail, f.fix)
    return table


def box_table(boxes: Iterable[Box]) -> Table:
    from rich.table import Table

    table = Table(title="Vagrant boxes")
    for column in ("name", "provider", "version"):
        table.add_column(column)
    for b in boxes:
        table.add_row(b.name, b.provider, b.version)
    return table


def exercise_table(exercises: Iterable[Exercise], language: str = "en") -> Table:
    from rich.table import Table

    table = Table(title="exercises")
    for column in ("#", "title", "starts with", "--solve applies"):
        table.add_column(column, overflow="fold")
    for e in exercises:
        title = e.title.get(language) or e.title.get("en", "")
        table.add_row(
            str(e.number),
            title,
            ", ".join(e.start) or "VMs up",
            ", ".join(e.solution),
        )
    return table


def print_manual(exercise: Exercise, text: str, language: str = "en") -> None:
    """The manual: prose wraps at the terminal's width, a command line never does."""
    title = exercise.title.get(language) or exercise.title.get("en", "")
    console = _console()
    console.rule(f"exercise {exercise.number}: {title}")
    console.print(text, markup=False, highlight=False, soft_wrap=True)
    console.rule()


def steps_table(rows: Iterable[tuple[str, str, bool, str]], exercise: int) -> Table:
    """`invoke lab --check`: per step of the manual, done or not and why. Narrow
    terminals get the reason under the step instead of in a column."""
    from rich.table import Table
    from rich.text import Text

    narrow = _console().width < 100
    table = Table(title=f"exercise {exercise}: your progress", show_lines=narrow)
    table.add_column("step", no_wrap=True)
    table.add_column("what")
    table.add_column("done", no_wrap=True)
    if not narrow:
        table.add_column("what is missing", overflow="fold")
    for step, title, done, why in rows:
        mark = Text("yes", style="green") if done else Text("no", style="red")
        if narrow:
            what = Text(title)
            if not done and why:
                what.append("\n" + why, style="yellow")
            table.add_row(step, what, mark)
        else:
            table.add_row(step, title, mark, "" if done else why)
    return table


def print_error(message: str, hint: str = "") -> None:
    from rich.markup import escape

    err_console = _console("err_console")
    # Messages quote user values ('[/bold]' in a student ID): escape them, or rich
    # reads them as markup and, for a stray closing tag, raises MarkupError.
    for line in message.splitlines() or [message]:
        err_console.print(
            f"[red]error:[/] {escape(line)}" if line else "",
            markup=True,
            highlight=False,
            soft_wrap=True,
        )
    if hint:
        err_console.print(f"[cyan]hint:[/] {escape(hint)}", soft_wrap=True)


def confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")
