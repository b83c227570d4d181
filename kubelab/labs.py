"""Exercises: data under labs/exercises/<number>.yaml, loaded and checked here.

An exercise names what is applied before the student starts (`start`), what
`--solve` applies (`solution`), both as provisioning stages of the catalog,
and the `invoke verify` checks that prove it. Its manual (zh and en) may hold
{{name}} placeholders, filled from the lab's plan by `manual_values`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubelab import REPO_ROOT
from kubelab.config import catalog
from kubelab.errors import KubelabError
from kubelab.plan import Plan
from kubelab.verify.checks import ALL_CHECK_IDS  # the verify module owns the check ids

EXERCISES_DIR = REPO_ROOT / "labs" / "exercises"
LANGUAGES = ("zh", "en")
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
_KEYS = {"number", "title", "manual", "start", "solution", "checks"}


@dataclass(frozen=True)
class Exercise:
    number: int
    title: Mapping[str, str]  # by language
    manual: Mapping[str, str]  # by language, with {{name}} placeholders
    start: tuple[str, ...]  # stages applied before the student starts
    solution: tuple[str, ...]  # stages `--solve` applies
    checks: tuple[str, ...]  # `invoke verify` check ids that prove it
    source: Path

    def manual_text(self, lang: str, values: Mapping[str, str]) -> str:
        """The manual in `lang` with its placeholders filled; an unknown one is an error."""
        if lang not in self.manual:
            raise KubelabError(
                f"exercise {self.number} has no manual in {lang!r}",
                hint=f"use one of {', '.join(LANGUAGES)}",
            )

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in values:
                raise KubelabError(
                    f"{self.source}: the manual uses {{{{{name}}}}}, which kubelab does not fill",
                    hint=f"use one of {', '.join(sorted(values))}",
                )
            return values[name]

        return _PLACEHOLDER.sub(fill, self.manual[lang])


def _exercise_files() -> dict[int, Path]:
    files = {}
    for path in sorted(EXERCISES_DIR.glob("*.yaml")):
        if path.stem.isdigit():
            files[int(path.stem)] = path
    return files


def list_exercises() -> list[Exercise]:
    """Every exercise, in number order."""
    return [_load(number, path) for number, path in sorted(_exercise_files().items())]


def load_exercise(number: int | str) -> Exercise:
    """Exercise `number`; an unknown number fails with the valid ones."""
    files = _exercise_files()
    valid = ", ".join(str(n) for n in sorted(files)) or "none"
    try:
        key = int(number)
    except (TypeError, ValueError):
        key = None
    if key is None or key not in files:
        raise KubelabError(f"no exercise {number}", hint=f"valid exercises: {valid}", code=2)
    return _load(key, files[key])


def _load(number: int, path: Path) -> Exercise:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise KubelabError(
            f"{path}: not valid YAML ({exc})", hint="fix the exercise file"
        ) from None
    problems = _problems(number, data)
    if problems:
        raise KubelabError(f"{path}: " + "; ".join(problems), hint="fix the exercise file")
    return Exercise(
        number=number,
        title=dict(data["title"]),
        manual=dict(data["manual"]),
        start=tuple(data["start"]),
        solution=tuple(data["solution"]),
        checks=tuple(data["checks"]),
        source=path,
    )


def _problems(number: int, data: Any) -> list[str]:
    if not isinstance(data, dict):
        return ["the top level must be a mapping"]
    problems = []
    missing, unknown = _KEYS - set(data), set(data) - _KEYS
    if missing:
        problems.append(f"missing {', '.join(sorted(missing))}")
    if unknown:
        problems.append(f"unknown {', '.join(sorted(unknown))}")
    if missing:
        return problems
    if data["number"] != number:
        problems.append(f"number is {data['number']!r} but the file is {number}.yaml")
    for key in ("title", "manual"):
        texts = data[key]
        if (
            not isinstance(texts, dict)
            or set(texts) != set(LANGUAGES)
            or not all(isinstance(t, str) and t.strip() for t in texts.values())
        ):
            problems.append(f"{key} needs non-empty text for exactly {', '.join(LANGUAGES)}")
    builds: dict[str, list[str]] = catalog()["builds"]
    known = {name for order in builds.values() for name in order}
    for key in ("start", "solution"):
        stages = data[key]
        if not isinstance(stages, list) or not all(s in known for s in stages):
            problems.append(f"{key} must list stages of a build ({', '.join(sorted(known))})")
    if not problems:
        applied = data["start"] + data["solution"]
        if len(set(applied)) != len(applied):
            problems.append("a stage is in both start and solution (or twice)")
        elif not any(applied == order[: len(applied)] for order in builds.values()):
            listed = "; ".join(f"{build}: {', '.join(order)}" for build, order in builds.items())
            problems.append(
                f"start then solution must be the first stages of one build, in order ({listed})"
            )
    if not isinstance(data["checks"], list) or not set(data["checks"]) <= set(ALL_CHECK_IDS):
        problems.append(f"checks must be ids of `invoke verify` ({', '.join(ALL_CHECK_IDS)})")
    return problems


def manual_values(plan: Plan) -> dict[str, str]:
    """What a manual's {{placeholders}} stand for in this lab."""
    k8s, mirror = plan.kubernetes, plan.mirror
    family = plan.guest["family"]
    kube_repo = mirror["kubernetes_rpm" if family == "rhel" else "kubernetes_deb"]
    return {
        "nodes": ", ".join(n.name for n in plan.nodes),
        "hostnames": ", ".join(n.hostname for n in plan.nodes),
        "hosts_lines": "\n".join(f"   {n.ip} {n.hostname}" for n in plan.nodes),
        "first_worker": plan.workers[0].hostname if plan.workers else plan.master.hostname,
        "master_hostname": plan.master.hostname,
        "master_ip": plan.master.ip,
        "version": k8s["version"],
        "minor": k8s["minor"],
        "pod_cidr": k8s["pod_cidr"],
        "service_cidr": k8s["service_cidr"],
        "image_registry": mirror["image_registry"],
        "pause_image": f"{mirror['image_registry']}/pause:{k8s['pause']}",
        "centos_vault": mirror["centos_vault"],
        "kubernetes_repo": kube_repo,
        "runtime_socket": plan.runtime["socket"],
        "flannel_version": plan.cni.get("version", ""),
        "nginx_image": mirror["nginx_image"],
        "student_id": plan.config.student_id,
        # The hard way's etcd cluster (exercise 4): one member per VM.
        "etcd_members": "\n".join(f"   {n.hostname} {n.ip}" for n in plan.nodes),
        "etcd_sans": ", ".join([*(n.ip for n in plan.nodes), *(n.hostname for n in plan.nodes)]),
        "etcd_initial_cluster": ",".join(
            f"{n.hostname}=https://{n.ip}:{plan.hardway['etcd_peer_port']}" for n in plan.nodes
        ),
        "etcd_endpoints": ",".join(
            f"https://{n.ip}:{plan.hardway['etcd_client_port']}" for n in plan.nodes
        ),
    }


def manual_text(exercise: Exercise, plan: Plan, language: str = "en") -> str:
    """The exercise's manual in one language, its placeholders filled from the lab."""
    import jinja2

    if language not in exercise.manual:
        raise KubelabError(
            f"exercise {exercise.number} has no manual in {language!r}",
            hint=f"use one of {', '.join(exercise.manual)}",
            code=2,
        )
    template = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    return template.from_string(exercise.manual[language]).render(manual_values(plan))
