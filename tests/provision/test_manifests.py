"""The rendered kubeadm config and flannel manifest against the pinned version's schemas.

flannel's objects (Namespace, RBAC, ConfigMap, DaemonSet) are validated with
kubernetes-validate against the OpenAPI schemas of the exact minor the lab
pins, strictly (unknown fields fail). kubeadm's InitConfiguration and
ClusterConfiguration, kubelet's and kube-proxy's configuration are not part of
those schemas; they are validated against tests/data/provision/schemas/
kubeadm-config.yaml, derived from the kubeadm, kubelet and kube-proxy config API
references (kubeadm itself, which `kubeadm config validate` would need, is not
installable here).
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from kubelab.config import catalog
from tests.provision.harness import DATA, heredoc, render_lab, script_for

SCHEMAS = yaml.safe_load((DATA / "schemas" / "kubeadm-config.yaml").read_text())
KUBEADM_CONFIG = "/etc/kubernetes/kubeadm-config.yaml"
FLANNEL = "/etc/kubernetes/kubelab/kube-flannel.yml"

VERSIONS = sorted(catalog()["kubernetes"], key=lambda v: tuple(int(p) for p in v.split(".")))
# Variants that change what the documents hold.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "docker-ipvs-aliyun": {
        "kubernetes.runtime": "docker",
        "kubernetes.proxy_mode": "ipvs",
        "mirror.profile": "aliyun",
        "student_id": "2021001",
    },
    "debian-custom-cidrs": {
        "box.guest": "debian12",
        "kubernetes.pod_cidr": "10.32.0.0/16",
        "kubernetes.service_cidr": "10.100.0.0/16",
    },
}


def documents(version: str, variant: str, path: str) -> tuple[Any, list[dict[str, Any]]]:
    plan, files = render_lab({"kubernetes.version": version, **VARIANTS[variant]})
    text = heredoc(script_for(plan, files, plan.master, "init-master"), path)
    return plan, [d for d in yaml.safe_load_all(text) if d is not None]


def schema_for(doc: dict[str, Any]) -> dict[str, Any]:
    key = f"{doc['apiVersion']}/{doc['kind']}"
    assert key in SCHEMAS["documents"], f"no schema for {key}"
    return {"$defs": SCHEMAS["$defs"], **SCHEMAS["documents"][key]}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("version", VERSIONS)
def test_kubeadm_config_is_valid_for_the_pinned_version(version: str, variant: str) -> None:
    plan, docs = documents(version, variant, KUBEADM_CONFIG)
    kinds = [d["kind"] for d in docs]
    assert kinds == [
        "InitConfiguration",
        "ClusterConfiguration",
        "KubeletConfiguration",
        "KubeProxyConfiguration",
    ]
    api = plan.kubernetes["kubeadm_api"]
    for doc in docs:
        checker = jsonschema.Draft202012Validator(
            schema_for(doc), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in checker.iter_errors(doc)]
        assert not errors, f"{doc['kind']} for v{version}: {errors}"
        if doc["apiVersion"].startswith("kubeadm.k8s.io/"):
            assert doc["apiVersion"] == f"kubeadm.k8s.io/{api}"
    init, cluster = docs[0], docs[1]
    assert cluster["kubernetesVersion"] == f"v{version}"
    assert cluster["networking"]["podSubnet"] == plan.kubernetes["pod_cidr"]
    assert cluster["networking"]["serviceSubnet"] == plan.kubernetes["service_cidr"]
    assert init["localAPIEndpoint"]["advertiseAddress"] == plan.master.ip
    ignored = init["nodeRegistration"].get("ignorePreflightErrors", [])
    assert ("SystemVerification" in ignored) == plan.kubernetes["ignore_system_verification"]


def test_kubeadm_api_matches_what_each_minor_reads() -> None:
    """v1beta4 arrived in 1.31; 1.28-1.30 read v1beta3 only."""
    for version, entry in catalog()["kubernetes"].items():
        minor = int(version.split(".")[1])
        assert entry["kubeadm_api"] == ("v1beta4" if minor >= 31 else "v1beta3"), version
        assert entry["pause"] == ("3.10" if minor >= 31 else "3.9"), version


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "ClusterConfiguration", "networking": {"podCIDR": "10.244.0.0/16"}},
        {"kind": "InitConfiguration", "nodeRegistration": {"criSocket": "/run/containerd.sock"}},
        {"kind": "InitConfiguration", "bootstrapTokens": [{"ttl": "a day"}]},
    ],
)
def test_the_kubeadm_schema_rejects_what_kubeadm_would(bad: dict[str, Any]) -> None:
    """The hand-made schema is strict enough to catch a wrong field or value."""
    doc = {"apiVersion": "kubeadm.k8s.io/v1beta4", **bad}
    checker = jsonschema.Draft202012Validator(schema_for(doc))
    assert list(checker.iter_errors(doc))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("version", VERSIONS)
def test_flannel_manifest_validates_against_the_pinned_version(version: str, variant: str) -> None:
    plan, docs = documents(version, variant, FLANNEL)
    assert [d["kind"] for d in docs] == [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)
    config = docs[4]["data"]
    assert json.loads(config["net-conf.json"]) == {
        "Network": plan.kubernetes["pod_cidr"],
        "Backend": {"Type": "vxlan"},
    }
    assert json.loads(config["cni-conf.json"])["plugins"][0]["type"] == "flannel"
    pod = docs[5]["spec"]["template"]["spec"]
    images = [c["image"] for c in pod["initContainers"] + pod["containers"]]
    registry = plan.mirror["flannel_registry"]
    assert images == [
        f"{registry}/flannel-cni-plugin:{plan.cni['cni_plugin_version']}",
        f"{registry}/flannel:{plan.cni['version']}",
        f"{registry}/flannel:{plan.cni['version']}",
    ]
    assert pod["containers"][0]["args"] == ["--ip-masq", "--kube-subnet-mgr", "--iface=eth1"]


def test_flannel_validation_catches_a_broken_manifest() -> None:
    _, docs = documents(VERSIONS[-1], "default", FLANNEL)
    daemonset = docs[5]
    daemonset["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Sometimes"
    daemonset["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, VERSIONS[-1], strict=True)
