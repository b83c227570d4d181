"""VagrantDriver with the real vagrant and vagrant-libvirt.

The end-to-end test boots one VM of the offline box from tests/data/backend/Vagrantfile
with a libvirtd in a network namespace of its own: the driver runs in this
process, and its `vagrant` is a wrapper that enters the namespace
(NetnsLibvirt.bin_dir first in PATH). It prints the boot and destroy times.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from kubelab.backend.libvirt_inspect import LibvirtInspector
from kubelab.backend.vagrant_driver import VagrantDriver, _target
from kubelab.boxes import box_volume_prefix, import_box, remove_box
from kubelab.errors import KubelabError
from tests.support.libvirt_netns import NetnsLibvirt

DATA = Path(__file__).parent.parent / "data" / "backend"
BOX = "kubelab-test/debian12"
POOL = "default"
VM = "solo"
LAB_IP = "192.168.56.10"  # tests/data/backend/Vagrantfile
needs_vagrant = pytest.mark.skipif(shutil.which("vagrant") is None, reason="needs vagrant")


def lab_folder(parent: Path) -> Path:
    lab = parent / "lab"
    lab.mkdir()
    shutil.copy(DATA / "Vagrantfile", lab / "Vagrantfile")
    return lab


def test_several_vms_are_one_vagrant_argument() -> None:
    # One `vagrant up` for all of them keeps the boot parallel.
    assert _target(None) is None
    assert _target(["node1"]) == "node1"
    pattern = _target(["node1", "node-2"])
    assert pattern is not None and pattern.startswith("/") and pattern.endswith("/")
    machines = ["node1", "node-2", "node10", "master"]
    assert [m for m in machines if re.search(pattern[1:-1], m)] == ["node1", "node-2"]


@needs_vagrant
@pytest.mark.integration
def test_validate_accepts_the_test_lab(tmp_path: Path) -> None:
    lab = lab_folder(tmp_path)
    env = {"KUBELAB_TEST_BOX": BOX, "KUBELAB_TEST_PREFIX": "validate-",
           "VAGRANT_HOME": str(tmp_path / "vagrant.d")}  # fmt: skip
    VagrantDriver(lab, tmp_path / "vagrant.log", env=env).validate()
    assert "$ vagrant validate" in (tmp_path / "vagrant.log").read_text()


@needs_vagrant
@pytest.mark.integration
def test_validate_failure_names_command_output_and_log(tmp_path: Path) -> None:
    lab = lab_folder(tmp_path)
    vagrantfile = lab / "Vagrantfile"
    vagrantfile.write_text(vagrantfile.read_text().replace("lv.cpus = 1", "lv.no_such_option = 1"))
    env = {"KUBELAB_TEST_BOX": BOX, "KUBELAB_TEST_PREFIX": "validate-",
           "VAGRANT_HOME": str(tmp_path / "vagrant.d")}  # fmt: skip
    log = tmp_path / "vagrant.log"
    with pytest.raises(KubelabError) as err:
        VagrantDriver(lab, log, env=env).validate()
    assert "`vagrant validate` failed with exit code 1" in err.value.message
    assert "no_such_option" in err.value.message  # the tail of vagrant's own output
    assert str(log) in err.value.hint
    assert "no_such_option" in log.read_text()


@needs_vagrant
@pytest.mark.integration
def test_command_failure_outside_a_lab(tmp_path: Path) -> None:
    log = tmp_path / "vagrant.log"
    driver = VagrantDriver(tmp_path, log, env={"VAGRANT_HOME": str(tmp_path / "vagrant.d")})
    with pytest.raises(KubelabError) as err:
        driver.status()
    assert err.value.message.startswith("`vagrant status` failed with exit code")
    assert "Vagrantfile" in err.value.message  # vagrant's reason, from the log
    assert str(log) in err.value.hint


@pytest.mark.e2e
@pytest.mark.netns
def test_one_vm_up_status_ssh_config_destroy(
    netns_libvirt: NetnsLibvirt,
    offline_box: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The lab folder lives and goes with the harness: pytest runs elsewhere on the
    # machine may prune tmp_path during a boot of a minute or more.
    lab = lab_folder(netns_libvirt.state)
    prefix = f"{netns_libvirt.name}-"
    env = netns_libvirt.env({"KUBELAB_TEST_BOX": BOX, "KUBELAB_TEST_PREFIX": prefix})
    # python-vagrant finds `vagrant` on this process's PATH: the wrapper runs it inside.
    monkeypatch.setenv("PATH", netns_libvirt.host_env()["PATH"])
    driver = VagrantDriver(lab, lab / "vagrant.log", env=env)
    inspector = LibvirtInspector(netns_libvirt.host_uri)
    import_box(driver, offline_box, BOX)
    assert driver.status() == {VM: "not_created"}

    started = time.monotonic()
    driver.up()
    boot = time.monotonic() - started
    assert driver.status() == {VM: "running"}
    assert [(d.name, d.state) for d in inspector.domains(prefix)] == [(f"{prefix}{VM}", "running")]

    ssh_config = driver.ssh_config(VM)
    assert re.search(rf"^Host {VM}$", ssh_config, re.M)
    assert re.search(r"^\s+HostName \d+\.\d+\.\d+\.\d+$", ssh_config, re.M)
    assert re.search(r"^\s+User vagrant$", ssh_config, re.M)
    # Inside the namespace: the box's network setup gave eth1 the lab address. A plain
    # SSH command has no sbin on its PATH on this box, as on CentOS 7: ip by its path.
    look = "hostname; /usr/sbin/ip -4 -o addr show eth1"
    eth1 = netns_libvirt.run(["vagrant", "ssh", VM, "-c", look], env=env, cwd=lab, timeout=120)
    assert eth1.stdout.splitlines()[0] == VM
    assert f"inet {LAB_IP}/24" in eth1.stdout

    started = time.monotonic()
    driver.destroy()
    destroy = time.monotonic() - started
    assert driver.status() == {VM: "not_created"}
    assert inspector.leftovers(prefix, [f"{prefix}lab"], POOL) == []

    # vagrant-libvirt left the box's image in the pool; remove_box finds it by name.
    base_images = inspector.volumes(POOL, box_volume_prefix(BOX))
    assert len(base_images) == 1
    assert remove_box(driver, BOX, inspector, POOL) == base_images
    assert inspector.volumes(POOL) == []
    assert driver.box_list() == []
    print(f"\none VM (1 vCPU, 512 MiB, driver qemu): up {boot:.1f} s, destroy {destroy:.1f} s")
