"""Fixtures for the grading tests: the rubric and a synthetic class of hand-ins."""

from __future__ import annotations

import pytest

from kubelab.grade.rubric import Rubric, load_rubric
from tests.grade.arriving_class import ArrivingClass, build_arriving_class
from tests.grade.handin_class import SyntheticClass, build_class
from tests.support.captures import FIXTURES


@pytest.fixture(autouse=True, scope="session")
def _captures_present() -> None:
    assert FIXTURES.is_dir(), f"cluster captures missing at {FIXTURES}"


@pytest.fixture(scope="session")
def rubric() -> Rubric:
    return load_rubric(2)


@pytest.fixture(scope="session")
def synthetic_class(tmp_path_factory: pytest.TempPathFactory) -> SyntheticClass:
    return build_class(tmp_path_factory.mktemp("class"))


@pytest.fixture(scope="session")
def arriving_class(tmp_path_factory: pytest.TempPathFactory) -> ArrivingClass:
    return build_arriving_class(tmp_path_factory.mktemp("arriving"))
