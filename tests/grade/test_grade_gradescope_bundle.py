"""The Gradescope autograder: autograder.zip's run_autograder, run in an /autograder-shaped
folder of the test's own, for a passing, a failing and a broken submission.

As Gradescope does: the zip's contents go to ROOT/source, run_autograder to ROOT,
the student's files to ROOT/submission; run_autograder must write
ROOT/results/results.json in the format of Gradescope's "Autograder Specifications".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from kubelab.grade.gradescope import write_bundle
from kubelab.grade.rubric import Rubric
from tests.grade import arriving_class as arriving
from tests.grade.arriving_class import ArrivingClass

pytestmark = pytest.mark.integration

# The fields the specification defines, and their allowed values.
TOP_FIELDS = {
    "score",
    "execution_time",
    "output",
    "output_format",
    "test_output_format",
    "test_name_format",
    "visibility",
    "stdout_visibility",
    "extra_data",
    "tests",
    "leaderboard",
}
TEST_FIELDS = {
    "score",
    "max_score",
    "status",
    "name",
    "name_format",
    "number",
    "output",
    "output_format",
    "tags",
    "visibility",
    "extra_data",
}
VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(tmp_path_factory.mktemp("bundle") / "autograder.zip", 2)


def autograder_run(bundle: Path, root: Path, submitted: list[Path]) -> dict[str, Any]:
    (root / "source").mkdir(parents=True)
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(root / "source")
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
    (root / "submission").mkdir()
    (root / "results").mkdir()
    for path in submitted:
        shutil.copy(path, root / "submission" / path.name)
    env = {
        **os.environ,
        "KUBELAB_AUTOGRADER_ROOT": str(root),
        "KUBELAB_AUTOGRADER_PYTHON": sys.executable,
        "PYTHONPATH": "",
    }
    done = subprocess.run(
        ["bash", str(root / "run_autograder")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads((root / "results" / "results.json").read_text(encoding="utf-8"))


def check_spec(results: dict[str, Any]) -> None:
    assert set(results) <= TOP_FIELDS
    assert isinstance(results["score"], int | float)
    assert isinstance(results["output"], str) and results["output"]
    for test in results["tests"]:
        assert set(test) <= TEST_FIELDS
        assert {"name", "score", "max_score"} <= set(test)
        assert test["status"] in ("passed", "failed")
        assert test["visibility"] in VISIBILITY
        assert len(test["tags"]) == len(set(test["tags"])), test["tags"]  # no duplicates
        assert all(isinstance(t, str) for t in test["tags"])
    if results["tests"]:
        assert sum(t["score"] for t in results["tests"]) == pytest.approx(results["score"])


def test_the_bundle_has_the_scripts_at_its_root(bundle: Path) -> None:
    with zipfile.ZipFile(bundle) as zf:
        names = zf.namelist()
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
    assert names[:2] == ["setup.sh", "run_autograder"]
    assert modes["run_autograder"] & 0o111 and modes["setup.sh"] & 0o111
    assert {"kubelab/grade/gradescope.py", "labs/rubrics/2.yaml"} <= set(names)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_the_scripts_pass_shellcheck(bundle: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(tmp_path, members=["setup.sh", "run_autograder"])
    done = subprocess.run(
        ["shellcheck", "-s", "bash", str(tmp_path / "setup.sh"), str(tmp_path / "run_autograder")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout


def test_a_passing_submission(
    bundle: Path, arriving_class: ArrivingClass, tmp_path: Path, rubric: Rubric
) -> None:
    # 2021002's archive: everything, and the extra credit.
    results = autograder_run(bundle, tmp_path, [arriving_class.files[arriving.BROWSER_FIRST]])
    check_spec(results)
    assert results["score"] == 110
    assert [t["name"].removesuffix(" (extra credit)") for t in results["tests"]] == [
        i.title for i in rubric.items
    ]
    assert all(t["status"] == "passed" for t in results["tests"])
    assert sum(t["max_score"] for t in results["tests"]) == rubric.max_points


def test_a_failing_submission(bundle: Path, arriving_class: ArrivingClass, tmp_path: Path) -> None:
    # 2021009: one nginx pod IP does not answer; no monitoring UI (extra credit).
    results = autograder_run(bundle, tmp_path, [arriving_class.files[arriving.LATE]])
    check_spec(results)
    # Rubric 2 (issue 10): one of 3 of verify's pod IPs and one of 2 of the student's own
    # pods fail: network 10 x 2/3 and own-pod-ips 15 x 1/2.
    assert results["score"] == pytest.approx(89.17)
    by_tag = {t["tags"][0]: t for t in results["tests"]}
    assert by_tag["network"]["status"] == "failed" and by_tag["network"]["score"] == 6.67
    assert by_tag["own-pod-ips"]["status"] == "failed" and by_tag["own-pod-ips"]["score"] == 7.5
    extra = by_tag["monitoring-ui"]
    assert extra["status"] == "passed" and extra["score"] == 0 and extra["max_score"] == 0
    assert extra["output"].startswith("Extra credit, not earned")
    assert "failed checks: pod-ips" in results["output"]


def test_a_broken_submission_says_why(
    bundle: Path, arriving_class: ArrivingClass, tmp_path: Path
) -> None:
    results = autograder_run(bundle, tmp_path, [arriving_class.files[arriving.CUT_OFF]])
    check_spec(results)
    assert results["score"] == 0 and results["tests"] == []
    assert "cut off" in results["output"]
    assert f"upload {arriving.CUT_OFF} again" in results["output"]


def test_an_empty_submission_says_what_to_submit(bundle: Path, tmp_path: Path) -> None:
    results = autograder_run(bundle, tmp_path, [])
    check_spec(results)
    assert results["score"] == 0
    assert "no kubelab-ex2-<ID>.tar.gz in your submission" in results["output"]
