"""The rendered Vagrantfiles pass the real `vagrant validate` with vagrant-libvirt.

`vagrant validate` needs neither libvirtd nor the box: it loads the Vagrantfile
and checks every machine's settings against the provider's own validation (about
one second). VAGRANT_HOME is a folder of the test, so nothing of the user's
Vagrant state is read or written; the plugin comes from Debian's package (a
system plugin), which a fresh VAGRANT_HOME still sees.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kubelab.plan import load_plan
from kubelab.render import render, write_lab

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


@pytest.fixture(scope="session")  # once per xdist worker; its tests spread over them
def vagrant() -> str:
    path = shutil.which("vagrant")
    if path is None:
        pytest.skip("vagrant is not installed (Debian: apt-get install vagrant vagrant-libvirt)")
    plugins = subprocess.run([path, "plugin", "list"], capture_output=True, text=True, timeout=120)
    if "vagrant-libvirt" not in plugins.stdout:
        pytest.skip("the vagrant-libvirt plugin is not installed (Debian: vagrant-libvirt)")
    return path


def validate(vagrant: str, lab: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [vagrant, "validate"],
        cwd=lab,
        env=_vagrant_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_golden_vagrantfile_validates(vagrant: str, written_lab: Path, tmp_path: Path) -> None:
    # The default lab and the customised one, byte for byte as in the golden files.
    result = validate(vagrant, written_lab, tmp_path / "vagrant-home")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout


@pytest.mark.parametrize("config", VALID, ids=[p.stem for p in VALID])
def test_every_valid_config_renders_a_valid_vagrantfile(
    vagrant: str, config: Path, tmp_path: Path
) -> None:
    lab = tmp_path / "lab"
    plan = load_plan(config, None, repo_root=tmp_path, lab_dir=lab)
    write_lab({"Vagrantfile": render(plan)["Vagrantfile"]}, lab)
    result = validate(vagrant, lab, tmp_path / "vagrant-home")
    assert result.returncode == 0, result.stdout + result.stderr


# Broken on purpose: proves the test above can fail, and shows what validate catches.
BREAKAGES = {
    "unknown-libvirt-option": ("lv.qemu_use_session = false", "lv.qemu_use_sesion = false"),
    "ruby-syntax": ("lv.qemu_use_session = false", "lv.qemu_use_session = false do"),
    "unknown-network-type": (":private_network,", ":privat_network,"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_broken_vagrantfile_fails_validation(
    vagrant: str, written_lab: Path, tmp_path: Path, breakage: str
) -> None:
    old, new = BREAKAGES[breakage]
    vagrantfile = written_lab / "Vagrantfile"
    text = vagrantfile.read_text()
    assert old in text, f"the rendered Vagrantfile no longer contains {old!r}: update BREAKAGES"
    vagrantfile.write_text(text.replace(old, new))
    result = validate(vagrant, written_lab, tmp_path / "vagrant-home")
    assert result.returncode != 0, result.stdout
