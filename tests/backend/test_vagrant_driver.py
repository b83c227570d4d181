"""VagrantDriver with the real vagrant: validate, and its failures as one clear line.

The driver on real VMs (status and ssh-config through python-vagrant, in this process)
runs on the e2e suite's lab (tests/e2e/test_lab_lifecycle.py), and the box's removal
from Vagrant and the pool at the end of that suite (tests/e2e/test_box_remove.py), so
no VM is booted here for the same proof.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from kubelab.backend.vagrant_driver import VagrantDriver, _target
from kubelab.errors import KubelabError

DATA = Path(__file__).parent.parent / "data" / "backend"
BOX = "kubelab-test/debian12"
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
