"""Fixtures for the grading tests: the rubric and a synthetic class of hand-ins."""

from __future__ import annotations

import fcntl
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from kubelab.grade.gradebook import ClassReport, grade_handins
from kubelab.grade.rubric import Rubric, load_rubric
from tests.grade.arriving_class import ArrivingClass, build_arriving_class
from tests.grade.handin_class import SyntheticClass, build_class
from tests.support.captures import FIXTURES

T = TypeVar("T")


@pytest.fixture(autouse=True, scope="session")
def _captures_present() -> None:
    assert FIXTURES.is_dir(), f"cluster captures missing at {FIXTURES}"


@pytest.fixture(scope="session")
def rubric() -> Rubric:
    return load_rubric(2)


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], T]) -> T:
    """build(folder), once for the whole run even when pytest-xdist's workers all ask.

    Each worker is a process of its own with its own session fixtures. The first to
    take the lock builds in the folder all workers of this run share (the parent of
    their temporary folders) and pickles what build returned; the others read that.
    Tests only read a built class, so sharing it changes nothing they see.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build(factory.mktemp(name))
    common = factory.getbasetemp().parent
    folder, saved = common / name, common / f"{name}.pickle"
    with (common / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if saved.is_file():
            value: T = pickle.loads(saved.read_bytes())
            return value
        shutil.rmtree(folder, ignore_errors=True)  # a worker whose build failed
        made = build(folder)
        partial = saved.with_suffix(".partial")
        partial.write_bytes(pickle.dumps(made))
        partial.rename(saved)
        return made


@pytest.fixture(scope="session")
def synthetic_class(tmp_path_factory: pytest.TempPathFactory) -> SyntheticClass:
    return built_once(tmp_path_factory, "class", build_class)


@pytest.fixture(scope="session")
def arriving_class(tmp_path_factory: pytest.TempPathFactory) -> ArrivingClass:
    return built_once(tmp_path_factory, "arriving", build_arriving_class)


@pytest.fixture(scope="session")
def arriving_graded(
    arriving_class: ArrivingClass, tmp_path_factory: pytest.TempPathFactory
) -> ClassReport:
    """The arriving class graded as its teacher would: with the roster and the due date.
    test_grade_intake.py reads its outputs, test_grade_html.py its page."""

    def grade(out: Path) -> ClassReport:
        return grade_handins(
            arriving_class.handins, 2, out, roster=arriving_class.roster, due=arriving_class.due
        )

    return built_once(tmp_path_factory, "arriving-graded", grade)
