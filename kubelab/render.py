"""Render a plan into the lab folder's files: pure, then one small write step.

`render(plan)` returns {relative path: text} and touches no disk but the
templates and Jinja's bytecode cache (kubelab/templating.py);
`write_lab(files, out_dir)` writes them all or nothing.

Templates print the fields of `plan.spec` (the LabSpec) and the catalog's
entries; the environment and its quoting filters (`rb`, `sh`, `yaml`) are
kubelab/templating.py's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jinja2

from kubelab import __version__, defaults
from kubelab.config_cache import config_as_dict
from kubelab.defaults import LOG_DIR
from kubelab.errors import KubelabError
from kubelab.plan import Plan
from kubelab.templating import (
    PROVISION_TEMPLATES,
    VAGRANT_TEMPLATES,
    lab_environment,
    ruby_string,
    shell_word,
    yaml_scalar,
)

MANIFEST_NAME = "kubelab-render.json"
# The quoting filters are templating's; render re-exports them for its callers.
__all__ = [
    "PROVISION_TEMPLATES",
    "VAGRANT_TEMPLATES",
    "render",
    "ruby_string",
    "shell_word",
    "template_context",
    "write_lab",
    "yaml_scalar",
]


def template_context(plan: Plan, **extra: Any) -> dict[str, Any]:
    return {
        "plan": plan,
        "spec": plan.spec,
        "lab": plan.config,
        "nodes": plan.nodes,
        "master": plan.master,
        "workers": plan.workers,
        "k8s": plan.kubernetes,
        "runtime": plan.runtime,
        "cni": plan.cni,
        "guest": plan.guest,
        "mirror": plan.mirror,
        "network": plan.network,
        "firewall_ports": defaults.FIREWALL_PORTS,
        "kubelab_version": __version__,
        **extra,
    }


def render(plan: Plan) -> dict[str, str]:
    """Every file of the lab folder, by relative path. Deterministic."""
    env = lab_environment()
    files: dict[str, str] = {}
    try:
        files["Vagrantfile"] = env.get_template("Vagrantfile.j2").render(template_context(plan))
        for node in plan.nodes:
            scripts = plan.spec.scripts[node.name]
            for path, stage in zip(scripts, plan.stages_for(node), strict=True):
                files[path] = env.get_template(stage.template).render(
                    template_context(plan, node=node, stage=stage)
                )
    except jinja2.TemplateError as exc:
        # A template bug, not a user error: name the template and the line.
        where = getattr(exc, "name", None) or getattr(exc, "filename", None) or "template"
        line = getattr(exc, "lineno", None)
        raise KubelabError(
            f"rendering failed in {where}{f' line {line}' if line else ''}: {exc}",
            hint="the templates under vagrant/ and provision/ need fixing",
        ) from exc
    files[MANIFEST_NAME] = _manifest(plan, files)
    return files


def _manifest(plan: Plan, files: dict[str, str]) -> str:
    manifest = {
        "kubelab_version": __version__,
        "lab": plan.config.name,
        "prefix": plan.prefix,
        "config": config_as_dict(plan.config),
        "stages": [s.name for s in plan.stages],
        "files": {
            path: hashlib.sha256(text.encode()).hexdigest() for path, text in sorted(files.items())
        },
    }
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def write_lab(files: dict[str, str], out_dir: Path) -> list[Path]:
    """Write every rendered file under out_dir, or none of them.

    Files are written to a temporary folder beside out_dir first and moved into
    place once all are written; the lab folder's logs and .vagrant state stay.
    """
    out_dir = out_dir.resolve()
    try:
        # Private from the start: the lab folder holds the VMs' keys (.vagrant) and logs/
        # holds what the stages print. An existing logs/ is made private too.
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        logs = out_dir / LOG_DIR
        logs.mkdir(exist_ok=True, mode=0o700)
        logs.chmod(0o700)
        staging = Path(tempfile.mkdtemp(prefix=".render-", dir=out_dir))
    except OSError as exc:
        raise KubelabError(
            f"cannot write the lab folder {out_dir}: {exc.strerror}",
            hint="choose another --out folder or fix its permissions",
        ) from None
    written: list[Path] = []
    new_dir, old_dir = staging / "new", staging / "old"
    try:
        for rel, text in files.items():
            path = new_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            if rel.endswith(".sh"):
                path.chmod(0o755)
        # The old generated files (these paths and every old script) move aside
        # first, so a failure below can put them back: the folder ends all old or
        # all new. Old scripts of stages no longer planned do not come back.
        old = set(files)
        if (out_dir / "scripts").is_dir():
            old |= {
                p.relative_to(out_dir).as_posix()
                for p in (out_dir / "scripts").rglob("*")
                if not p.is_dir()
            }
        moved: list[str] = []
        try:
            for rel in sorted(old):
                if (out_dir / rel).is_file() or (out_dir / rel).is_symlink():
                    (old_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(out_dir / rel, old_dir / rel)
                    moved.append(rel)
            for rel in files:
                target = out_dir / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(new_dir / rel, target)
                written.append(target)
        except OSError:
            for target in written:
                target.unlink(missing_ok=True)
            for rel in moved:
                os.replace(old_dir / rel, out_dir / rel)
            raise
        for folder in sorted((out_dir / "scripts").rglob("*"), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    except OSError as exc:
        raise KubelabError(
            f"cannot write the lab folder {out_dir}: {exc}",
            hint="check free disk space and permissions",
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written
