"""Fixtures for the stage tests: rendered scripts, and guests (isolated roots) to run them in."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from kubelab.plan import PlannedNode
from tests.provision.harness import (
    Guest,
    HarnessUnavailable,
    base_root,
    build_seed,
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


GuestFactory = Callable[..., Guest]


@pytest.fixture
def new_guest(tmp_path: Path, base: Path, harness_layer: Path) -> GuestFactory:
    """new_guest(guest, node, hostname_before=...): a fresh VM for `node` of the plan.

    hostname_before is the hostname the VM has before the stages run (default:
    the plan's, as Vagrant sets it); Vagrant's loopback line carries it.
    """

    def factory(
        guest: str,
        node: PlannedNode,
        hostname_before: str | None = None,
        extra_files: Mapping[str, str] | None = None,
        cluster: Path | None = None,
    ) -> Guest:
        before = hostname_before or node.hostname
        seed = build_seed(tmp_path / f"seed-{node.name}", guest, before)
        for rel, text in (extra_files or {}).items():
            path = seed / "rootfs" / rel.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        family = "rhel" if guest == "centos7" else "debian"
        return Guest(
            name=node.name,
            family=family,
            seed=seed,
            base=base,
            harness_layer=harness_layer,
            workdir=tmp_path / f"vm-{node.name}",
            hostname=before,
            cluster=cluster,
            address=node.ip,
        )

    return factory
