"""What verify expects: a projection of the lab's LabSpec, read back from meta.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubelab import defaults
from kubelab.config import load_config
from kubelab.grade.inventory import Settings
from kubelab.plan import make_plan
from kubelab.verify.expect import NODE_PREP, Expected

VALID = Path(__file__).resolve().parents[1] / "data" / "configs" / "valid"


def _spec(name: str):
    return make_plan(load_config(VALID / name), Path("/srv/kubelab/lab")).spec


@pytest.mark.parametrize("name", ["empty.yaml", "student-id.yaml", "hardway.yaml"])
def test_expected_is_a_projection_of_the_spec(name: str) -> None:
    spec = _spec(name)
    expected = Expected.from_spec(spec, phases=(NODE_PREP,), language="zh")
    assert [(n.name, n.machine, n.role, n.private_ip) for n in expected.nodes] == [
        (n.k8s_name, n.name, n.role, n.ip) for n in spec.nodes
    ]
    assert expected.kubernetes_version == spec.kubernetes_version
    assert (expected.pod_cidr, expected.cni) == (spec.pod_cidr, spec.cni)
    assert (expected.namespace, expected.nodeport) == (spec.verify_namespace, spec.verify_nodeport)
    assert expected.management_cidr == spec.management_cidr
    assert expected.student_id == spec.student_id and expected.hardway is spec.hardway
    assert (expected.phases, expected.language) == ((NODE_PREP,), "zh")


def test_the_stages_an_exercise_built_say_whether_the_lab_is_hard_way() -> None:
    spec = _spec("empty.yaml")
    assert not Expected.from_spec(spec).hardway
    built = Expected.from_spec(spec, stages=("prepare", "repos", "pki", "etcd"))
    assert built.hardway and built.stages == ("prepare", "repos", "pki", "etcd")


def test_expected_round_trips_through_meta_json() -> None:
    expected = Expected.from_spec(_spec("student-id.yaml"), dns=True)
    assert Expected.from_dict(json.loads(json.dumps(expected.to_dict()))) == expected


def test_verify_and_the_grader_read_their_defaults_from_one_module() -> None:
    """The two nginx deployments differ on purpose (see kubelab/defaults.py); each is
    written once."""
    bare = Expected(nodes=(), kubernetes_version="1.31.13", pod_cidr="10.244.0.0/16")
    assert (bare.namespace, bare.nodeport) == (defaults.VERIFY_NAMESPACE, defaults.VERIFY_NODEPORT)
    assert bare.management_cidr == defaults.MANAGEMENT_CIDR
    assert (Settings().namespace, Settings().nodeport) == (
        defaults.GRADE_NAMESPACE,
        defaults.GRADE_NODEPORT,
    )
    assert defaults.VERIFY_NODEPORT != defaults.GRADE_NODEPORT


def test_the_hard_ways_ports_and_paths_come_from_the_spec_and_read_back() -> None:
    spec = _spec("hardway.yaml")
    expected = Expected.from_spec(spec)
    assert (expected.etcd_client_port, expected.etcd_peer_port) == (
        spec.etcd_client_port,
        spec.etcd_peer_port,
    )
    assert expected.health_ports == spec.health_ports
    assert expected.guest_paths == spec.guest_paths
    assert Expected.from_dict(json.loads(json.dumps(expected.to_dict()))) == expected
    # evidence written before they were kept reads back with the constants it was built with
    older = expected.to_dict()
    for added in ("etcd_client_port", "etcd_peer_port", "health_ports", "guest_paths"):
        del older[added]
    assert Expected.from_dict(older) == expected


def test_a_port_or_path_the_evidence_lacks_reads_back_as_the_constant() -> None:
    """A meta.json without a name the checks and hints look up (older evidence, or a
    hand-in that dropped it) is graded with the constant, never a KeyError."""
    expected = Expected.from_spec(_spec("hardway.yaml"))
    data = expected.to_dict()
    data["guest_paths"] = {"etcdctl": "/usr/local/bin/my_etcdctl"}
    data["health_ports"] = {}
    read = Expected.from_dict(data)
    assert read.guest_paths == {**defaults.GUEST_PATHS, "etcdctl": "/usr/local/bin/my_etcdctl"}
    assert read.health_ports == defaults.HEALTH_PORTS


@pytest.mark.parametrize(
    "change",
    [{"health_ports": {"kubelet": "10248"}}, {"guest_paths": ["/opt/etcd/ssl"]},
     {"health_ports": {"kubelet": True}}],
    ids=repr,
)  # fmt: skip
def test_expected_refuses_ports_or_paths_of_the_wrong_shape(change: dict) -> None:
    data = {**Expected.from_spec(_spec("hardway.yaml")).to_dict(), **change}
    with pytest.raises(ValueError):
        Expected.from_dict(data)
