"""The one error type that reaches the user.

Every failure a user can act on is a KubelabError: one line saying what is wrong,
an optional hint saying what to try, and the exit code the task ends with.
tasks.py catches it once and turns it into `invoke.Exit`.
"""

from __future__ import annotations


class KubelabError(Exception):
    """A failure the user can act on."""

    def __init__(self, message: str, *, hint: str = "", code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(KubelabError):
    """The lab config is invalid; carries every problem found, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems), code=2)

    def __str__(self) -> str:
        return self.message
