"""The stage templates render for every kind of lab, and quote what they interpolate.

Pure: renders in memory, runs nothing. The isolated-root tests run the scripts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest

from kubelab.config import ConfigError, catalog, load_config
from tests.provision.harness import REPO_ROOT, render_lab

PROVISION = REPO_ROOT / "provision"
BASH_TEMPLATES = sorted(
    [*(PROVISION / "stages").glob("*.sh.j2"), *(PROVISION / "lib").glob("*.sh.j2")]
)
YAML_TEMPLATES = sorted(
    [*(PROVISION / "files").glob("*.yaml.j2"), *(PROVISION / "files").glob("*.yml.j2")]
)
DEFAULT_STAGES = [s["name"] for s in catalog()["stages"] if not s.get("optional")]

LABS: dict[str, dict[str, Any]] = {
    "default": {},
    "customised": {
        "student_id": "2021001",
        "kubernetes.runtime": "docker",
        "kubernetes.proxy_mode": "ipvs",
        "mirror.profile": "aliyun",
        "box.guest": "debian12",
        "kubernetes.firewall": "open-ports",
    },
    "ubuntu-1.33": {"box.guest": "ubuntu2204", "kubernetes.version": "1.33.5"},
    "centos-1.28-docker": {"kubernetes.version": "1.28.15", "kubernetes.runtime": "docker"},
}


def test_every_catalog_stage_has_a_template() -> None:
    for stage in catalog()["stages"]:
        assert (PROVISION / "stages" / f"{stage['name']}.sh.j2").is_file(), stage["name"]


@pytest.mark.parametrize("lab", sorted(LABS))
def test_every_stage_renders_for_every_node(lab: str) -> None:
    plan, files = render_lab(LABS[lab])
    assert [s.name for s in plan.stages] == DEFAULT_STAGES
    for node in plan.nodes:
        stages = plan.stages_for(node)
        assert stages
        for index, stage in enumerate(stages, start=1):
            script = files[f"scripts/{node.name}/{index:02d}-{stage.name}.sh"]
            assert script.startswith("#!/usr/bin/env bash\n")
            assert "\nset -euo pipefail\n" in script
            # A heredoc's content must never end it early.
            bodies = script.split("<<'KUBELAB_EOF'\n")[1:]
            for body in bodies:
                content, _, _ = body.partition("\nKUBELAB_EOF\n")
                assert "KUBELAB_EOF" not in content


def _outputs(template: Path) -> list[tuple[int, jinja2.nodes.Node]]:
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    tree = env.parse(template.read_text())
    found = []
    for output in tree.find_all(jinja2.nodes.Output):
        for node in output.nodes:
            if not isinstance(node, jinja2.nodes.TemplateData):
                found.append((node.lineno, node))
    return found


@pytest.mark.parametrize("template", BASH_TEMPLATES, ids=lambda p: p.name)
def test_every_value_reaching_bash_passes_the_sh_filter(template: Path) -> None:
    lines = template.read_text().splitlines()
    for lineno, node in _outputs(template):
        if lines[lineno - 1].lstrip().startswith("#"):
            continue  # a comment: bash never reads it
        assert isinstance(node, jinja2.nodes.Filter) and node.name == "sh", (
            f"{template.name}:{lineno}: {lines[lineno - 1].strip()}"
        )


@pytest.mark.parametrize("template", YAML_TEMPLATES, ids=lambda p: p.name)
def test_every_value_reaching_yaml_passes_the_yaml_filter(template: Path) -> None:
    lines = template.read_text().splitlines()
    outputs = _outputs(template)
    assert outputs
    for lineno, node in outputs:
        assert isinstance(node, jinja2.nodes.Filter) and node.name == "yaml", (
            f"{template.name}:{lineno}: {lines[lineno - 1].strip()}"
        )


@pytest.mark.parametrize(
    "value", ["http://mirror.example/a b", "http://mirror.example/\nx", "http://mirror.example/'x'"]
)
def test_repository_lines_are_safe_because_config_rejects_odd_urls(value: str) -> None:
    """Repository and unit files take URLs unquoted; the config lets none through that
    could break a line or a quote."""
    with pytest.raises(ConfigError):
        load_config(None, {"mirror.profile": "custom", "mirror.custom": {"centos_vault": value}})
