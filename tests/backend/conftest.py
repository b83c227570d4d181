"""Fixtures for the backend tests: libvirtd in a namespace of the test's own, the test box.

Both skip with the reason where they cannot run (not root, vagrant or libvirtd missing).
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.libvirt_helpers import build_offline_box, running_netns_libvirt
from tests.support.libvirt_netns import NetnsLibvirt


@pytest.fixture(scope="session")
def offline_box(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_offline_box(tmp_path_factory.mktemp("box-build"))


@pytest.fixture
def netns_libvirt() -> Iterator[NetnsLibvirt]:
    with running_netns_libvirt() as lab:
        yield lab
