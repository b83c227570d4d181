"""Two labs on one host never collide: names, networks, addresses; all derived once."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from kubelab.classroom.hosts import load_hosts
from kubelab.classroom.seating import (
    MANAGEMENT_NET,
    BootFiles,
    class_host,
    free_slot,
    student_config,
    student_plan,
    usable_slots,
)
from kubelab.classroom.state import ClassPaths, Seat, load_seats, prepare, save_seats
from kubelab.config import load_config
from kubelab.errors import ConfigError
from kubelab.render import render

DATA = Path(__file__).resolve().parents[1] / "data"
CONFIGS = [DATA / "classroom" / "class-lab.yaml", DATA / "e2e" / "lab.yaml"]
BOOT = BootFiles(
    "/var/lib/libvirt/kubelab-boot/vmlinuz-0", "/var/lib/libvirt/kubelab-boot/initrd-0"
)


@pytest.fixture
def paths(tmp_path: Path) -> ClassPaths:
    paths = ClassPaths(tmp_path / "class")
    prepare(paths)
    return paths


@pytest.fixture
def host(paths: ClassPaths):  # type: ignore[no-untyped-def]
    specs, base = load_hosts(DATA / "classroom" / "hosts" / "valid" / "two-hosts.yaml")
    return class_host(specs[0], base, paths)


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda p: p.parent.name)
def test_labs_in_every_slot_of_one_host_share_nothing(config_path, paths, host) -> None:  # type: ignore[no-untyped-def]
    base = load_config(config_path)
    plans = [
        student_plan(student_config(base, f"S{slot:03d}", host, slot, BOOT), paths)
        for slot in usable_slots(base)
    ]
    assert len(plans) > 40
    nets = [ipaddress.IPv4Network(p.config.network.cidr) for p in plans]
    for i, a in enumerate(nets):
        assert not a.overlaps(MANAGEMENT_NET)
        assert not any(a.overlaps(b) for b in nets[i + 1 :])
    assert len({p.prefix for p in plans}) == len(plans)
    assert len({p.network_name for p in plans}) == len(plans)
    ips = [n.ip for p in plans for n in p.nodes]
    assert len(set(ips)) == len(ips)
    # The manual's last octet stays: .10 is the master in every lab.
    base_octets = sorted(int(n.ip.rsplit(".", 1)[1]) for n in base.nodes)
    for plan in plans:
        assert sorted(int(n.ip.rsplit(".", 1)[1]) for n in plan.nodes) == base_octets


def test_a_student_lab_points_everything_at_its_host(paths, host) -> None:  # type: ignore[no-untyped-def]
    config = student_config(load_config(CONFIGS[0]), "S042", host, 3, BOOT)
    vagrantfile = render(student_plan(config, paths))["Vagrantfile"]
    assert f"lv.uri = '{host.uri}'" in vagrantfile
    assert "lv.kernel = '/var/lib/libvirt/kubelab-boot/vmlinuz-0'" in vagrantfile
    assert "lv.proxy_command = '" + str(paths.ssh_command.resolve()) in vagrantfile
    assert "/var/log/libvirt/qemu/kubelab-cls-s042-" in vagrantfile  # a path on the host
    assert str(paths.root) not in vagrantfile.split("lv.serial", 1)[1]
    assert "master-s042" in vagrantfile


def test_a_student_id_that_cannot_name_a_lab_is_a_config_error(paths, host) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as caught:
        student_config(load_config(CONFIGS[0]), "bad id!", host, 0, BOOT)
    assert "roster bad id!" in caught.value.message


def test_free_slot_skips_taken_ones_and_runs_out() -> None:
    base = load_config(CONFIGS[0])
    slots = usable_slots(base)
    assert free_slot(base, set()) == slots[0]
    assert free_slot(base, {slots[0], slots[1]}) == slots[2]
    assert free_slot(base, set(slots)) is None


def test_seats_survive_a_round_trip_and_a_broken_file_is_named(paths) -> None:  # type: ignore[no-untyped-def]
    seats = {"S001": Seat("a", 0), "S002": Seat("b", 3)}
    save_seats(paths, seats)
    assert load_seats(paths) == seats
    paths.state_file.write_text("{not json")
    with pytest.raises(Exception, match="not a class state"):
        load_seats(paths)
