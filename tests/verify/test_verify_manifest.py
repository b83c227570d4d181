"""verify's nginx manifest: rendered from labs/manifests, valid for every pinned version.

`kubectl apply --dry-run=client` cannot validate it here: even a client dry run
asks the API server for its resource list (it fails with "couldn't get current
server API group list" when none answers). So the rendered objects are checked
with kubernetes-validate against the OpenAPI schemas of each Kubernetes version
the catalog pins, in strict mode (unknown fields fail).
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from kubelab import REPO_ROOT
from kubelab.verify.collect import NGINX_APP, render_manifest

CATALOG = yaml.safe_load((REPO_ROOT / "provision" / "catalog.yaml").read_text())
MIRRORS = yaml.safe_load((REPO_ROOT / "provision" / "mirrors.yaml").read_text())
IMAGES = sorted({p["nginx_image"] for p in MIRRORS["profiles"].values() if p.get("nginx_image")})


def objects(text: str) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(text) if d}


@pytest.mark.parametrize("version", sorted(CATALOG["kubernetes"]))
@pytest.mark.parametrize("image", IMAGES)
def test_manifest_validates_against_each_pinned_version(version: str, image: str) -> None:
    rendered = objects(render_manifest("kubelab-verify", image, 3, 30080))
    assert sorted(rendered) == ["Deployment", "Namespace", "Service"]
    for obj in rendered.values():
        kubernetes_validate.validate(obj, version, strict=True)


def test_values_reach_the_objects() -> None:
    # A digest-pinned image from a registry with a port: characters YAML could misread.
    image = "registry.lab.example:5000/library/nginx@sha256:" + "ab" * 32
    rendered = objects(render_manifest("kubelab-verify-x", image, 2, 31234))
    deployment, service = rendered["Deployment"], rendered["Service"]
    assert rendered["Namespace"]["metadata"]["name"] == "kubelab-verify-x"
    assert (
        deployment["metadata"]["namespace"]
        == service["metadata"]["namespace"]
        == "kubelab-verify-x"
    )
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == image
    assert service["spec"]["ports"][0]["nodePort"] == 31234
    assert service["spec"]["type"] == "NodePort"
    assert "tolerations" not in pod


def test_one_pod_per_node_by_anti_affinity() -> None:
    deployment = objects(render_manifest("kubelab-verify", IMAGES[0], 3, 30080))["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert (
        deployment["spec"]["selector"]["matchLabels"]
        == labels
        == {"app.kubernetes.io/name": NGINX_APP}
    )
    terms = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert terms == [
        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": labels}}
    ]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_the_service_selects_the_pods() -> None:
    rendered = objects(render_manifest("kubelab-verify", IMAGES[0], 3, 30080))
    labels = rendered["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert rendered["Service"]["spec"]["selector"] == labels
