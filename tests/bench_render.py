"""Benchmark: how long rendering the default lab takes, in-process and as `invoke render`.

    python tests/bench_render.py [--runs 20]

In-process: the first render (templates compiled, or read from Jinja's bytecode
cache) and the median of the next renders (the environment kept per process).
Whole process: the median wall time of `invoke render --out <tmp>` started fresh.
Prints figures; asserts none.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kubelab.config import load_config  # noqa: E402
from kubelab.plan import make_plan  # noqa: E402
from kubelab.render import render  # noqa: E402

DEFAULT_CONFIG = REPO / "tests" / "data" / "configs" / "valid" / "empty.yaml"


def in_process(runs: int) -> tuple[float, float]:
    plan = make_plan(load_config(DEFAULT_CONFIG), Path("/srv/kubelab/lab"))
    started = time.perf_counter()
    render(plan)
    first = time.perf_counter() - started
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        render(plan)
        times.append(time.perf_counter() - started)
    return first, statistics.median(times)


def whole_process(runs: int) -> float:
    invoke = Path(sys.executable).with_name("invoke")
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(
                [str(invoke), "render", "--config", str(DEFAULT_CONFIG), "--out", tmp],
                cwd=REPO,
                check=True,
                capture_output=True,
            )
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="renders timed (median)")
    args = parser.parse_args()
    first, median = in_process(args.runs)
    print(f"render in-process: first {first * 1000:.1f} ms, then median {median * 1000:.1f} ms")
    print(f"`invoke render` whole process: median {whole_process(max(3, args.runs // 4)):.2f} s")


if __name__ == "__main__":
    main()
