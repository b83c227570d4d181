"""Benchmark: how long rendering the default lab takes, in-process and as `invoke render`.

    python tests/bench_render.py [--runs 20] [--process-runs 10]

In-process: the first render of a process (the templates read from Jinja's bytecode
cache), the median of the renders after it (the environment and its compiled
templates kept per process), and a first render that compiles every template (no
bytecode cache: a new user, or templates just edited).

Whole process: `invoke render` started fresh `--process-runs` times, twice: warm (the
config validated by an earlier run is kept in the user's cache folder,
kubelab/config_cache.py: no pydantic, the usual case) and cold (that kept config
removed before each run: a new config, flags or kubelab, so it is validated). Beside
them `invoke --list` (invoke and tasks.py alone, no task: the floor under every task).
For each, the best and the median wall time, and the best and the median CPU time
(user + sys of the process). The machine is shared: the load average is printed
before and after, and the best of the runs is the figure least disturbed by others.
The processes use a cache folder of their own ($XDG_CACHE_HOME in a temporary folder),
so the user's caches are neither used nor touched.

The processes run as a user's shell starts them: Python writes its bytecode
(PYTHONDONTWRITEBYTECODE, which a CI or test harness may set, is left out of their
environment, or every run would compile kubelab from source) and one untimed run
comes first. Prints figures; asserts none.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kubelab import render as render_module  # noqa: E402
from kubelab import templating  # noqa: E402
from kubelab.config import load_config  # noqa: E402
from kubelab.plan import make_plan  # noqa: E402

DEFAULT_CONFIG = REPO / "tests" / "data" / "configs" / "valid" / "empty.yaml"


def in_process(runs: int) -> tuple[float, float, float]:
    """(first render, median of the next `runs`, first render compiling), in seconds."""
    plan = make_plan(load_config(DEFAULT_CONFIG), Path("/srv/kubelab/lab"))
    started = time.perf_counter()
    render_module.render(plan)
    first = time.perf_counter() - started
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        render_module.render(plan)
        times.append(time.perf_counter() - started)
    # The same templates in an environment of their own without the bytecode cache.
    uncached = templating.environment(
        templating.VAGRANT_TEMPLATES, templating.PROVISION_TEMPLATES, cached=False
    )
    kept = render_module.lab_environment
    render_module.lab_environment = lambda: uncached  # type: ignore[assignment]
    try:
        started = time.perf_counter()
        render_module.render(plan)
        compiling = time.perf_counter() - started
    finally:
        render_module.lab_environment = kept  # type: ignore[assignment]
    return first, statistics.median(times), compiling


def timed_process(
    argv: list[str], env: dict[str, str], before_each: Callable[[], None]
) -> tuple[float, float]:
    """(wall, user + sys CPU) of one run of argv, in seconds."""
    before_each()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, cwd=REPO, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def whole_process(
    argv: list[str], runs: int, cache_home: Path, before_each: Callable[[], None]
) -> tuple[list[float], list[float]]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["XDG_CACHE_HOME"] = str(cache_home)
    timed_process(argv, env, lambda: None)  # untimed: bytecode and the caches written
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = timed_process(argv, env, before_each)
        walls.append(wall)
        cpus.append(cpu)
    return walls, cpus


def figures(times: list[float]) -> str:
    return f"best {min(times):.3f} s, median {statistics.median(times):.3f} s"


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="in-process renders timed")
    parser.add_argument("--process-runs", type=int, default=10, help="processes timed")
    args = parser.parse_args()
    print(f"load average before: {load()} ({os.cpu_count()} CPUs)")
    # The interpreter matters: a distribution's optimised build against a plain one.
    print(f"python: {sys.version.split()[0]} ({sys.base_prefix})")
    first, median, compiling = in_process(args.runs)
    print(
        f"render in-process: first {first * 1000:.1f} ms (templates from the bytecode "
        f"cache), then median {median * 1000:.1f} ms; compiling every template "
        f"{compiling * 1000:.1f} ms"
    )
    invoke = str(Path(sys.executable).with_name("invoke"))
    with tempfile.TemporaryDirectory() as tmp:
        cache_home, out = Path(tmp) / "cache", Path(tmp) / "lab"
        kept_configs = cache_home / "kubelab" / "config"

        def forget_configs() -> None:
            shutil.rmtree(kept_configs, ignore_errors=True)

        render_argv = [invoke, "render", "--config", str(DEFAULT_CONFIG), "--out", str(out)]
        for what, argv, before_each in (
            ("`invoke render` whole process, warm (the config kept)", render_argv, lambda: None),
            (
                "`invoke render` whole process, cold (the config validated)",
                render_argv,
                forget_configs,
            ),
            ("`invoke --list` whole process", [invoke, "--list"], lambda: None),
        ):
            walls, cpus = whole_process(argv, max(1, args.process_runs), cache_home, before_each)
            print(
                f"{what}, {len(walls)} runs: wall {figures(walls)}; "
                f"CPU (user + sys) {figures(cpus)}"
            )
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
