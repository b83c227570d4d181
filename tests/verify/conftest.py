"""Fixtures for the verify tests: evidence folders assembled from the real captures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.captures import FIXTURES
from tests.verify.verify_captures import Folder, build_folder


@pytest.fixture(autouse=True, scope="session")
def _captures_present() -> None:
    # Fail loudly rather than skip: these tests are the point of the captures.
    assert FIXTURES.is_dir(), f"cluster captures missing at {FIXTURES} (set KUBELAB_FIXTURES)"


@pytest.fixture
def folder(tmp_path: Path) -> Folder:
    """A healthy run's evidence on the kubeadm v1.21.0 1 control plane + 2 workers cluster."""
    return build_folder(tmp_path / "evidence")
