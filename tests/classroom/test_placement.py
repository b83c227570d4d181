"""Placement of whole labs on hosts: a pure function, many cases."""

from __future__ import annotations

import itertools

import pytest

from kubelab.classroom.placement import (
    HostCapacity,
    LabDemand,
    PlacementError,
    place,
)

# The lab the issue sizes a class by: three VMs of 2 GiB and 2, 1, 1 vCPUs.
FULL_LAB = (6144, 4)
SMOKE_LAB = (512, 1)


def labs(n: int, size: tuple[int, int] = FULL_LAB, prefix: str = "s") -> list[LabDemand]:
    return [LabDemand(f"{prefix}{i:02d}", *size) for i in range(1, n + 1)]


def host(name: str, memory: int, vcpus: int, **kw: object) -> HostCapacity:
    return HostCapacity(name, memory, vcpus, **kw)  # type: ignore[arg-type]


def check_invariants(placement, demands, hosts) -> None:  # type: ignore[no-untyped-def]
    """What every placement must hold: each lab on one reachable host, reserve kept."""
    assert sorted(placement.by_student) == sorted(d.student for d in demands)
    by_name = {h.name: h for h in hosts}
    for load in placement.hosts:
        h = by_name[load.host]
        assert load.memory_mib <= h.usable_memory_mib
        assert load.vcpus <= h.usable_vcpus
        assert load.memory_left_mib >= 0 and load.vcpus_left >= 0
        if load.students:
            assert h.reachable
    assert sum(len(load.students) for load in placement.hosts) == len(demands)


def test_a_class_spreads_over_equal_hosts() -> None:
    hosts = [
        host("a", 64_000, 32, reserve_memory_mib=0, reserve_vcpus=0),
        host("b", 64_000, 32, reserve_memory_mib=0, reserve_vcpus=0),
    ]
    demands = labs(6)
    placement = place(demands, hosts)
    check_invariants(placement, demands, hosts)
    assert [len(load.students) for load in placement.hosts] == [3, 3]


def test_uneven_hosts_take_labs_by_what_they_have_left() -> None:
    hosts = [host("big", 40_000, 64), host("small", 20_000, 16)]
    demands = labs(8)
    placement = place(demands, hosts)
    check_invariants(placement, demands, hosts)
    big, small = placement.hosts
    # The big host takes labs until it has less left than the small one, then they share.
    assert 0 < len(small.students) < len(big.students)
    assert abs(big.memory_left_mib - small.memory_left_mib) <= FULL_LAB[0]


def test_an_idle_big_host_takes_everything_before_a_small_one() -> None:
    hosts = [host("big", 128_000, 64), host("small", 20_000, 16)]
    placement = place(labs(3), hosts)
    assert placement.students_on("small") == []


def test_the_reserve_is_kept() -> None:
    # 6144 MiB fits in 8192, but not once the host keeps 4096 for itself.
    hosts = [host("a", 8192, 8, reserve_memory_mib=4096), host("b", 8192, 8, reserve_vcpus=5)]
    with pytest.raises(PlacementError) as caught:
        place(labs(1), hosts)
    assert caught.value.unplaced == ("s01",)
    assert "beyond their reserve" in caught.value.message


def test_a_reserve_larger_than_the_host_leaves_nothing_not_less() -> None:
    assert host("a", 1000, 2, reserve_memory_mib=4000, reserve_vcpus=4).usable_memory_mib == 0
    assert host("a", 1000, 2, reserve_memory_mib=4000, reserve_vcpus=4).usable_vcpus == 0


def test_full_hosts_refuse_the_class_and_name_who_is_left_out() -> None:
    hosts = [
        host("a", 14_000, 16, reserve_memory_mib=0),
        host("b", 14_000, 16, reserve_memory_mib=0),
    ]
    with pytest.raises(PlacementError) as caught:
        place(labs(5), hosts)  # 2 labs fit on each host, the fifth nowhere
    assert len(caught.value.unplaced) == 1
    assert caught.value.unplaced[0] in caught.value.message


def test_vcpus_alone_can_refuse() -> None:
    hosts = [host("a", 1_000_000, 9, reserve_vcpus=1)]  # 8 usable: two labs of 4
    placement = place(labs(2), hosts)
    assert placement.hosts[0].vcpus_left == 0
    with pytest.raises(PlacementError):
        place(labs(3), hosts)


def test_a_vanished_host_gets_no_lab() -> None:
    hosts = [host("a", 64_000, 32), host("gone", 640_000, 320, reachable=False)]
    demands = labs(4)
    placement = place(demands, hosts)
    check_invariants(placement, demands, hosts)
    assert placement.students_on("gone") == []


def test_a_vanished_host_is_named_when_the_class_then_does_not_fit() -> None:
    hosts = [host("a", 10_000, 32), host("gone", 640_000, 320, reachable=False)]
    with pytest.raises(PlacementError) as caught:
        place(labs(3), hosts)
    assert "unreachable: gone" in caught.value.message


def test_no_hosts_at_all_refuses_everyone() -> None:
    with pytest.raises(PlacementError) as caught:
        place(labs(2), [])
    assert caught.value.unplaced == ("s01", "s02")


def test_a_lab_larger_than_any_host_is_never_split() -> None:
    # Together the hosts have room; no single one has.
    hosts = [
        host("a", 5000, 4, reserve_memory_mib=0, reserve_vcpus=0),
        host("b", 5000, 4, reserve_memory_mib=0, reserve_vcpus=0),
    ]
    with pytest.raises(PlacementError):
        place(labs(1), hosts)


def test_students_already_placed_stay_where_they_are() -> None:
    hosts = [host("a", 64_000, 32), host("b", 64_000, 32)]
    fixed = {"s01": "b", "s02": "b"}
    placement = place(labs(4), hosts, fixed=fixed)
    assert placement.by_student["s01"] == "b" and placement.by_student["s02"] == "b"
    # The new labs fill the host with more room left: a.
    assert set(placement.students_on("a")) == {"s03", "s04"}


def test_students_on_a_host_that_is_down_stay_there_and_use_its_room() -> None:
    hosts = [host("a", 64_000, 32), host("b", 64_000, 32, reachable=False)]
    placement = place(labs(2), hosts, fixed={"s01": "b"})
    assert placement.by_student == {"s01": "b", "s02": "a"}


def test_a_student_on_a_host_no_longer_listed_is_an_error() -> None:
    with pytest.raises(PlacementError) as caught:
        place(labs(1), [host("a", 64_000, 32)], fixed={"s01": "old"})
    assert "'old'" in caught.value.message


def test_mixed_sizes_go_largest_first_so_big_labs_still_fit() -> None:
    # Smallest first would put the small labs on both hosts and leave no room of 8000.
    hosts = [host("a", 9000, 16, reserve_memory_mib=0), host("b", 9000, 16, reserve_memory_mib=0)]
    demands = [
        LabDemand("small1", 1000, 1),
        LabDemand("small2", 1000, 1),
        LabDemand("big1", 8000, 2),
        LabDemand("big2", 8000, 2),
    ]
    placement = place(demands, hosts)
    check_invariants(placement, demands, hosts)
    assert placement.by_student["big1"] != placement.by_student["big2"]


def test_the_same_input_gives_the_same_plan_in_roster_order() -> None:
    hosts = [host("a", 64_000, 32), host("b", 50_000, 32), host("c", 64_000, 32)]
    demands = labs(9, SMOKE_LAB)
    first, second = place(demands, hosts), place(list(demands), list(hosts))
    assert first == second
    assert list(first.by_student) == [d.student for d in demands]


@pytest.mark.parametrize(
    ("n_hosts", "memory", "n_labs"),
    list(itertools.product([1, 2, 3, 5], [7000, 20_000, 64_000], [1, 4, 13, 40])),
)
def test_fits_exactly_when_a_first_fit_count_says_so(
    n_hosts: int, memory: int, n_labs: int
) -> None:
    """Equal labs on equal hosts: fit iff each host takes floor(usable / lab) labs."""
    hosts = [host(f"h{i}", memory, 64, reserve_memory_mib=1024) for i in range(n_hosts)]
    per_host = (memory - 1024) // FULL_LAB[0]
    demands = labs(n_labs)
    if per_host * n_hosts >= n_labs:
        placement = place(demands, hosts)
        check_invariants(placement, demands, hosts)
        counts = sorted(len(load.students) for load in placement.hosts)
        assert counts[-1] - counts[0] <= 1  # spread evenly
    else:
        with pytest.raises(PlacementError) as caught:
            place(demands, hosts)
        assert len(caught.value.unplaced) == n_labs - per_host * n_hosts


def test_duplicate_names_are_a_programming_error() -> None:
    with pytest.raises(ValueError):
        place(labs(1), [host("a", 1, 1), host("a", 1, 1)])
    with pytest.raises(ValueError):
        place([LabDemand("s", 1, 1), LabDemand("s", 1, 1)], [host("a", 10, 10)])
