"""`invoke box.remove` on the box the whole e2e session used: Vagrant forgets it, and
the base image vagrant-libvirt copied into the pool goes with it.

Runs last (tests/e2e/conftest.py orders the modules): every lab of the session is
destroyed by then, so the pool must end empty. libvirt-python counts the volumes at
the harness's socket.

"""

from __future__ import annotations

import pytest

from kubelab.boxes import box_volume_prefix
from tests.e2e.lab import BOX_NAME, FIGURES, E2ELab

pytestmark = [pytest.mark.e2e, pytest.mark.netns]


def test_box_remove_takes_the_box_and_its_image_from_the_pool(e2e_lab: E2ELab) -> None:
    before = e2e_lab.libvirt_names()["volumes"]
    images = [v for v in before if v.startswith(box_volume_prefix(BOX_NAME))]
    if not images:  # run alone: no lab has booted the box, so nothing copied its image
        pytest.skip("no lab of this session booted the box")
    # Every lab is gone: only boxes' images are left (the lifecycle's broken box's too).
    assert [v for v in before if "_vagrant_box_image_" not in v] == []

    removed = e2e_lab.invoke("box.remove", "--name", BOX_NAME)
    assert removed.rc == 0, removed
    FIGURES["invoke box.remove (wall)"] = f"{removed.seconds:.0f} s"
    assert f"removed box {BOX_NAME} and " in removed.output
    assert all(image in removed.output for image in images), removed
    assert sorted(e2e_lab.libvirt_names()["volumes"]) == sorted(set(before) - set(images))
    listed = e2e_lab.invoke("box.list")
    assert listed.rc == 0, listed
    assert BOX_NAME not in listed.output
