"""Helpers for tests with libvirtd in a namespace and the offline test box.

They skip the calling test, with the reason, where they cannot run. The fixtures
that wrap them, `offline_box` (the one box fixture, session-wide) and
`netns_libvirt`, are in tests/conftest.py.

Code in the test process reaches the VMs (SSH to their addresses) only from a
thread inside the harness's network namespace: `call_in_netns(lab.name, fn)`
(tests/support/netns.py).

The box is built once per recipe: kubelab.boxes caches it under BOX_CACHE, keyed
by a digest of vagrant/box/debian12/, so a rerun only builds again after the
recipe changed (about a minute, needs root and the Debian mirror).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from string import Template

import pytest

from kubelab.boxes import build_box_file
from tests.support.libvirt_netns import NetnsLibvirt, missing_requirements

BOX_CACHE = Path(os.environ.get("KUBELAB_BOX_CACHE", "/var/tmp/kubelab-box-cache"))
TEST_DISTRO = "debian12"
# The VMs of the e2e tests behave like CentOS 7 where labs break (variants/ in the
# recipe): the defects a real CentOS 7 `invoke up` meets fail here too.
TEST_VARIANT = "centos7-quirks"
# How long the offline_box fixture took (a build or a cache lookup), for the e2e figures.
BOX_BUILD_SECONDS = pytest.StashKey[float]()


def build_offline_box(log_dir: Path) -> Path:
    """The offline Debian 12 box file in its centos7-quirks variant (built on first use,
    then taken from the cache)."""
    if os.geteuid() != 0:
        pytest.skip("building the test box needs root (debootstrap)")
    return build_box_file(TEST_DISTRO, BOX_CACHE, log_dir / "build.log", variant=TEST_VARIANT)


@contextmanager
def running_netns_libvirt() -> Iterator[NetnsLibvirt]:
    """A running libvirtd in a network namespace of its own, torn down afterwards."""
    reason = missing_requirements()
    if reason:
        pytest.skip(f"libvirtd in a network namespace: {reason}")
    with NetnsLibvirt() as lab:
        yield lab


def virsh_define(netns: NetnsLibvirt, command: str, template: Path, **values: str) -> None:
    """Run `virsh COMMAND FILE` (define, net-create, ...) on an XML template filled with values."""
    xml = netns.state / f"{template.stem}-{values.get('name', 'x')}.xml"
    xml.write_text(Template(template.read_text()).substitute(values))
    netns.virsh(command, str(xml))


def start_pool(netns: NetnsLibvirt, name: str = "default") -> None:
    """Make the directory pool vagrant-libvirt would make at its first `up`."""
    netns.virsh("pool-define-as", name, "dir", "--target", "/var/lib/libvirt/images")
    netns.virsh("pool-start", name)
