"""`invoke destroy --yes` on the real lab: nothing of it is left in libvirt.

Runs last (tests/e2e/conftest.py orders the modules). libvirt-python itself, at
the harness's socket, counts what is left: the lab's domains, its network and the
volumes of its VMs. The box's own image stays in the pool (it belongs to the box,
not the lab; `invoke box remove` deletes it).
"""

from __future__ import annotations

import pytest

from tests.e2e.lab import FIGURES, E2ELab

pytestmark = [pytest.mark.e2e, pytest.mark.netns]


def test_destroy_leaves_no_domain_network_or_volume(e2e_lab: E2ELab) -> None:
    config = e2e_lab.config()
    plan = e2e_lab.plan(config)
    if not (e2e_lab.lab_dir / "Vagrantfile").is_file():  # run alone: make a lab to destroy
        up = e2e_lab.up(config)
        assert up.rc == 0, up
    assert e2e_lab.domains(plan), "no lab to destroy"

    destroyed = e2e_lab.invoke("destroy", "--yes", config=config)
    assert destroyed.rc == 0, destroyed
    assert f"lab {plan.config.name} destroyed" in destroyed.output
    FIGURES["invoke destroy --yes (wall)"] = f"{destroyed.seconds:.0f} s"

    left = e2e_lab.libvirt_names()
    domains, networks, volumes = left["domains"], left["networks"], left["volumes"]
    assert [d for d in domains if d.startswith(plan.prefix)] == []
    assert plan.network_name not in networks
    assert [v for v in volumes if v.startswith(plan.prefix)] == []
    # Nothing else was ever made in this libvirtd but the box's image.
    assert domains == []
    assert [v for v in volumes if "_vagrant_box_image_" not in v] == []
