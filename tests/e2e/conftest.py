"""Fixtures of the end-to-end tests: one lab of three real VMs for the whole session.

The modules run in the order of a lab's life (MODULE_ORDER): lifecycle (up, status,
halt, a failed boot and its resume), provisioning stages 1 and 3 for real, verify's
SSH and curl parts, the hard way's PKI and etcd, then destroy; exercise 1's own
lab; last, the box's removal. They share the lab, because every boot costs one
to two minutes of software emulation; each module brings the lab to the state it
needs with `invoke up` (a no-op when it is there already), so a module also runs
alone. Within a module a failed step skips the steps after it (`incremental`).

Needs root, vagrant with vagrant-libvirt, libvirtd and QEMU; skips with the reason
otherwise. The harness tears everything down even when a test fails; the task log,
the lab's logs and the figures are kept in KUBELAB_E2E_DIR/logs-last.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.lab import FIGURES, E2ELab
from tests.e2e.local_repo import build_local_repo, missing_tools
from tests.support.libvirt_helpers import BOX_BUILD_SECONDS, running_netns_libvirt

MODULE_ORDER = (
    "test_lab_lifecycle.py",
    "test_provision_vms.py",
    "test_verify_vms.py",
    "test_hardway_vms.py",
    "test_lab_destroy.py",
    "test_exercise_vms.py",
    "test_box_remove.py",
)
HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "incremental: a step of a shared lab; skipped once an earlier step failed"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put this folder's tests in the order of the lab's life, leaving the others be."""
    slots = [i for i, item in enumerate(items) if item.path.parent == HERE]
    ordered = sorted(
        (items[i] for i in slots),
        key=lambda item: (
            MODULE_ORDER.index(item.path.name)
            if item.path.name in MODULE_ORDER
            else len(MODULE_ORDER)
        ),
    )  # sorted() is stable: tests keep their order within a module
    for slot, item in zip(slots, ordered, strict=True):
        items[slot] = item


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.failed and item.get_closest_marker("incremental") is not None:
        item.parent.stash[_FAILED] = item.name  # type: ignore[union-attr]
    return report


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("incremental") is None:
        return
    failed = item.parent.stash.get(_FAILED, None)  # type: ignore[union-attr]
    if failed is not None:
        pytest.skip(f"an earlier step of this lab failed: {failed}")


_FAILED = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("kubelab end-to-end figures")
    for name, value in FIGURES.items():
        terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture(scope="session")
def e2e_lab(offline_box: Path, request: pytest.FixtureRequest) -> Iterator[E2ELab]:
    """libvirtd in a namespace of its own with the test box imported by `invoke box build`."""
    took = request.config.stash[BOX_BUILD_SECONDS]
    FIGURES["box build or cache lookup"] = f"{took:.1f} s ({offline_box.name})"
    started = time.monotonic()
    with running_netns_libvirt() as netns:
        lab = E2ELab(netns)
        try:
            imported = lab.import_box()
            assert imported.rc == 0, imported
            FIGURES["harness start + invoke box build (import)"] = (
                f"{time.monotonic() - started:.1f} s"
            )
            yield lab
        finally:
            lab.save_logs()


@pytest.fixture(scope="session")
def local_repo(e2e_lab: E2ELab, offline_box: Path) -> Path:
    """The local Debian package folder (chrony, containerd, runc, nginx-light), set on the lab."""
    reason = missing_tools()
    if reason:
        pytest.skip(f"local Debian package folder: {reason}")
    if e2e_lab.local_repo is None:
        e2e_lab.local_repo = build_local_repo(offline_box)
    return e2e_lab.local_repo
