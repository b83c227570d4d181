"""Boxes: the offline box build, and import / list / remove with the real vagrant and libvirt."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from kubelab import boxes
from kubelab.backend.libvirt_inspect import LibvirtInspector
from kubelab.backend.vagrant_driver import VagrantDriver
from kubelab.errors import KubelabError
from tests.support.libvirt_helpers import TEST_VARIANT, start_pool
from tests.support.libvirt_netns import NetnsLibvirt
from tests.support.tar_members import copy_member

NAME = "classroom/debian12"
POOL = "default"
BOX_FILES = {"metadata.json", "Vagrantfile", "box.img", "vmlinuz", "initrd.img"}


def test_unknown_distro_is_one_line_listing_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(KubelabError) as err:
        boxes.build_box_file("centos7", tmp_path, tmp_path / "build.log")
    message = str(err.value)
    assert "\n" not in message
    assert "'centos7'" in message
    assert all(distro in message for distro in boxes.distros())
    assert err.value.code == 2
    assert not any(tmp_path.iterdir())  # nothing built, nothing logged


def test_unknown_variant_is_one_line_listing_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(KubelabError) as err:
        boxes.build_box_file("debian12", tmp_path, tmp_path / "build.log", variant="rhel9")
    assert "\n" not in str(err.value) and "centos7-quirks" in str(err.value)
    assert err.value.code == 2
    assert not any(tmp_path.iterdir())


@pytest.mark.integration
def test_quirks_box_behaves_like_centos7_on_disk(offline_box: Path, tmp_path: Path) -> None:
    """Read the built image's files with debugfs (no mount): the centos7-quirks changes."""
    if shutil.which("debugfs") is None:
        pytest.skip("needs debugfs (e2fsprogs)")
    with tarfile.open(offline_box) as box:
        copy_member(box, "box.img", tmp_path)
    raw = tmp_path / "root.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", tmp_path / "box.img", raw], check=True)

    def cat(path: str) -> str:
        done = subprocess.run(
            ["debugfs", "-R", f"cat {path}", raw], capture_output=True, text=True, check=True
        )
        return done.stdout

    def exists(path: str) -> bool:
        done = subprocess.run(
            ["debugfs", "-R", f"stat {path}", raw], capture_output=True, text=True
        )
        return "Inode:" in done.stdout

    assert "SetEnv PATH=/usr/local/bin:/usr/bin" in cat(
        "/etc/ssh/sshd_config.d/centos7-quirks.conf"
    )
    assert "secure_path = /sbin:/bin:/usr/sbin:/usr/bin" in cat("/etc/sudoers.d/centos7-quirks")
    hosts = [line for line in cat("/etc/nsswitch.conf").splitlines() if line.startswith("hosts:")]
    assert hosts and hosts[0].split()[1:] == ["files", "dns", "myhostname"]
    assert exists("/usr/lib/x86_64-linux-gnu/libnss_myhostname.so.2")
    for tool in ("ip", "ss"):
        assert exists(f"/usr/sbin/{tool}") and not exists(f"/usr/bin/{tool}"), tool
    keys = [line.split()[0] for line in cat("/home/vagrant/.ssh/authorized_keys").splitlines()]
    assert keys and set(keys) == {"ssh-rsa"}


def test_recipe_hash_follows_every_recipe_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipes = tmp_path / "box"
    shutil.copytree(boxes.RECIPES, recipes)
    monkeypatch.setattr(boxes, "RECIPES", recipes)
    before = {distro: boxes.recipe_hash(distro) for distro in boxes.distros()}
    assert before == {distro: boxes.recipe_hash(distro) for distro in boxes.distros()}
    for distro in boxes.distros():
        network = next((recipes / distro).rglob("*.network"))
        network.write_text(network.read_text() + "\n")
        assert boxes.recipe_hash(distro) != before[distro]


@pytest.mark.integration
def test_build_script_passes_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("needs shellcheck")
    scripts = sorted(boxes.RECIPES.glob("*/build.sh")) + sorted(boxes.RECIPES.glob("*/variants/*"))
    assert scripts
    result = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.integration
def test_built_box_is_a_libvirt_box_with_its_kernel(offline_box: Path, tmp_path: Path) -> None:
    with tarfile.open(offline_box) as box:
        assert set(box.getnames()) == BOX_FILES
        metadata = json.load(box.extractfile("metadata.json"))  # type: ignore[arg-type]
        vagrantfile = box.extractfile("Vagrantfile").read().decode()  # type: ignore[union-attr]
        image_magic = box.extractfile("box.img").read(4)  # type: ignore[union-attr]
    assert metadata["provider"] == "libvirt"
    assert metadata["format"] == "qcow2"
    assert image_magic == b"QFI\xfb"  # what `format` promises
    for shipped in ("vmlinuz", "initrd.img"):
        assert f'File.expand_path("{shipped}", __dir__)' in vagrantfile

    # Built once per recipe: asking again returns the same file without building.
    mtime = offline_box.stat().st_mtime_ns
    log = tmp_path / "again.log"
    again = boxes.build_box_file("debian12", offline_box.parent, log, variant=TEST_VARIANT)
    assert again == offline_box
    assert offline_box.stat().st_mtime_ns == mtime
    assert not log.exists()


@pytest.mark.integration
@pytest.mark.netns
def test_import_list_remove(netns_libvirt: NetnsLibvirt, offline_box: Path, tmp_path: Path) -> None:
    driver = VagrantDriver(tmp_path, tmp_path / "vagrant.log", env=netns_libvirt.env())
    inspector = LibvirtInspector(netns_libvirt.host_uri)
    assert boxes.list_boxes(driver) == []

    boxes.import_box(driver, offline_box, NAME)
    assert [(b.name, b.provider) for b in boxes.list_boxes(driver)] == [(NAME, "libvirt")]
    with pytest.raises(KubelabError, match="already installed") as err:
        boxes.import_box(driver, offline_box, NAME)
    assert f"invoke box.remove {NAME}" in err.value.hint

    # No VM was made from it, so libvirt holds no image of it yet.
    assert boxes.remove_box(driver, NAME, inspector, POOL) == []
    assert boxes.list_boxes(driver) == []
    with pytest.raises(KubelabError, match="no box named"):
        boxes.remove_box(driver, NAME, inspector, POOL)


def test_import_of_a_missing_file_says_so(tmp_path: Path) -> None:
    driver = VagrantDriver(tmp_path, tmp_path / "vagrant.log")
    with pytest.raises(KubelabError, match="not found") as err:
        boxes.import_box(driver, tmp_path / "missing.box", NAME)
    assert err.value.code == 2


@pytest.mark.integration
@pytest.mark.netns
def test_remove_refuses_a_box_a_vm_disk_is_made_from(
    netns_libvirt: NetnsLibvirt, offline_box: Path, tmp_path: Path
) -> None:
    driver = VagrantDriver(tmp_path, tmp_path / "vagrant.log", env=netns_libvirt.env())
    inspector = LibvirtInspector(netns_libvirt.host_uri)
    boxes.import_box(driver, offline_box, NAME)
    # The pool as vagrant-libvirt leaves it after a first `up`: the box's image
    # (tests/backend/test_vagrant_driver.py checks the real name) and a VM's disk over it.
    start_pool(netns_libvirt)
    image = boxes.box_volume_prefix(NAME) + "0_1700000000_box.img"
    netns_libvirt.virsh("vol-create-as", POOL, image, "1M", "--format", "qcow2")
    netns_libvirt.virsh("vol-create-as", POOL, "lab-master.img", "1M", "--format", "qcow2",
                        "--backing-vol", image, "--backing-vol-format", "qcow2")  # fmt: skip

    with pytest.raises(KubelabError, match="lab-master.img"):
        boxes.remove_box(driver, NAME, inspector, POOL)
    assert [b.name for b in boxes.list_boxes(driver)] == [NAME]
    assert image in inspector.volumes(POOL)

    inspector.delete_volume(POOL, "lab-master.img")
    assert boxes.remove_box(driver, NAME, inspector, POOL) == [image]
    assert inspector.volumes(POOL) == []
    assert boxes.list_boxes(driver) == []
