"""Exercises: data under labs/exercises/<number>.yaml, loaded and checked here.

An exercise names what is applied before the student starts (`start`), what
`--solve` applies (`solution`), both as provisioning stages of the catalog,
and the `invoke verify` checks that prove it. Its manual (zh and en) may hold
{{name}} placeholders, filled from the lab's plan by `manual_values`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from kubelab import REPO_ROOT, defaults
from kubelab.config import catalog, validation_problems
from kubelab.errors import ConfigError, KubelabError
from kubelab.lab_state import STATE_NAME as STATE_NAME  # the exercise state, named here too
from kubelab.lab_state import LabState as LabState
from kubelab.lab_state import read_state as read_state
from kubelab.lab_state import write_state as write_state
from kubelab.plan import Plan

EXERCISES_DIR = REPO_ROOT / "labs" / "exercises"
LANGUAGES = ("zh", "en")
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")


@dataclass(frozen=True)
class Exercise:
    number: int
    title: Mapping[str, str]  # by language
    manual: Mapping[str, str]  # by language, with {{name}} placeholders
    start: tuple[str, ...]  # stages applied before the student starts
    solution: tuple[str, ...]  # stages `--solve` applies
    checks: tuple[str, ...]  # `invoke verify` check ids that prove it
    source: Path
    steps: Mapping[str, int] = field(default_factory=dict)  # check id -> manual step

    @property
    def phases(self) -> tuple[str, ...]:
        """What verify collects for this exercise: the phases of its checks, in order."""
        from kubelab.verify.checks import phases_of  # verify owns the ids; imported late:
        # the checks cost a quarter second to import, which every task would pay

        return phases_of(self.checks)

    def manual_text(self, lang: str, values: Mapping[str, str]) -> str:
        """The manual in `lang` with its placeholders filled; an unknown one is an error."""
        if lang not in self.manual:
            raise KubelabError(
                f"exercise {self.number} has no manual in {lang!r}",
                hint=f"use one of {', '.join(LANGUAGES)}",
                code=2,
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


def exercise_start_stages(number: int) -> tuple[str, ...]:
    """Exercise `number`'s start stages; none when there is no such exercise."""
    path = _exercise_files().get(number)
    return _load(number, path).start if path else ()


def _load(number: int, path: Path) -> Exercise:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML ({exc})"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping"])
    try:
        doc = ExerciseFile.model_validate(data, context={"number": number})
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, str(path))) from None
    return Exercise(
        number=number,
        title=doc.title,
        manual=doc.manual,
        start=tuple(doc.start),
        solution=tuple(doc.solution),
        checks=tuple(doc.checks),
        source=path,
        steps=doc.steps,
    )


class ExerciseFile(BaseModel):
    """labs/exercises/N.yaml, validated the way the lab config is: every problem at once."""

    model_config = ConfigDict(extra="forbid", strict=True)
    number: int
    title: dict[str, str]  # by language
    manual: dict[str, str]  # by language
    start: list[str]  # stages applied before the student starts
    solution: list[str]  # stages `--solve` applies
    checks: list[str]  # `invoke verify` check ids
    steps: dict[str, int] = {}  # check id -> the manual's step number it checks

    @field_validator("title", "manual")
    @classmethod
    def _every_language(cls, texts: dict[str, str]) -> dict[str, str]:
        if set(texts) != set(LANGUAGES) or not all(t.strip() for t in texts.values()):
            raise ValueError(f"needs non-empty text for exactly {', '.join(LANGUAGES)}")
        return texts

    @field_validator("start", "solution")
    @classmethod
    def _known_stages(cls, stages: list[str]) -> list[str]:
        known = {name for order in catalog()["builds"].values() for name in order}
        if not set(stages) <= known:
            raise ValueError(f"must list stages of a build ({', '.join(sorted(known))})")
        return stages

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, checks: list[str]) -> list[str]:
        from kubelab.verify.checks import ALL_CHECK_IDS

        if not set(checks) <= set(ALL_CHECK_IDS):
            raise ValueError(f"must be ids of `invoke verify` ({', '.join(ALL_CHECK_IDS)})")
        return checks

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> ExerciseFile:
        problems = []
        if info.context and self.number != info.context["number"]:
            problems.append(
                f"number is {self.number} but the file is {info.context['number']}.yaml"
            )
        applied = self.start + self.solution
        builds: dict[str, list[str]] = catalog()["builds"]
        if len(set(applied)) != len(applied):
            problems.append("a stage is in both start and solution (or twice)")
        elif not any(applied == order[: len(applied)] for order in builds.values()):
            listed = "; ".join(f"{build}: {', '.join(order)}" for build, order in builds.items())
            problems.append(
                f"start then solution must be the first stages of one build, in order ({listed})"
            )
        if not set(self.steps) <= set(self.checks):
            problems.append("steps must map the exercise's check ids to manual step numbers")
        if problems:
            raise ValueError("; ".join(problems))
        return self


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
        "lab_interface": plan.master.interface,  # flannel's --iface (eth1 under Vagrant)
        "version": plan.spec.kubernetes_version,
        "version_tag": plan.spec.version_tag,
        "minor": k8s["minor"],
        "pod_cidr": k8s["pod_cidr"],
        "service_cidr": k8s["service_cidr"],
        "image_registry": mirror["image_registry"],
        "pause_image": plan.spec.pause_image,
        "centos_vault": mirror["centos_vault"],
        "kubernetes_repo": kube_repo,
        "runtime_socket": plan.runtime["socket"],
        "flannel_version": plan.cni.get("version", ""),
        "nginx_image": mirror["nginx_image"],
        "student_id": plan.config.student_id or "<ID>",
        "docker_ce_repo": mirror["docker_ce_rpm"],
        "docker_ce_gpg": mirror["docker_ce_rpm_gpg"],
        "flannel_url": (
            "https://github.com/flannel-io/flannel/releases/download/"
            f"{plan.cni.get('version', '')}/kube-flannel.yml"
        ),
        # The hard way's etcd cluster (exercise 4): one member per VM.
        "etcd_members": "\n".join(f"   {n.hostname} {n.ip}" for n in plan.nodes),
        "etcd_sans": ", ".join([*(n.ip for n in plan.nodes), *(n.hostname for n in plan.nodes)]),
        "etcd_initial_cluster": plan.spec.etcd_initial_cluster,
        "etcd_endpoints": plan.spec.etcd_endpoints,
        # The hard way's control plane and nodes (exercise 6).
        "kube_release": plan.hardway["kube_release"]["version"],
        "api_server": f"https://{plan.spec.api_endpoint}",
        "dns_service_ip": plan.spec.dns_service_ip,
        "coredns_image": plan.spec.component_images["coredns"],
        "bootstrap_group": plan.hardway["bootstrap_group"],
        # The ports and paths the manuals name, as the spec holds them (manual 001's).
        "firewall_ports": ", ".join(defaults.FIREWALL_PORTS["master"]),
        "api_port": str(plan.spec.api_port),
        "etcd_client_port": str(plan.spec.etcd_client_port),
        "etcd_peer_port": str(plan.spec.etcd_peer_port),
        "kubelet_port": str(plan.spec.kubelet_port),
        "kubelet_health_port": str(plan.spec.health_ports["kubelet"]),
        "kube_proxy_health_port": str(plan.spec.health_ports["kube-proxy"]),
        "controller_manager_port": str(plan.spec.health_ports["kube-controller-manager"]),
        "scheduler_port": str(plan.spec.health_ports["kube-scheduler"]),
        **plan.spec.guest_paths,
    }


def manual_text(exercise: Exercise, plan: Plan, language: str = "en") -> str:
    """The exercise's manual in one language, its placeholders filled from the lab."""
    return exercise.manual_text(language, manual_values(plan))


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def snapshot_name(exercise: Exercise) -> str:
    return f"kubelab-exercise-{exercise.number}-start"


def applied_by(exercise: Exercise, solve: bool) -> dict[str, str]:
    """What each stage `invoke lab` applies is recorded as applied by (provenance)."""
    from kubelab.verify.provenance import SOLVE, start_label

    labels = {stage: start_label(exercise.number) for stage in exercise.start}
    if solve:
        labels.update({stage: SOLVE for stage in exercise.solution})
    return labels


def past_start(exercise: Exercise, applied: Mapping[str, bool]) -> list[str]:
    """The stages beyond the exercise's start that the VMs already hold (stage -> done)."""
    return [s for s, done in applied.items() if done and s not in exercise.start]


def manual_file(plan: Plan, exercise: Exercise, language: str) -> Path:
    return plan.lab_dir / f"exercise-{exercise.number}.{language}.txt"


def next_commands(exercise: Exercise, state: LabState) -> list[str]:
    """The commands the student types next, with the real exercise and ID."""
    return [
        "invoke ssh master    (and node1, node2, ...): do the steps",
        "invoke lab --check   (what is done so far; writes no hand-in)",
        f"invoke verify --exercise {exercise.number} --student {state.student}   (the hand-in)",
        f"invoke lab --exercise {exercise.number} --reset   (back to the start)",
    ]


def step_rows(exercise: Exercise, results: list[Any]) -> list[tuple[str, str, bool, str]]:
    """(step, check title, done, why) per check, in manual step order."""
    rows = []
    for result in results:
        step = exercise.steps.get(result.id)
        why = "" if result.passed else "; ".join(str(p) for p in result.parts if not p.ok)
        rows.append((str(step) if step else "-", result.title, result.passed, why or result.detail))
    return sorted(rows, key=lambda r: (not r[0].isdigit(), int(r[0]) if r[0].isdigit() else 0))


# --- the flow: start, check, reset, solve (tasks.py wires the flags to these) -------


def domain_name(plan: Plan, node_name: str) -> str:
    """vagrant-libvirt names a lab's domain: its default_prefix, then the machine name."""
    return f"{plan.prefix}{node_name}"


def applied_stages(plan: Plan) -> dict[str, list[str]]:
    """Stage -> the VMs holding its marker, read from the running lab; {} when it is not up."""
    from kubelab import lifecycle
    from kubelab.verify.provenance import MARKERS_SCRIPT, parse_markers

    try:
        driver = lifecycle.running_driver(plan)
    except KubelabError:
        return {}
    found: dict[str, list[str]] = {}
    with lifecycle.connect(plan, driver) as transport:
        for node in plan.nodes:
            listing = transport.run(node.name, "sh", "-c", MARKERS_SCRIPT, sudo=True, timeout=30)
            for applied in parse_markers(node.name, listing.stdout):
                found.setdefault(applied.stage, []).append(node.name)
    return found


def refuse_past_start(exercise: Exercise, applied: Mapping[str, list[str]]) -> None:
    beyond = [s for s in applied if s not in exercise.start]
    if beyond:
        raise KubelabError(
            f"this lab is past exercise {exercise.number}'s start: kubelab already applied "
            f"{', '.join(beyond)}",
            hint=f"go back to the start: invoke lab --exercise {exercise.number} --reset "
            "(or invoke destroy --yes for a new lab)",
            code=2,
        )


def start(plan: Plan, exercise: Exercise, state: LabState, reporter: Any) -> LabState:
    """Bring the lab to the exercise's start state and snapshot every VM there."""
    from kubelab import lifecycle

    lifecycle.up(plan, reporter, applied_by(exercise, solve=False))
    ship_files(plan, exercise)  # before the snapshot: a reset keeps them
    snapshot = snapshot_name(exercise)
    inspector = lifecycle.inspector_for(plan)
    with reporter.step(f"snapshot every VM at the start state ({snapshot})"):
        for node in plan.nodes:
            inspector.snapshot(
                domain_name(plan, node.name),
                snapshot,
                f"kubelab: exercise {exercise.number} start state for {state.student}",
            )
    started = LabState(
        exercise=exercise.number,
        student=state.student,
        language=state.language,
        started_at=now(),
        snapshot=snapshot,
    )
    write_state(plan.lab_dir, started)
    return started


def reset(plan: Plan, state: LabState, reporter: Any) -> tuple[LabState, float]:
    """Revert every VM to the start-state snapshot; the seconds it took."""
    from kubelab import lifecycle

    if not state.snapshot:
        raise KubelabError(
            f"no start-state snapshot recorded in {plan.lab_dir / STATE_NAME}",
            hint=f"start the exercise: invoke lab --exercise {state.exercise} --student "
            f"{state.student}",
            code=2,
        )
    inspector = lifecycle.inspector_for(plan)
    began = time.monotonic()
    with reporter.step(f"revert every VM to {state.snapshot}"):
        for node in plan.nodes:
            inspector.revert(domain_name(plan, node.name), state.snapshot)
    took = time.monotonic() - began
    restored = state.restored(now())
    write_state(plan.lab_dir, restored)
    return restored, took


MASTER_HOME = "/home/vagrant"  # the box user's home: where the manual's commands run


def ship_files(plan: Plan, exercise: Exercise) -> list[Path]:
    """The manifests the exercise's manual applies, written to the lab folder and to the
    master's home folder, so an offline class has them."""
    from kubelab import lifecycle

    shipped = exercise_files(plan, exercise)
    written = []
    for name, text in shipped.items():
        path = plan.lab_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    if shipped:
        with lifecycle.connect(plan, lifecycle.running_driver(plan)) as transport:
            for name, text in shipped.items():
                transport.put(plan.master.name, text.encode(), f"{MASTER_HOME}/{name}", 0o644)
    return written


def exercise_files(plan: Plan, exercise: Exercise) -> dict[str, str]:
    """Exercise 2 ships the flannel manifest kubelab pins and the monitoring UI's."""
    if "init-master" not in exercise.solution:
        return {}
    from kubelab.render import template_context
    from kubelab.templating import lab_environment

    flannel = (
        lab_environment()
        .get_template("files/kube-flannel.yml.j2")
        .render(template_context(plan, node=plan.master))
    )
    scope = (REPO_ROOT / "labs" / "manifests" / "weave-scope.yaml").read_text(encoding="utf-8")
    return {"kube-flannel.yml": flannel, "weave-scope.yaml": scope}


def voided_items(exercise: Exercise, stages: list[str], solve: bool = False) -> list[str]:
    """The rubric items kubelab applying `stages` would void (none if no rubric)."""
    from kubelab.grade.rubric import load_rubric

    try:
        rubric = load_rubric(exercise.number)
    except KubelabError:
        return []
    if solve and rubric.allow_solve:
        return []
    return [
        i.id
        for i in rubric.items
        if set(i.voided_by) & set(stages) and not set(i.voided_by) <= set(exercise.start)
    ]


def solve_warning(exercise: Exercise) -> str:
    """What `--solve` says before it starts."""
    voided = voided_items(exercise, list(exercise.solution), solve=True)
    if not voided:
        return f"--solve applies {', '.join(exercise.solution)}; this rubric lets it count (demo)"
    return (
        f"--solve applies {', '.join(exercise.solution)}: exercise {exercise.number} will then "
        f"not count (the grade scores {', '.join(voided)} 0 and names the stage)"
    )


def up_warning(plan: Plan, state: LabState) -> str:
    """What `invoke up` would do to the lab's exercise, as a question."""
    exercise = load_exercise(state.exercise)
    stages = [s.name for s in plan.stages if s.name not in exercise.start]
    voided = voided_items(exercise, stages)
    effect = (
        f"exercise {exercise.number} would then not count ({', '.join(voided)} scored 0)"
        if voided
        else f"exercise {exercise.number}'s grade is not affected"
    )
    return (
        f"this lab is exercise {exercise.number}'s (student {state.student}): `invoke up` "
        f"would apply every stage ({', '.join(stages) or 'none'}) and build the whole cluster; "
        f"{effect}. Build it anyway?"
    )
