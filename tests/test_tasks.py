"""Every task answers --help, and every bad input ends as one clear line and a non-zero exit.

These run invoke's own Program on the argv a user types, from the repository root, in
this process (tests/support/invoke_in_process.py); `--list` and the `ssh` cases (the
task execs) run the real `invoke` program.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.invoke_in_process import run_task

REPO = Path(__file__).resolve().parents[1]
INVOKE = [sys.executable, "-m", "invoke"]

TASKS = [
    "render",
    "up",
    "status",
    "ssh",
    "halt",
    "destroy",
    "doctor",
    "lab",
    "verify",
    "grade",
    "lint",
    "test",
    "golden",
    "box.list",
    "box.import",
    "box.remove",
    "box.build",
    "bench.grade",
    "bench.boot",
    "bench.verify",
    "bench.render",
    "bench.transport",
]


def invoke(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return run_task(*args, cwd=cwd)


def invoke_process(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*INVOKE, "--search-root", str(REPO), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_list_shows_every_task_with_one_line_of_help() -> None:
    done = invoke_process("--list")
    assert done.returncode == 0, done.stderr
    listed = {
        line.split()[0]
        for line in done.stdout.splitlines()[1:]
        if line.startswith("  ") and line.split()
    }
    assert set(TASKS) <= listed


@pytest.mark.parametrize("task", TASKS)
def test_task_help(task: str) -> None:
    done = invoke("--help", task)
    assert done.returncode == 0, done.stderr
    assert "Docstring:" in done.stdout
    # Every flag has a help text: no option line ends without one.
    options = done.stdout.split("Options:", 1)[1] if "Options:" in done.stdout else ""
    for line in options.splitlines():
        if line.strip().startswith("-") and "  " not in line.strip():
            pytest.fail(f"{task}: option without help: {line.strip()}")


def test_ssh_help_after_the_task_name() -> None:
    # `ssh` takes the node as a positional argument, which must not swallow --help
    # (the task execs `invoke --help ssh`: a real process).
    done = invoke_process("ssh", "--help")
    assert done.returncode == 0
    assert "Open a shell on one VM" in done.stdout


def _bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text("nodes:\n  - {name: master, role: master, ip: 192.168.56.300}\n")
    return path


BAD_INPUTS = {
    "render": lambda t: ["render", "--config", str(_bad_config(t)), "--out", str(t / "out")],
    "up": lambda t: ["up", "--config", str(_bad_config(t)), "--lab-dir", str(t / "out")],
    "status": lambda t: ["status", "--config", str(t / "missing.yaml")],
    "ssh": lambda t: ["ssh", "nosuchnode", "--lab-dir", str(t / "out")],
    "halt": lambda t: ["halt", "--lab-dir", str(t / "out")],
    "destroy": lambda t: ["destroy", "--config", str(_bad_config(t))],
    "doctor": lambda t: ["doctor", "--driver", "xen"],
    "lab": lambda t: ["lab", "--exercise", "99"],
    "verify": lambda t: ["verify", "--evidence", str(t / "no-such-folder")],
    "grade": lambda t: ["grade", "--exercise", "2"],
    "box.import": lambda t: ["box.import", str(t / "missing.box"), "--name", "x"],
    "box.build": lambda t: ["box.build", "--distro", "plan9"],
}


@pytest.mark.parametrize("task", sorted(BAD_INPUTS))
def test_bad_input_is_one_clear_line(task: str, tmp_path: Path) -> None:
    # ssh ends by exec'ing (interactive ssh): its bad input runs in a real process.
    run = invoke_process if task == "ssh" else invoke
    done = run(*BAD_INPUTS[task](tmp_path))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert errors, f"{task}: no message on stderr"
    assert not (tmp_path / "out").exists(), f"{task} wrote something on bad input"


def test_bad_config_reports_every_problem_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "two.yaml"
    config.write_text(
        "student_id: 'a b'\nnodes:\n  - {name: Master, role: master, ip: 192.168.56.10, cpus: 1}\n"
    )
    done = invoke("render", "--config", str(config), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 3
    assert all(str(config) in line for line in lines)


# What a task's start must not pay for. `import tasks` (every task, `--list`, `--help`)
# loads no config models, templates or tables; `invoke render` loads neither the
# backend's and transport's libraries nor the checks, the grader or rich (it prints
# plain lines). `invoke bench.render` prints what the start costs.
TASKS_IMPORT_LEAVES_OUT = ("pydantic", "jinja2", "rich", "kubelab.plan", "kubelab.config")
RENDER_LEAVES_OUT = (
    *("libvirt", "vagrant", "paramiko", "rich"),
    *("kubelab.backend", "kubelab.transport", "kubelab.lifecycle", "kubelab.provision"),
    *("kubelab.verify", "kubelab.grade", "kubelab.classroom", "kubelab.doctor"),
)
# With the config kept by an earlier process (kubelab/config_cache.py), no validation:
# neither pydantic nor the config's models, nor the exercises' (kubelab.labs).
RENDER_KEPT_CONFIG_LEAVES_OUT = (*RENDER_LEAVES_OUT, "pydantic", "kubelab.config", "kubelab.labs")
LOADED_AFTER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import tasks
loaded = {"import tasks": sorted(sys.modules)}
from invoke.main import program
program.run(["invoke", "--search-root", sys.argv[1], "render", *sys.argv[2:]], exit=False)
loaded["invoke render"] = sorted(sys.modules)
print(json.dumps(loaded))
"""


def _loaded(modules: list[str], leaves_out: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in leaves_out)]


def test_task_start_and_render_load_only_what_they_use(tmp_path: Path) -> None:
    # A fresh interpreter: this test process has imported everything already.
    config = REPO / "tests" / "data" / "configs" / "valid" / "empty.yaml"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    runs = []
    for out in ("first", "second"):  # the second finds the config kept by the first
        done = subprocess.run(
            [sys.executable, "-c", LOADED_AFTER, str(REPO), "--config", str(config)]
            + ["--out", str(tmp_path / out)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert (tmp_path / out / "Vagrantfile").is_file()  # the render did run
        runs.append(json.loads(done.stdout.splitlines()[-1]))
    first, second = runs
    assert _loaded(first["import tasks"], TASKS_IMPORT_LEAVES_OUT) == []
    assert _loaded(first["invoke render"], RENDER_LEAVES_OUT) == []
    assert "pydantic" in first["invoke render"]  # the config validated
    assert _loaded(second["invoke render"], RENDER_KEPT_CONFIG_LEAVES_OUT) == []
