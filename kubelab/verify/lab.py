"""verify for a lab of this host: the plan says what to expect, Vagrant how to reach it."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from kubelab.config import config_as_dict
from kubelab.errors import KubelabError
from kubelab.plan import Plan
from kubelab.progress import Reporter
from kubelab.transport import (
    LocalTarget,
    SSHTarget,
    Transport,
    TransportError,
    targets_from_ssh_config,
)
from kubelab.verify.checks import CheckResult, evaluate
from kubelab.verify.checks_hardway import collect_hardway
from kubelab.verify.collect import HOST, collect
from kubelab.verify.evidence import Evidence
from kubelab.verify.expect import DEFAULT_PHASES, Expected

if TYPE_CHECKING:
    from kubelab.labs import LabState


def expected_from_plan(
    plan: Plan,
    *,
    dns: bool = False,
    phases: tuple[str, ...] = DEFAULT_PHASES,
    language: str = "en",
    stages: list[str] | None = None,
) -> Expected:
    """`stages`: what built the lab (an exercise's start + solution); the plan's by default."""
    built = None if stages is None else tuple(stages)
    return Expected.from_spec(plan.spec, dns=dns, phases=phases, language=language, stages=built)


def default_evidence_dir(plan: Plan) -> Path:
    return plan.lab_dir / "evidence" / time.strftime("%Y%m%d-%H%M%S")


def verify_lab(
    plan: Plan,
    reporter: Reporter,
    *,
    dns: bool = False,
    evidence_out: Path | None = None,
    exercise: int | None = None,
    ssh_config: Path | None = None,
    state: LabState | None = None,
    replace: bool = False,
) -> tuple[Path, list[CheckResult]]:
    """Collect evidence from the running lab, then evaluate that folder.

    The VMs are reached through the ssh-config `invoke up` kept in the lab folder
    (one `vagrant ssh-config` when it is missing or no longer reaches them), or
    through `ssh_config` (the same format) for machines Vagrant does not manage;
    this machine itself, when it routes to the lab network, as the node HOST (it
    curls the NodePort). An exercise collects
    what its checks need (exercise 1: the node preparation, no cluster); `state`
    (the lab's exercise, from `invoke lab`) gives the hints' language and the
    snapshot restores the evidence lists. `replace`: overwrite `evidence_out`.
    """
    from kubelab.labs import load_exercise

    phases = load_exercise(exercise).phases if exercise else DEFAULT_PHASES
    language = state.language if state else "en"
    stages = None
    if exercise is not None:  # the exercise says what is built, whatever the config lists
        chosen = load_exercise(exercise)
        stages = [*chosen.start, *chosen.solution]
    expected = expected_from_plan(
        plan, dns=dns, phases=phases or DEFAULT_PHASES, language=language, stages=stages
    )
    out = evidence_out or default_evidence_dir(plan)
    if replace and out.is_dir():
        shutil.rmtree(out)
    with _transport(plan, ssh_config, reporter) as transport:
        if expected.hardway:
            folder = collect_hardway(
                transport,
                expected,
                out,
                lab_config=config_as_dict(plan.config),
                student_id=plan.config.student_id or None,
                exercise=exercise,
                spec=plan.spec.to_dict(),
            )
            return folder, evaluate(folder, expected)
        folder = collect(
            transport,
            expected,
            out,
            image=plan.spec.nginx_image,
            lab_config=config_as_dict(plan.config),
            student_id=plan.config.student_id or None,
            exercise=exercise,
            reporter=reporter,
            nodeport_from=HOST if HOST in transport.targets else None,
            restores=state.restores if state else (),
            spec=plan.spec.to_dict(),
        )
    return folder, evaluate(folder, expected)


def host_on_lab_network(plan: Plan) -> bool:
    """Whether this machine has an address on the lab network (libvirt's bridge gives it
    one), so it can reach the NodePort itself. A UDP connect only looks up the route:
    no packet is sent."""
    network = plan.spec.lab_network
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((plan.nodes[0].ip, 9))
        except OSError:
            return False
        return ipaddress.ip_address(probe.getsockname()[0]) in network


def _transport(plan: Plan, ssh_config: Path | None, reporter: Reporter) -> Transport:
    """One transport to every VM, and to this machine as HOST when it routes to the lab."""
    here = {HOST: LocalTarget(HOST)} if host_on_lab_network(plan) else {}
    if ssh_config is not None:
        return Transport({**_targets_from_file(plan, ssh_config), **here})
    return _lab_transport(plan, reporter, here)


def _lab_transport(plan: Plan, reporter: Reporter, here: dict[str, LocalTarget]) -> Transport:
    """The VMs through the ssh-config `up` kept (no Vagrant run), each asked up front
    for its private address; when the file is missing, a VM does not answer to it
    (halted, recreated) or another machine does, through one `vagrant ssh-config`,
    and the run says so."""
    from kubelab import lifecycle

    kept, why = lifecycle.kept_targets(plan)
    if kept:
        transport = Transport({**kept, **here})
        try:
            # Each VM answers, and is the lab's: its address may have gone to another VM.
            problems = [p for n in plan.nodes if (p := lifecycle.address_problem(transport, n))]
        except TransportError as exc:
            problems = [exc.message]
        if not problems:
            return transport
        transport.close()
        why = f"{lifecycle.ssh_config_path(plan)} does not reach the lab: {problems[0]}"
    reporter.info(escape(f"{why}; asking Vagrant (`vagrant ssh-config`)"))
    return Transport({**lifecycle.fresh_targets(plan), **here})


def _targets_from_file(plan: Plan, ssh_config: Path) -> dict[str, SSHTarget]:
    try:
        targets = targets_from_ssh_config(ssh_config.read_text())
    except OSError as exc:
        raise KubelabError(f"cannot read {ssh_config}: {exc.strerror}", code=2) from None
    missing = [n.name for n in plan.nodes if n.name not in targets]
    if missing:
        raise KubelabError(
            f"{ssh_config} has no Host entry for {', '.join(missing)}",
            hint="one `Host NAME` block per node of the lab config",
            code=2,
        )
    return {n.name: targets[n.name] for n in plan.nodes}


def reevaluate(folder: Path) -> tuple[Expected, list[CheckResult]]:
    """Evaluate a saved evidence folder against what it says was expected; no cluster."""
    if not (folder / "meta.json").is_file():
        raise KubelabError(
            f"{folder} is not an evidence folder (no meta.json)",
            hint="give the folder `invoke verify` wrote (see --evidence-out)",
            code=2,
        )
    try:
        raw = Evidence(folder).json("meta.json")
    except Exception as exc:  # noqa: BLE001 - unreadable or not JSON: one line either way
        raise KubelabError(f"{folder}/meta.json is unreadable: {exc}", code=2) from None
    try:
        expected = Expected.from_dict(raw["expected"])
    except (KeyError, TypeError, ValueError) as exc:
        raise KubelabError(
            f"{folder}/meta.json has no usable 'expected' section: {exc}",
            hint="the folder was not written by `invoke verify`",
            code=2,
        ) from None
    return expected, evaluate(folder, expected)
