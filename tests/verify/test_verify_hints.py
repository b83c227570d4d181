"""Hints: every key the checks use exists in labs/hints.yaml, and every hint renders."""

from __future__ import annotations

import ast
import inspect

import pytest

from kubelab.verify import checks
from kubelab.verify.hints import hint, language, load

FIELDS = {
    "node": "node1",
    "pod": "kube-flannel-ds-abcde",
    "namespace": "kube-flannel",
    "pod_cidr": "10.244.0.0/16",
    "actual": "v1.31.1",
    "expected": "v1.31.13",
    "student": "2023001",
    "config_key": "/coreos.com/network/config",
    "subnet": "10.244.1.0/24",
    "unit": "kubelet",
    "url": "http://127.0.0.1:10248/healthz",
    "ports": "kube-apiserver 6443, kubelet 10248",
    "client_port": 2379,
    "peer_port": 2380,
    "etcdctl": "/opt/etcd/bin/my_etcdctl",
    "etcd_ssl_dir": "/opt/etcd/ssl",
    "etcd_data_dir": "/var/lib/etcd/default.etcd",
    "etcd_config": "/opt/etcd/cfg/etcd",
    "admin_kubeconfig": "/etc/kubernetes/admin.conf",
    "kubectl": "/opt/kubernetes/bin/kubectl --kubeconfig=/opt/kubernetes/cfg/admin.kubeconfig",
    "dns_service_ip": "10.96.0.10",
    "replicas": 2,
}


def keys_used_by_checks() -> set[str]:
    """String keys passed to hint()/Hints.add()/require(), and the _BROKEN hint keys."""
    tree = ast.parse(inspect.getsource(checks))
    used: set[str] = set(checks._BROKEN.values())
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = (
            node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        )
        args = node.args
        if name in ("hint", "add") and args and isinstance(args[0], ast.Constant):
            used.add(args[0].value)
        if name == "require" and len(args) == 4 and isinstance(args[3], ast.Constant):
            used.add(args[3].value)
        if name == "_per_node" and len(args) >= 2 and isinstance(args[1], ast.Constant):
            used.add(args[1].value)
    return used


def test_every_key_the_checks_use_exists() -> None:
    used = keys_used_by_checks()
    assert len(used) > 15  # the walk found them
    assert used - set(load()) == set()


@pytest.mark.parametrize("key", sorted(load()))
def test_every_hint_renders_fully(key: str) -> None:
    text = hint(key, **FIELDS)
    assert "{" not in text and "}" not in text
    assert "\n" not in text  # folded to one line for the table


def test_unknown_key_is_an_error() -> None:
    with pytest.raises(KeyError):
        hint("no-such-hint")


def test_missing_field_stays_visible() -> None:
    assert "{node}" in hint("node_missing")


@pytest.mark.parametrize("key", sorted(k for k, texts in load().items() if "zh" in texts))
def test_a_hint_comes_in_the_exercises_language(key: str) -> None:
    english = hint(key, **FIELDS)
    with language("zh"):
        chinese = hint(key, **FIELDS)
    assert chinese != english
    assert "{" not in chinese and "\n" not in chinese
    assert any("\u4e00" <= c <= "\u9fff" for c in chinese)


def test_a_hint_without_the_language_falls_back_to_english() -> None:
    with language("zh"):
        assert hint("api_version") == load()["api_version"]["en"]
