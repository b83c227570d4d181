"""Progress reporting: a status line per step, per-VM lines, a spinner only on a terminal.

On a terminal, `rich` draws a live table (VM, state, step, elapsed); in a log or
CI the same events come out as plain timestamped lines. The package reports
through a `Reporter`; tasks.py picks the console. rich is imported by the Reporter
that draws, not with this module: tasks.py imports it for every task.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table


@dataclass
class _VMLine:
    state: str = "-"
    step: str = ""
    started: float = field(default_factory=time.monotonic)


class Reporter:
    """Where long work says what it is doing."""

    def __init__(self, console: Console | None = None) -> None:
        if console is None:
            from rich.console import Console

            console = Console(highlight=False)
        self.console = console
        self._lock = threading.Lock()
        self._vms: dict[str, _VMLine] = {}
        self._live: Live | None = None

    @property
    def interactive(self) -> bool:
        return self.console.is_terminal

    def info(self, message: str) -> None:
        self._print(message)

    def warn(self, message: str) -> None:
        self._print(f"[yellow]warning:[/] {message}")

    @contextmanager
    def step(self, title: str, deadline: float | None = None) -> Iterator[None]:
        """A named step with its deadline stated up front and its time at the end."""
        limit = f" (deadline {deadline:.0f} s)" if deadline else ""
        self._print(f"[bold]==>[/] {title}{limit}")
        started = time.monotonic()
        try:
            yield
        except BaseException:
            self._print(f"[red]<== {title}: failed after {time.monotonic() - started:.1f} s[/]")
            raise
        self._print(f"[green]<==[/] {title}: done in {time.monotonic() - started:.1f} s")

    @contextmanager
    def vms(self, names: list[str]) -> Iterator[None]:
        """Track per-VM state while the block runs (live table on a terminal)."""
        with self._lock:
            self._vms = {name: _VMLine() for name in names}
        if not self.interactive:
            yield
            return
        from rich.live import Live

        with Live(
            self._table(),
            console=self.console,
            refresh_per_second=4,
            transient=True,
            get_renderable=self._table,
        ) as live:
            self._live = live
            try:
                yield
            finally:
                self._live = None

    def vm(self, name: str, state: str | None = None, step: str | None = None) -> None:
        with self._lock:
            line = self._vms.setdefault(name, _VMLine())
            if state is not None:
                line.state = state
            if step is not None:
                line.step = step
                line.started = time.monotonic()
        if not self.interactive:
            parts = [p for p in (state, step) if p]
            self._print(f"    {name}: {' | '.join(parts)}")

    def _table(self) -> Table:
        from rich.spinner import Spinner
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for column in ("", "VM", "state", "step", "elapsed"):
            table.add_column(column)
        with self._lock:
            rows = list(self._vms.items())
        for name, line in rows:
            busy = line.state not in ("done", "failed", "skipped", "up")
            table.add_row(
                Spinner("dots") if busy else " ",
                name,
                line.state,
                line.step,
                f"{time.monotonic() - line.started:.0f} s",
            )
        return table

    def _print(self, message: str) -> None:
        stamp = "" if self.interactive else time.strftime("%H:%M:%S ")
        if self._live is not None:
            self._live.console.print(f"{stamp}{message}")
        else:
            self.console.print(f"{stamp}{message}")
