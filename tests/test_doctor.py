"""`invoke doctor`'s vagrant checks ask the real vagrant through the backend."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kubelab import doctor
from kubelab.plan import Plan, load_plan

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("vagrant") is None, reason="needs vagrant"),
]


@pytest.fixture
def plan(tmp_path: Path, repo_root: Path) -> Plan:
    return load_plan(None, {}, repo_root=repo_root, lab_dir=tmp_path / "lab")


def test_vagrant_and_its_libvirt_plugin_are_found(
    plan: Plan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAGRANT_HOME", str(tmp_path / "vagrant.d"))
    found = doctor.check_vagrant(plan)
    assert found.status == "ok" and found.detail.startswith("Vagrant 2."), found
    plugin = doctor.check_vagrant_libvirt(plan)
    assert plugin.status == "ok" and plugin.detail.startswith("vagrant-libvirt ("), plugin


def test_a_vagrant_that_cannot_start_fails_the_plugin_check_with_its_reason(
    plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A VAGRANT_HOME that is a file: the real vagrant stops before listing plugins.
    monkeypatch.setenv("VAGRANT_HOME", "/etc/hostname")
    plugin = doctor.check_vagrant_libvirt(plan)
    assert plugin.status == "fail", plugin
    assert "`vagrant plugin list` failed with exit code 1" in plugin.detail, plugin
    assert "File exists" in plugin.detail and "\n" not in plugin.detail, plugin
