"""The plan: what a validated config means (names, order, stages, mirrors).

Expected values come from the config files and provision/catalog.yaml /
mirrors.yaml, never restated here, so a catalog change does not need a test edit.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import pytest

from kubelab import defaults
from kubelab.config import catalog, hostname_for, load_config, mirror_profiles, validate_config
from kubelab.errors import KubelabError
from kubelab.plan import (
    SPEC_FORMAT,
    LabSpec,
    default_lab_dir,
    guest_path,
    lab_prefix,
    load_plan,
    make_plan,
    resolve_mirror,
    resolve_stages,
)

VALID = Path(__file__).parent / "data" / "configs" / "valid"
LAB_DIR = Path("/srv/kubelab/lab")
REPO_ROOT = Path(__file__).resolve().parents[1]


def _plan(name: str, lab_dir: Path = LAB_DIR):
    return make_plan(load_config(VALID / name), lab_dir)


@pytest.mark.parametrize("path", sorted(VALID.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_valid_config_plans(path: Path) -> None:
    config = load_config(path)
    plan = make_plan(config, LAB_DIR)
    # The master first (the plan orders the nodes; the config may list it anywhere).
    master = next(n for n in config.nodes if n.role == "master")
    assert [n.name for n in plan.nodes][0] == master.name
    assert sorted(n.name for n in plan.nodes) == sorted(n.name for n in config.nodes)
    # Stages not given: the default build; an empty list: none at all.
    assert bool(plan.stages) == (config.provision.stages != [])
    for node in plan.nodes:
        assert node.hostname == hostname_for(node.name, config.student_id)
        assert ipaddress.IPv4Address(node.ip) in ipaddress.IPv4Network(plan.network["cidr"])


def test_master_comes_first_whatever_the_file_order() -> None:
    plan = _plan("master-listed-last.yaml")
    assert [n.name for n in plan.nodes] == ["master", "node1", "node2"]
    assert plan.master.name == "master"
    assert [n.name for n in plan.workers] == ["node1", "node2"]


def test_hostnames_carry_the_student_id_in_lowercase() -> None:
    plan = _plan("student-id.yaml")
    assert [n.hostname for n in plan.nodes] == [
        "master-s2024-001",
        "node1-s2024-001",
        "node2-s2024-001",
    ]
    # The Vagrant machine names stay short: `invoke ssh node1` keeps working.
    assert [n.name for n in plan.nodes] == ["master", "node1", "node2"]


def test_node_lookup_by_name_or_hostname() -> None:
    plan = _plan("student-id.yaml")
    assert plan.node("node1") is plan.node("node1-s2024-001")
    with pytest.raises(KubelabError) as info:
        plan.node("node9")
    assert info.value.code == 2
    assert "master, node1, node2" in info.value.hint


def test_prefix_is_readable_and_unique_per_lab_folder() -> None:
    config = load_config(VALID / "student-id.yaml")
    a = make_plan(config, Path("/home/ann/kubelab/.lab/kubelab-s2024-001"))
    b = make_plan(config, Path("/home/bob/kubelab/.lab/kubelab-s2024-001"))
    assert a.prefix != b.prefix
    assert re.fullmatch(r"kubelab-kubelab-s2024-001-[0-9a-f]{6}-", a.prefix)
    # Deterministic: the same folder always gives the same prefix.
    assert make_plan(config, Path("/home/ann/kubelab/.lab/kubelab-s2024-001")).prefix == a.prefix
    assert a.network_name == f"{a.prefix}net"


def test_prefix_differs_between_students_in_one_folder() -> None:
    one = validate_config({"student_id": "s01"})
    two = validate_config({"student_id": "s02"})
    assert lab_prefix(one, LAB_DIR) != lab_prefix(two, LAB_DIR)


def test_default_lab_dir_separates_students(tmp_path: Path) -> None:
    assert default_lab_dir(tmp_path, validate_config({})) == tmp_path / ".lab" / "kubelab"
    config = validate_config({"name": "evening", "student_id": "S07"})
    assert default_lab_dir(tmp_path, config) == tmp_path / ".lab" / "evening-s07"


def test_load_plan_resolves_the_lab_folder(tmp_path: Path) -> None:
    plan = load_plan(VALID / "student-id.yaml", None, repo_root=tmp_path)
    assert plan.lab_dir == (tmp_path / ".lab" / "kubelab-s2024-001").resolve()
    assert plan.lab_dir.is_absolute()
    assert plan.log_dir == plan.lab_dir / "logs"
    # An explicit folder (--out / --lab-dir) wins, made absolute.
    plan = load_plan(VALID / "student-id.yaml", None, repo_root=tmp_path, lab_dir=Path("x"))
    assert plan.lab_dir == Path("x").resolve()


def test_default_build_is_every_non_optional_stage_in_catalog_order() -> None:
    plan = make_plan(validate_config({}), LAB_DIR)
    expected = [s["name"] for s in catalog()["stages"] if not s.get("optional")]
    assert [s.name for s in plan.stages] == expected


def test_an_empty_stage_list_plans_no_stage() -> None:
    plan = _plan("no-stages.yaml")
    assert plan.stages == ()
    assert all(plan.stages_for(node) == [] for node in plan.nodes)


def test_chosen_stages_follow_catalog_order_once_each() -> None:
    order = [s["name"] for s in catalog()["stages"]]
    picked = [order[-1], order[0], order[-1]]
    assert [s.name for s in resolve_stages(picked)] == [order[0], order[-1]]


def test_every_catalog_stage_has_a_template() -> None:
    templates = REPO_ROOT / "provision"
    missing = [
        s.template
        for s in resolve_stages([s["name"] for s in catalog()["stages"]])
        if not (templates / s.template).is_file()
    ]
    assert missing == []


def test_stages_run_where_the_catalog_says() -> None:
    plan = make_plan(validate_config({}), LAB_DIR)
    by_name = {s["name"]: s for s in catalog()["stages"]}
    for node in plan.nodes:
        for stage in plan.stages_for(node):
            runs_on = by_name[stage.name]["runs_on"]
            assert runs_on == "all" or (runs_on == "master") == node.is_master
    master_stages = {s.name for s in plan.stages_for(plan.master)}
    worker_stages = {s.name for s in plan.stages_for(plan.workers[0])}
    assert master_stages | worker_stages == {s.name for s in plan.stages}


def test_stage_fields_come_from_the_catalog() -> None:
    entries = {s["name"]: s for s in catalog()["stages"]}
    for stage in resolve_stages(list(entries)):
        entry = entries[stage.name]
        assert stage.title == entry["title"]
        assert stage.deadline == entry["deadline"]
        assert stage.after_nodes == entry.get("after_nodes", False)
        assert stage.needs_join_command == entry.get("needs_join_command", False)
        assert [vars(f) for f in stage.fetches] == [
            {**f, "path": guest_path(f["path"])} for f in entry.get("fetches", [])
        ]
        assert [vars(r) for r in stage.receives] == [
            {**r, "from_master": guest_path(r["from_master"])} for r in entry.get("receives", [])
        ]
        assert stage.leaves == guest_path(entry.get("leaves", ""))
        assert "{" not in stage.leaves.replace("{hostname}", "")  # every name filled in


def test_a_catalog_path_takes_the_guest_paths_of_the_defaults() -> None:
    assert guest_path("{admin_kubeconfig}") == defaults.GUEST_PATHS["admin_kubeconfig"]
    assert guest_path("{pki_dir}/bundles/{hostname}.tar") == (
        defaults.GUEST_PATHS["pki_dir"] + "/bundles/{hostname}.tar"
    )


def test_what_a_stage_receives_some_stage_leaves_on_the_master() -> None:
    stages = resolve_stages([s["name"] for s in catalog()["stages"]])
    left = {s.leaves for s in stages if s.leaves and s.runs_on == "master"}
    for stage in stages:
        for received in stage.receives:
            assert received.from_master in left, (stage.name, received.from_master)


@pytest.mark.parametrize(
    ("cidr", "first"), [("10.96.0.0/12", "10.96.0.1"), ("172.20.128.0/17", "172.20.128.1")]
)
def test_the_api_servers_service_ip_is_the_service_cidrs_first_host(cidr: str, first: str) -> None:
    plan = make_plan(validate_config({"kubernetes": {"service_cidr": cidr}}), LAB_DIR)
    assert plan.kubernetes["service_ip"] == first


@pytest.mark.parametrize("version", sorted(catalog()["kubernetes"]))
def test_kubernetes_entry_matches_the_version(version: str) -> None:
    plan = make_plan(validate_config({"kubernetes": {"version": version}}), LAB_DIR)
    entry = catalog()["kubernetes"][version]
    assert plan.kubernetes["version"] == version
    assert version.startswith(entry["minor"] + ".")
    assert plan.kubernetes["minor"] == entry["minor"]
    assert plan.mirror["kubernetes_rpm"] == mirror_profiles()["official"]["kubernetes_rpm"].replace(
        "{minor}", entry["minor"]
    )


def test_catalog_default_version_is_listed() -> None:
    assert catalog()["default_kubernetes"] in catalog()["kubernetes"]


def test_plan_carries_runtime_cni_and_guest_entries() -> None:
    plan = _plan("custom.yaml")
    cat = catalog()
    assert plan.runtime == {"name": "docker", **cat["runtimes"]["docker"]}
    assert plan.cni == {"name": "flannel", **cat["cnis"]["flannel"]}
    assert plan.guest == {"name": "debian12", **cat["guests"]["debian12"]}
    assert plan.kubernetes["pod_cidr"] == "172.20.0.0/16"
    assert plan.kubernetes["service_cidr"] == "172.21.0.0/16"
    assert plan.kubernetes["proxy_mode"] == "ipvs"


def test_network_facts_for_a_16() -> None:
    plan = _plan("lab-net-10-10.yaml")
    assert plan.network == {
        "cidr": "10.10.0.0/16",
        "netmask": "255.255.0.0",
        "host_ip": "10.10.0.1",
    }


@pytest.mark.parametrize("profile", sorted(mirror_profiles()))
def test_every_profile_has_every_key_and_no_placeholder_left(profile: str) -> None:
    minor = catalog()["kubernetes"][catalog()["default_kubernetes"]]["minor"]
    config = validate_config({"mirror": {"profile": profile}})
    mirror = resolve_mirror(config, minor)
    assert set(mirror) == set(mirror_profiles()["official"]) | {"profile"}
    assert mirror["profile"] == profile
    assert not [v for v in mirror.values() if "{" in v]


def test_profiles_name_only_known_keys() -> None:
    known = set(mirror_profiles()["official"])
    for name, profile in mirror_profiles().items():
        assert set(profile or {}) <= known, name


def test_aliyun_switches_the_image_registry() -> None:
    plan = _plan("aliyun.yaml")
    assert plan.mirror["image_registry"] == mirror_profiles()["aliyun"]["image_registry"]
    assert plan.mirror["image_registry"] != mirror_profiles()["official"]["image_registry"]


def test_custom_mirror_overrides_some_keys_and_falls_back_for_the_rest() -> None:
    config = load_config(VALID / "mirror-custom.yaml")
    plan = make_plan(config, LAB_DIR)
    minor = plan.kubernetes["minor"]
    official = mirror_profiles()["official"]
    for key, value in plan.mirror.items():
        if key == "profile":
            assert value == "custom"
        elif key in config.mirror.custom:
            assert value == config.mirror.custom[key].replace("{minor}", minor)
        else:
            assert value == official[key].replace("{minor}", minor)
    assert set(config.mirror.custom) < set(official)  # the file overrides some keys, not all


# --- the LabSpec: every derived fact once, round-tripping through meta.json ------------


@pytest.mark.parametrize("path", sorted(VALID.glob("*.yaml")), ids=lambda p: p.stem)
def test_the_spec_round_trips_through_json(path: Path) -> None:
    spec = make_plan(load_config(path), LAB_DIR).spec
    assert LabSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_the_spec_keeps_node_identities_apart() -> None:
    plan = _plan("student-id.yaml")
    config = plan.config
    for node in plan.spec.nodes:
        assert node.name in {n.name for n in config.nodes}  # Vagrant's machine name
        assert node.hostname == hostname_for(node.name, config.student_id)
        assert node.k8s_name == node.hostname  # what kubelet registers (kubeadm's default)
        assert node.hostname != node.name


def test_the_spec_derives_endpoint_version_tag_and_images_from_the_catalog() -> None:
    plan = _plan("aliyun.yaml")
    spec, k8s = plan.spec, plan.kubernetes
    assert spec.api_endpoint == f"{plan.master.ip}:{spec.api_port}"
    assert spec.version_tag == "v" + k8s["version"] and spec.kubernetes_version == k8s["version"]
    registry = plan.mirror["image_registry"]
    assert spec.pause_image == f"{registry}/pause:{k8s['pause']}"
    control_plane = {n: i for n, i in spec.component_images.items() if n != "coredns"}
    assert set(control_plane.values()) == {
        f"{registry}/{name}:{spec.version_tag}" for name in control_plane
    }
    # CoreDNS at kubeadm's version for the minor, at the top of the mirror's registry.
    assert spec.component_images["coredns"] == f"{registry}/coredns:{k8s['coredns']}"
    assert spec.nginx_image == plan.mirror["nginx_image"]
    assert spec.kubeadm_api_version.endswith("/" + k8s["kubeadm_api"])


def test_coredns_sits_under_coredns_in_the_official_registry() -> None:
    spec = _plan("empty.yaml").spec
    assert spec.image_registry == "registry.k8s.io"
    assert spec.component_images["coredns"] == "registry.k8s.io/coredns/coredns:v1.11.1"
    assert _plan("empty.yaml").kubernetes["dns_service_ip"] == "10.96.0.10"


def test_the_spec_lists_each_nodes_scripts_in_stage_order() -> None:
    plan = _plan("empty.yaml")
    for node in plan.nodes:
        names = [s.name for s in plan.stages_for(node)]
        scripts = plan.spec.scripts[node.name]
        assert [Path(p).stem.split("-", 1)[1] for p in scripts] == names
        assert all(p.startswith(f"scripts/{node.name}/") for p in scripts)
    assert plan.spec.stages == tuple(s.name for s in plan.stages)


@pytest.mark.parametrize(("name", "hardway"), [("hardway.yaml", True), ("empty.yaml", False)])
def test_the_spec_says_whether_the_lab_is_built_the_hard_way(name: str, hardway: bool) -> None:
    assert _plan(name).spec.hardway is hardway


def test_the_spec_derives_every_etcd_url_from_the_addresses_and_ports() -> None:
    spec = _plan("hardway.yaml").spec
    assert (spec.etcd_client_port, spec.etcd_peer_port) == (
        defaults.ETCD_CLIENT_PORT,
        defaults.ETCD_PEER_PORT,
    )
    clients = [spec.etcd_client_url(n) for n in spec.nodes]
    assert clients == [f"https://{n.ip}:{spec.etcd_client_port}" for n in spec.nodes]
    assert spec.etcd_endpoints.split(",") == clients
    members = dict(m.split("=", 1) for m in spec.etcd_initial_cluster.split(","))
    assert members == {n.hostname: spec.etcd_peer_url(n) for n in spec.nodes}
    assert all(spec.etcd_peer_url(n).endswith(f":{spec.etcd_peer_port}") for n in spec.nodes)
    # The firewall opens the same two ports (defaults.FIREWALL_PORTS).
    assert f"{spec.etcd_client_port}-{spec.etcd_peer_port}/tcp" in defaults.FIREWALL_PORTS["master"]


def test_from_dict_reads_a_spec_written_before_the_etcd_ports_were_kept() -> None:
    spec = _plan("hardway.yaml").spec
    data = spec.to_dict()
    del data["etcd_client_port"], data["etcd_peer_port"]
    assert LabSpec.from_dict(data) == spec


def test_the_spec_records_what_each_stage_moves_between_host_and_vms() -> None:
    plan = _plan("hardway.yaml")
    assert [s.name for s in plan.spec.stage_files] == [s.name for s in plan.stages]
    for files, stage in zip(plan.spec.stage_files, plan.stages, strict=True):
        assert (files.fetches, files.receives, files.leaves) == (
            stage.fetches,
            stage.receives,
            stage.leaves,
        )
    assert any(f.receives for f in plan.spec.stage_files)
    assert LabSpec.from_dict(plan.spec.to_dict()) == plan.spec


def test_the_spec_carries_the_component_ports_and_guest_paths_of_the_defaults() -> None:
    spec = _plan("hardway.yaml").spec
    assert spec.kubelet_port == defaults.KUBELET_PORT
    assert spec.health_ports == defaults.HEALTH_PORTS
    assert spec.guest_paths == defaults.GUEST_PATHS
    assert spec.health_ports["kube-apiserver"] == spec.api_port


def test_from_dict_fills_a_path_or_port_the_spec_lacks_from_the_defaults() -> None:
    data = _plan("hardway.yaml").spec.to_dict()
    data["guest_paths"] = {"pki_dir": "/srv/pki"}
    data["health_ports"] = {"kubelet": 20248}
    read = LabSpec.from_dict(data)
    assert read.guest_paths == {**defaults.GUEST_PATHS, "pki_dir": "/srv/pki"}
    assert read.health_ports == {**defaults.HEALTH_PORTS, "kubelet": 20248}


def test_from_dict_reads_a_format_1_spec_with_the_constants_it_was_built_with() -> None:
    spec = _plan("hardway.yaml").spec
    data = spec.to_dict()
    for added in ("kubelet_port", "health_ports", "guest_paths", "stage_files"):
        del data[added]
    data["format"] = 1
    old = LabSpec.from_dict(data)
    assert old.health_ports == spec.health_ports and old.guest_paths == spec.guest_paths
    assert old.stage_files == ()


def test_from_dict_passes_over_keys_a_newer_kubelab_added() -> None:
    spec = _plan("empty.yaml").spec
    data = spec.to_dict()
    data["provenance"] = {"new": True}
    data["nodes"][0]["gpu"] = 1
    assert LabSpec.from_dict(data) == spec


@pytest.mark.parametrize(
    "change",
    [
        {"format": SPEC_FORMAT + 1},
        {"format": "1"},
        {"api_port": "6443"},
        {"api_port": True},
        {"nodes": []},
        {"nodes": [{"name": "master"}]},
        {"stages": "prepare"},
        {"scripts": {"master": [1]}},
        {"component_images": ["kube-apiserver"]},
        {"hardway": "no"},
        {"etcd_client_port": "2379"},
        {"health_ports": {"kubelet": "10248"}},
        {"guest_paths": ["/opt/etcd/ssl"]},
        {"stage_files": {"pki": {}}},
        {"stage_files": [{"name": "init-master", "fetches": [{"path": 1, "to": "x"}]}]},
        {"stage_files": [{"name": "etcd", "receives": [{"from_master": "/x"}]}]},
    ],
    ids=repr,
)
def test_from_dict_refuses_a_spec_of_the_wrong_shape(change: dict[str, Any]) -> None:
    data = {**_plan("empty.yaml").spec.to_dict(), **change}
    with pytest.raises(ValueError):
        LabSpec.from_dict(data)


def test_from_dict_refuses_a_spec_missing_a_field() -> None:
    data = _plan("empty.yaml").spec.to_dict()
    del data["pod_cidr"]
    with pytest.raises(ValueError, match="pod_cidr"):
        LabSpec.from_dict(data)
    with pytest.raises(ValueError):
        LabSpec.from_dict(["not", "a", "mapping"])
