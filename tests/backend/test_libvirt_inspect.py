"""LibvirtInspector against a real libvirtd, in a network namespace of the test's own.

No VM boots here: the test defines what a lab leaves behind (an inactive domain,
its network, its disk volume) with virsh and checks the inspector finds exactly
those, and nothing of another lab.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kubelab.backend.libvirt_inspect import LibvirtInspector
from kubelab.errors import KubelabError
from tests.support.libvirt_helpers import start_pool, virsh_define
from tests.support.libvirt_netns import NetnsLibvirt

DATA = Path(__file__).parent.parent / "data" / "backend"
POOL = "default"


def test_unreachable_libvirt_is_reported_not_raised(tmp_path: Path) -> None:
    uri = f"qemu:///system?socket={tmp_path / 'no-such-socket'}"
    ok, message = LibvirtInspector(uri).can_connect()
    assert not ok
    assert uri in message


def test_unreachable_libvirt_raises_one_kubelab_error(tmp_path: Path) -> None:
    uri = f"qemu:///system?socket={tmp_path / 'no-such-socket'}"
    with pytest.raises(KubelabError) as err:
        LibvirtInspector(uri).domains()
    assert uri in err.value.message
    assert "doctor" in err.value.hint


@pytest.mark.netns
@pytest.mark.integration
def test_can_connect_names_the_uri(netns_libvirt: NetnsLibvirt) -> None:
    ok, message = LibvirtInspector(netns_libvirt.host_uri).can_connect()
    assert ok, message
    assert netns_libvirt.host_uri in message


@pytest.mark.netns
@pytest.mark.integration
def test_leftovers_are_the_labs_domains_networks_and_volumes(
    netns_libvirt: NetnsLibvirt,
) -> None:
    inspector = LibvirtInspector(netns_libvirt.host_uri)
    prefix, other = "lab1-", "lab2-"
    assert inspector.leftovers(prefix, [f"{prefix}net"], POOL) == []  # no pool yet

    start_pool(netns_libvirt)
    for lab in (prefix, other):
        virsh_define(netns_libvirt, "define", DATA / "domain.xml", name=f"{lab}node1")
        netns_libvirt.virsh("vol-create-as", POOL, f"{lab}node1.img", "1M", "--format", "qcow2")
    virsh_define(
        netns_libvirt, "net-create", DATA / "network.xml", name=f"{prefix}net", bridge="klbr0"
    )

    assert inspector.leftovers(prefix, [f"{prefix}net"], POOL) == [
        f"domain {prefix}node1 (shutoff)",
        f"network {prefix}net",
        f"volume {POOL}/{prefix}node1.img",
    ]
    assert [d.name for d in inspector.domains()] == [f"{prefix}node1", f"{other}node1"]
    assert {n.name: n.active for n in inspector.networks()}[f"{prefix}net"]

    inspector.delete_volume(POOL, f"{prefix}node1.img")
    netns_libvirt.virsh("undefine", f"{prefix}node1")
    netns_libvirt.virsh("net-destroy", f"{prefix}net")
    assert inspector.leftovers(prefix, [f"{prefix}net"], POOL) == []
    # The other lab's things are not this lab's leftovers, and are still there.
    assert inspector.volumes(POOL, other) == [f"{other}node1.img"]


@pytest.mark.netns
@pytest.mark.integration
def test_volumes_backed_by_finds_overlays_of_a_base_image(netns_libvirt: NetnsLibvirt) -> None:
    inspector = LibvirtInspector(netns_libvirt.host_uri)
    start_pool(netns_libvirt)
    virsh = netns_libvirt.virsh
    virsh("vol-create-as", POOL, "base.img", "1M", "--format", "qcow2")
    virsh("vol-create-as", POOL, "unrelated.img", "1M", "--format", "qcow2")
    virsh("vol-create-as", POOL, "vm.img", "1M", "--format", "qcow2",
          "--backing-vol", "base.img", "--backing-vol-format", "qcow2")  # fmt: skip

    assert inspector.volumes_backed_by(POOL, ["base.img"]) == ["vm.img"]
    assert inspector.volumes_backed_by(POOL, ["unrelated.img"]) == []
    assert inspector.volumes_backed_by(POOL, []) == []


@pytest.mark.netns
@pytest.mark.integration
def test_missing_pool_has_no_volumes_and_cannot_delete(netns_libvirt: NetnsLibvirt) -> None:
    inspector = LibvirtInspector(netns_libvirt.host_uri)
    assert inspector.volumes("no-such-pool") == []
    with pytest.raises(KubelabError, match="no-such-pool"):
        inspector.delete_volume("no-such-pool", "x.img")


@pytest.mark.netns
@pytest.mark.integration
def test_deleting_a_missing_volume_says_which(netns_libvirt: NetnsLibvirt) -> None:
    start_pool(netns_libvirt)
    with pytest.raises(KubelabError) as err:
        LibvirtInspector(netns_libvirt.host_uri).delete_volume(POOL, "gone.img")
    assert f"{POOL}/gone.img" in err.value.message
    assert "vol-delete" in err.value.hint
