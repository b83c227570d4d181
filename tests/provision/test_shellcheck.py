"""shellcheck finds nothing in any rendered stage script, for either guest family."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from harness import render_lab

from kubelab.config import catalog

pytestmark = pytest.mark.integration

LABS: dict[str, dict[str, Any]] = {
    "centos7-default": {},
    "centos7-everything": {
        "student_id": "2021001",
        "kubernetes.runtime": "docker",
        "kubernetes.proxy_mode": "ipvs",
        "kubernetes.firewall": "open-ports",
        "kubernetes.version": "1.32.9",
        "mirror.profile": "aliyun",
    },
    "debian12-default": {"box.guest": "debian12"},
    "debian12-everything": {
        "box.guest": "debian12",
        "student_id": "2021001",
        "kubernetes.runtime": "docker",
        "kubernetes.proxy_mode": "ipvs",
        "kubernetes.firewall": "open-ports",
        "mirror.profile": "custom",
    },
    "ubuntu2204-default": {"box.guest": "ubuntu2204"},
    # The hard way's build (pki, etcd, flannel, the control plane and nodes from binaries).
    "centos7-hardway": {
        "provision.stages": catalog()["builds"]["hardway"],
        "kubernetes.runtime": "docker",
        "mirror.profile": "aliyun",
    },
    "debian12-hardway": {
        "box.guest": "debian12",
        "provision.stages": catalog()["builds"]["hardway"],
    },
}


@pytest.mark.parametrize("lab", sorted(LABS))
@pytest.mark.parametrize("local_repo", [False, True], ids=["remote", "local-repo"])
def test_shellcheck_finds_nothing(lab: str, local_repo: bool, tmp_path: Path) -> None:
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed (apt-get install -y shellcheck)")
    overrides = dict(LABS[lab])
    if local_repo:
        overrides["mirror.local_repo"] = str(tmp_path)
    _, files = render_lab(overrides)
    scripts = []
    for rel, text in files.items():
        if rel.endswith(".sh"):
            path = tmp_path / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            scripts.append(str(path))
    assert len(scripts) >= 12
    result = subprocess.run(
        ["shellcheck", "--shell=bash", "--severity=style", *scripts], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_shellcheck_finds_nothing_in_the_test_stub() -> None:
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed (apt-get install -y shellcheck)")
    stub = Path(__file__).resolve().parent / "stubs" / "kubelab-stub"
    result = subprocess.run(
        ["shellcheck", "--severity=style", str(stub)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
