"""verify for a lab of this host: the plan says what to expect, Vagrant how to reach it."""

from __future__ import annotations

import time
from pathlib import Path

from kubelab.config import config_as_dict
from kubelab.errors import KubelabError
from kubelab.plan import Plan
from kubelab.progress import Reporter
from kubelab.verify.checks import CheckResult, evaluate
from kubelab.verify.collect import collect
from kubelab.verify.evidence import Evidence
from kubelab.verify.expect import Deadlines, Expected, ExpectedNode


def expected_from_plan(plan: Plan, *, dns: bool = False) -> Expected:
    return Expected(
        nodes=tuple(
            ExpectedNode(name=n.hostname, role=n.role, private_ip=n.ip, machine=n.name)
            for n in plan.nodes
        ),
        kubernetes_version=plan.kubernetes["version"],
        pod_cidr=plan.kubernetes["pod_cidr"],
        dns=dns,
        cni=plan.kubernetes["cni"],
        deadlines=Deadlines(),
    )


def default_evidence_dir(plan: Plan) -> Path:
    return plan.lab_dir / "evidence" / time.strftime("%Y%m%d-%H%M%S")


def verify_lab(
    plan: Plan,
    reporter: Reporter,
    *,
    dns: bool = False,
    evidence_out: Path | None = None,
    exercise: int | None = None,
) -> tuple[Path, list[CheckResult]]:
    """Collect evidence from the running lab, then evaluate that folder."""
    from kubelab import lifecycle

    driver = lifecycle.driver_for(plan)
    if not (plan.lab_dir / "Vagrantfile").is_file():
        raise KubelabError(f"no lab at {plan.lab_dir}", hint="run `invoke up` first", code=2)
    states = driver.status()
    down = [n.name for n in plan.nodes if states.get(n.name) != lifecycle.RUNNING]
    if down:
        raise KubelabError(f"not running: {', '.join(down)}", hint="run `invoke up` first")
    expected = expected_from_plan(plan, dns=dns)
    out = evidence_out or default_evidence_dir(plan)
    with lifecycle.connect(plan, driver) as transport:
        folder = collect(
            transport, expected, out,
            image=plan.mirror["nginx_image"],
            lab_config=config_as_dict(plan.config),
            student_id=plan.config.student_id or None,
            exercise=exercise,
            reporter=reporter,
        )
    return folder, evaluate(folder, expected)


def reevaluate(folder: Path) -> tuple[Expected, list[CheckResult]]:
    """Evaluate a saved evidence folder against what it says was expected; no cluster."""
    if not (folder / "meta.json").is_file():
        raise KubelabError(f"{folder} is not an evidence folder (no meta.json)",
                           hint="give the folder `invoke verify` wrote (see --evidence-out)",
                           code=2)
    try:
        raw = Evidence(folder).json("meta.json")
    except Exception as exc:  # noqa: BLE001 - unreadable or not JSON: one line either way
        raise KubelabError(f"{folder}/meta.json is unreadable: {exc}", code=2) from None
    try:
        data = dict(raw["expected"])
        data["nodes"] = tuple(ExpectedNode(**n) for n in data["nodes"])
        data["deadlines"] = Deadlines(**data.get("deadlines", {}))
        expected = Expected(**data)
    except (KeyError, TypeError, ValueError) as exc:
        raise KubelabError(f"{folder}/meta.json has no usable 'expected' section: {exc}",
                           hint="the folder was not written by `invoke verify`", code=2) from None
    return expected, evaluate(folder, expected)
