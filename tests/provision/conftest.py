"""Fixtures for the stage tests: rendered scripts, and guests (isolated roots) to run them in."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.provision.harness import (
    GuestFactory,
    HarnessUnavailable,
    base_root,
    guest_factory,
    make_harness_layer,
    overlay_supported,
)


@pytest.fixture(scope="session")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        root = base_root()
    except HarnessUnavailable as exc:
        pytest.skip(f"isolated root unavailable: {exc}")
    if not overlay_supported(tmp_path_factory.mktemp("overlay-probe")):
        pytest.skip("this kernel does not let root mount overlayfs in a mount namespace")
    return root


@pytest.fixture(scope="session")
def harness_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_harness_layer(tmp_path_factory.mktemp("harness-layer"))


@pytest.fixture
def new_guest(tmp_path: Path, base: Path, harness_layer: Path) -> GuestFactory:
    """new_guest(guest, node, hostname_before=...): a fresh VM for `node` of the plan, in
    the test's own folder (harness.guest_factory)."""
    return guest_factory(tmp_path, base, harness_layer)
