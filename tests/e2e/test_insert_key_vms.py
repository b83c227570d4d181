"""`ssh.insert_key: true` on a real VM: the lab's own key replaces Vagrant's insecure one.

Runs after the main lab is destroyed (tests/e2e/conftest.py orders the modules): one
VM of a second lab (tests/data/e2e/insert-key.yaml) comes up through `invoke up`,
kubelab logs in with the key Vagrant made for it, Vagrant's public insecure key is
refused, and `invoke destroy --yes` leaves nothing behind.
"""

from __future__ import annotations

import pytest

from kubelab.transport import targets_from_ssh_config
from tests.e2e.lab import BOX_NAME, FIGURES, INVOKE, E2ELab

pytestmark = [pytest.mark.e2e, pytest.mark.netns]


@pytest.mark.timeout(1800)
def test_a_lab_with_its_own_key_refuses_the_insecure_one(e2e_lab: E2ELab) -> None:
    lab_dir = e2e_lab.netns.state / "lab-insert-key"
    config = e2e_lab.config("insert-key")
    where = ["--config", str(config), "--lab-dir", str(lab_dir)]
    up = e2e_lab.command([str(INVOKE), "up", "--box", BOX_NAME, *where])
    try:
        assert up.rc == 0, up
        FIGURES["invoke up, 1 VM with ssh.insert_key (wall)"] = f"{up.seconds:.0f} s"
        shown = e2e_lab.netns.run(
            ["vagrant", "ssh-config", "master"], env=e2e_lab.env(), cwd=lab_dir, timeout=300
        ).stdout
        target = targets_from_ssh_config(shown)["master"]
        assert target.key_files == (lab_dir / ".vagrant/machines/master/libvirt/private_key",)
        insecure = e2e_lab.netns.vagrant_home / "insecure_private_key"
        assert insecure.is_file()
        with_insecure = shown.replace(str(target.key_file), str(insecure))
        assert e2e_lab.login(shown) == "in"
        assert "login refused" in e2e_lab.login(with_insecure)
    finally:
        gone = e2e_lab.command([str(INVOKE), "destroy", "--yes", *where])
        assert gone.rc == 0, gone
