"""The rendered Vagrantfiles pass the real `vagrant validate` with vagrant-libvirt.

`vagrant validate` needs neither libvirtd nor the box: it loads the Vagrantfile
and checks every machine's settings against the provider's own validation (about
one second). VAGRANT_HOME is a folder of the test, so nothing of the user's
Vagrant state is read or written; the plugin comes from Debian's package (a
system plugin), which a fresh VAGRANT_HOME still sees. A Vagrantfile text already
validated by this process is not validated again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kubelab.plan import load_plan
from kubelab.render import render, write_lab
from tests.update_golden import GOLDEN_LAB_DIR

VALID = sorted((Path(__file__).parents[1] / "data" / "configs" / "valid").glob("*.yaml"))

pytestmark = pytest.mark.integration


def _vagrant_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAGRANT_")}
    env.update(
        VAGRANT_HOME=str(home),
        # Validate for libvirt even where another provider would be the default.
        VAGRANT_DEFAULT_PROVIDER="libvirt",
        VAGRANT_CHECKPOINT_DISABLE="1",
        VAGRANT_NO_COLOR="1",
    )
    return env


class Vagrant:
    """Real `vagrant validate`, each distinct Vagrantfile text run once per process: the
    Vagrantfile is all it reads, and the valid configs render 15 distinct ones for 27
    configs (most differ only in what the stage scripts do)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._results: dict[str, subprocess.CompletedProcess[str]] = {}  # sha256 -> result

    def validate(self, lab: Path, home: Path) -> subprocess.CompletedProcess[str]:
        digest = hashlib.sha256((lab / "Vagrantfile").read_bytes()).hexdigest()
        if digest not in self._results:
            self._results[digest] = subprocess.run(
                [self.path, "validate"],
                cwd=lab,
                env=_vagrant_env(home),
                capture_output=True,
                text=True,
                timeout=120,
            )
        return self._results[digest]


@pytest.fixture(scope="session")  # once per xdist worker; its tests spread over them
def vagrant() -> Vagrant:
    path = shutil.which("vagrant")
    if path is None:
        pytest.skip("vagrant is not installed (Debian: apt-get install vagrant vagrant-libvirt)")
    plugins = subprocess.run([path, "plugin", "list"], capture_output=True, text=True, timeout=120)
    if "vagrant-libvirt" not in plugins.stdout:
        pytest.skip("the vagrant-libvirt plugin is not installed (Debian: vagrant-libvirt)")
    return Vagrant(path)


def test_golden_vagrantfile_validates(vagrant: Vagrant, written_lab: Path, tmp_path: Path) -> None:
    # The default lab and the customised one, byte for byte as in the golden files.
    result = vagrant.validate(written_lab, tmp_path / "vagrant-home")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout


@pytest.mark.parametrize("config", VALID, ids=[p.stem for p in VALID])
def test_every_valid_config_renders_a_valid_vagrantfile(
    vagrant: Vagrant, config: Path, tmp_path: Path
) -> None:
    # Rendered for the golden labs' folder (as written_lab is), so configs that differ only
    # in their stages render the same Vagrantfile, validated once.
    plan = load_plan(config, None, repo_root=tmp_path, lab_dir=GOLDEN_LAB_DIR)
    lab = tmp_path / "lab"
    write_lab({"Vagrantfile": render(plan)["Vagrantfile"]}, lab)
    result = vagrant.validate(lab, tmp_path / "vagrant-home")
    assert result.returncode == 0, result.stdout + result.stderr


# Broken on purpose: proves the test above can fail, and shows what validate catches.
BREAKAGES = {
    "unknown-libvirt-option": ("lv.qemu_use_session = false", "lv.qemu_use_sesion = false"),
    "ruby-syntax": ("lv.qemu_use_session = false", "lv.qemu_use_session = false do"),
    "unknown-network-type": (":private_network,", ":privat_network,"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_broken_vagrantfile_fails_validation(
    vagrant: Vagrant, written_lab: Path, tmp_path: Path, breakage: str
) -> None:
    old, new = BREAKAGES[breakage]
    vagrantfile = written_lab / "Vagrantfile"
    text = vagrantfile.read_text()
    assert old in text, f"the rendered Vagrantfile no longer contains {old!r}: update BREAKAGES"
    vagrantfile.write_text(text.replace(old, new))
    result = vagrant.validate(written_lab, tmp_path / "vagrant-home")
    assert result.returncode != 0, result.stdout
