"""`invoke ARGS` answered by invoke's own Program inside the test process.

A new `invoke` process costs 0.5-1 s here (Python, invoke, pydantic, rich), several
seconds on a loaded machine. Where a test's point is the task's answer (its help, its
exit code, its one line on stderr) and not the process, it runs the same Program on
the same argv with tasks.py freshly loaded, so no module state of one run reaches the
next. What a process would print as a traceback lands on stderr here too, so "no
Traceback" still means what it says. Tests that are about the process (exit status
of the real program, the CLI a user types) keep one real `invoke` each.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import subprocess
import traceback
from pathlib import Path

from invoke import Collection
from invoke.program import Program

REPO_ROOT = Path(__file__).resolve().parents[2]


def tasks_namespace() -> Collection:
    """tasks.py's collection, from a fresh module (the loader of `invoke` does the same)."""
    spec = importlib.util.spec_from_file_location(
        "kubelab_tasks_in_process", REPO_ROOT / "tasks.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Collection.from_module(module)


def run_task(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    """What `invoke ARGS` run in `cwd` exits with and prints, as a finished process.

    The collection is given, so invoke's own --search-root and --collection flags do
    not exist here (they choose a tasks.py; this is the repository's)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    program = Program(namespace=tasks_namespace(), binary="invoke", name="Invoke")
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            program.run(["invoke", *args], exit=True)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except Exception:  # what an uncaught error does to a process: a traceback, exit 1
            err.write(traceback.format_exc())
            code = 1
    return subprocess.CompletedProcess(["invoke", *args], code, out.getvalue(), err.getvalue())
