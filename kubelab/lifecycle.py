"""The lab's lifecycle: up, status, halt, destroy, as ordered lists of steps.

`up` is the list UP_STEPS, run top to bottom by one loop with one driver and one
transport (each step prints its status line and deadline):
  render     the lab folder from the plan (files already as rendered are not rewritten);
  status     ask Vagrant which VMs run;
  boot       the VMs that are not running, in parallel, without provisioning;
  connect    once per VM over SSH, every VM's settings from one `vagrant ssh-config`
             (kept in the lab folder as ssh-config);
  done       when nothing was booted: if every stage's marker is current, stop here;
  addresses  confirm each VM holds its private address;
  provision  run the stages (kubelab.provision).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kubelab import atomicfile
from kubelab.backend.libvirt_inspect import LibvirtInspector
from kubelab.backend.vagrant_driver import VagrantDriver
from kubelab.errors import KubelabError
from kubelab.plan import Plan, PlannedNode
from kubelab.progress import Reporter
from kubelab.provision import StageRunner
from kubelab.render import render, write_lab
from kubelab.transport import SSHTarget, Transport, targets_from_ssh_config

VAGRANT_LOG = "vagrant.log"
RUNNING = "running"
# Every VM's `vagrant ssh-config` block, as the last connect got them: `invoke verify`
# connects with it before it asks Vagrant again; for `ssh -F` and `verify --ssh-config`.
SSH_CONFIG = "ssh-config"


@dataclass(frozen=True)
class NodeStatus:
    name: str
    hostname: str
    role: str
    ip: str
    state: str


@dataclass(frozen=True)
class UpResult:
    nodes: list[NodeStatus]
    changed: bool
    timings: dict[str, float]


def vagrant_log(plan: Plan) -> Path:
    return plan.log_dir / VAGRANT_LOG


def serial_log(plan: Plan, node: PlannedNode) -> Path:
    return plan.log_dir / f"serial-{node.name}.log"


def driver_for(plan: Plan) -> VagrantDriver:
    plan.log_dir.mkdir(parents=True, exist_ok=True)
    return VagrantDriver(
        plan.lab_dir, vagrant_log(plan), env={"VAGRANT_DEFAULT_PROVIDER": "libvirt"}
    )


def inspector_for(plan: Plan) -> LibvirtInspector:
    return LibvirtInspector(plan.config.libvirt.uri)


def render_lab(plan: Plan) -> dict[str, str]:
    """Render the lab folder; a folder that already holds exactly these files is left
    untouched (a lab that is up is not rewritten)."""
    files = render(plan)
    if not lab_is_current(plan.lab_dir, files):
        write_lab(files, plan.lab_dir)
    plan.log_dir.mkdir(parents=True, exist_ok=True)
    return files


def lab_is_current(lab_dir: Path, files: Mapping[str, str]) -> bool:
    """Whether the folder holds every rendered file as rendered, and no other script."""
    scripts = lab_dir / "scripts"
    present = (
        {p.relative_to(lab_dir).as_posix() for p in scripts.rglob("*") if not p.is_dir()}
        if scripts.is_dir()
        else set()
    )
    if present != {rel for rel in files if rel.startswith("scripts/")}:
        return False
    try:
        return all((lab_dir / rel).read_text() == text for rel, text in files.items())
    except (OSError, UnicodeDecodeError):
        return False


def ssh_config_path(plan: Plan) -> Path:
    return plan.lab_dir / SSH_CONFIG


def connect(plan: Plan, driver: VagrantDriver) -> Transport:
    """One SSH target per VM, all from one `vagrant ssh-config` call (see ssh_targets)."""
    return Transport(ssh_targets(plan, driver))


def ssh_targets(plan: Plan, driver: VagrantDriver) -> dict[str, SSHTarget]:
    """Every VM's SSH target from one `vagrant ssh-config` call.

    The text is kept in the lab folder (private: it names the VMs' keys), written only
    when it changed, for `verify`, `ssh -F` and `kept_targets`.
    """
    text = driver.ssh_config()
    parsed = targets_from_ssh_config(text)
    missing = [n.name for n in plan.nodes if n.name not in parsed]
    if missing:
        raise KubelabError(
            f"vagrant gave no SSH settings for {', '.join(missing)}",
            hint=f"see {vagrant_log(plan)}",
        )
    _keep_private(ssh_config_path(plan), text)
    return {n.name: parsed[n.name] for n in plan.nodes}


def kept_targets(plan: Plan) -> tuple[dict[str, SSHTarget], str]:
    """The SSH targets the last `up` kept in the lab folder, with no Vagrant run; or
    none and why (no file, unreadable, a VM missing). Whether they still reach the
    VMs (a lab halted or recreated since) only connecting tells."""
    path = ssh_config_path(plan)
    try:
        parsed = targets_from_ssh_config(path.read_text())
    except FileNotFoundError:
        return {}, f"no {path} (`invoke up` keeps it)"
    except (OSError, UnicodeDecodeError) as exc:
        return {}, f"cannot read {path} ({exc})"
    except KubelabError as exc:
        return {}, f"{path} is unusable ({exc.message})"
    missing = [n.name for n in plan.nodes if n.name not in parsed]
    if missing:
        return {}, f"{path} has no entry for {', '.join(missing)}"
    return {n.name: parsed[n.name] for n in plan.nodes}, ""


def fresh_targets(plan: Plan) -> dict[str, SSHTarget]:
    """ssh_targets from the lab's Vagrant; when Vagrant cannot give them, the error
    names the VMs that are not running, if that is why."""
    driver = _existing_driver(plan)
    try:
        return ssh_targets(plan, driver)
    except KubelabError:
        running_driver(plan)  # raises "not running: ..." when a VM is down
        raise


def _keep_private(path: Path, text: str) -> None:
    """Write text to path (mode 0600, replaced whole) unless it already holds it."""
    try:
        if path.read_text() == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    atomicfile.write_atomic(path, text)


def confirm_addresses(plan: Plan, transport: Transport) -> None:
    """libvirt knows only the management (DHCP) address; ask each VM for its lab one."""
    for node in plan.nodes:
        problem = address_problem(transport, node)
        if problem:
            raise KubelabError(
                problem,
                hint="`invoke destroy --yes` then `invoke up`; if it persists, check the box's "
                "network setup in the serial log " + str(serial_log(plan, node)),
            )


def address_problem(transport: Transport, node: PlannedNode) -> str | None:
    """Why the machine the transport reaches as `node` does not hold node's private
    address, or None when it does (the lab's VM, not whatever took its old address)."""
    result = transport.run(node.name, "ip", "-4", "-o", "addr", "show", timeout=30)
    if f" {node.ip}/" in result.stdout:
        return None
    return (
        f"{node.name} does not hold its private address {node.ip}: "
        f"{result.stdout.strip()[-300:] or result.stderr.strip()[-300:]}"
    )


def summary(plan: Plan, states: dict[str, str]) -> list[NodeStatus]:
    return [
        NodeStatus(n.name, n.hostname, n.role, n.ip, states.get(n.name, "not created"))
        for n in plan.nodes
    ]


@dataclass
class UpRun:
    """What the steps of one `up` share: one driver, one transport, the states read once."""

    plan: Plan
    reporter: Reporter
    applied_by: Mapping[str, str] | None
    resources: contextlib.ExitStack
    driver: VagrantDriver | None = None
    files: dict[str, str] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)  # Vagrant's, as the run began
    down: list[str] = field(default_factory=list)
    transport: Transport | None = None
    # Each VM's finished stages, when the done step read its markers: provision reuses them.
    done: dict[str, dict[str, bool]] | None = None
    finished: bool = False  # a step found nothing left to do: the loop stops

    def connected(self) -> Transport:
        assert self.transport is not None, "the connect step runs before this one"
        return self.transport

    def vagrant(self) -> VagrantDriver:
        assert self.driver is not None, "the status step runs before this one"
        return self.driver


@dataclass(frozen=True)
class UpStep:
    """One step of `up`: its name (the key of its timing), its status line, its deadline
    (seconds, stated up front; None: the step's own commands carry theirs), what it does,
    and when it runs at all."""

    name: str
    title: Callable[[UpRun], str]
    action: Callable[[UpRun], None]
    deadline: Callable[[UpRun], float | None] = lambda run: None
    needed: Callable[[UpRun], bool] = lambda run: True
    timed: bool = False  # reported in UpResult.timings


def _render_step(run: UpRun) -> None:
    run.files = render_lab(run.plan)


def _status_step(run: UpRun) -> None:
    run.driver = driver_for(run.plan)
    run.states = run.driver.status()
    run.down = [n.name for n in run.plan.nodes if run.states.get(n.name) != RUNNING]


def _boot_step(run: UpRun) -> None:
    try:
        run.vagrant().up(vm_names=run.down, provision=False)
    except KubelabError as exc:
        raise _boot_failure(run.plan, run.vagrant(), run.down, exc) from None


def _connect_step(run: UpRun) -> None:
    run.transport = run.resources.enter_context(connect(run.plan, run.vagrant()))


def _done_step(run: UpRun) -> None:
    runner = StageRunner(run.plan, run.files, run.connected(), run.reporter)
    run.done = {n.name: runner.completed(n) for n in run.plan.nodes}
    if all(all(stages.values()) for stages in run.done.values()):
        run.reporter.info("the lab is up and provisioned: nothing to do")
        run.finished = True


def _addresses_step(run: UpRun) -> None:
    confirm_addresses(run.plan, run.connected())


def _provision_step(run: UpRun) -> None:
    with run.reporter.vms([n.name for n in run.plan.nodes]):
        runner = StageRunner(run.plan, run.files, run.connected(), run.reporter, run.applied_by)
        runner.run(done=run.done)


# `up`, top to bottom. Each step runs when `needed`; a step may end the run (`finished`).
UP_STEPS: tuple[UpStep, ...] = (
    UpStep("render", lambda run: f"render the lab folder {run.plan.lab_dir}", _render_step),
    UpStep("status", lambda run: "ask Vagrant which VMs run", _status_step),
    UpStep(
        "boot",
        lambda run: f"boot {', '.join(run.down)} in parallel",
        _boot_step,
        deadline=lambda run: run.plan.config.libvirt.boot_timeout,
        needed=lambda run: bool(run.down),
        timed=True,
    ),
    UpStep("connect", lambda run: "connect to each VM over SSH", _connect_step),
    UpStep(
        "done",
        lambda run: "read the stage markers",
        _done_step,
        needed=lambda run: not run.down,  # a VM just booted has stages to run or resume
    ),
    UpStep("addresses", lambda run: "confirm each VM's private address", _addresses_step),
    UpStep(
        "provision",
        lambda run: f"provision ({', '.join(s.name for s in run.plan.stages) or 'none'})",
        _provision_step,
        timed=True,
    ),
)


def up(plan: Plan, reporter: Reporter, applied_by: Mapping[str, str] | None = None) -> UpResult:
    """Run UP_STEPS in order with one driver and one transport."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    with contextlib.ExitStack() as resources:
        run = UpRun(plan, reporter, applied_by, resources)
        for step in UP_STEPS:
            if not step.needed(run):
                continue
            step_started = time.monotonic()
            with reporter.step(step.title(run), deadline=step.deadline(run)):
                step.action(run)
            if step.timed:
                timings[step.name] = time.monotonic() - step_started
            if run.finished:
                return UpResult(summary(plan, run.states), changed=False, timings={})
    timings["total"] = time.monotonic() - started
    return UpResult(summary(plan, run.vagrant().status()), changed=True, timings=timings)


def _boot_failure(
    plan: Plan, driver: VagrantDriver, tried: list[str], cause: KubelabError
) -> KubelabError:
    try:
        states = driver.status()
    except KubelabError:
        states = {}
    failed = [name for name in tried if states.get(name) != RUNNING] or tried
    logs = "; ".join(f"{name}: serial log {serial_log(plan, plan.node(name))}" for name in failed)
    return KubelabError(
        f"boot failed for {', '.join(failed)} ({logs}; vagrant log {vagrant_log(plan)})\n"
        f"{cause.message}",
        hint="fix the cause and run `invoke up` again: VMs already up are left as they are",
    )


def status(plan: Plan) -> list[NodeStatus]:
    if not (plan.lab_dir / "Vagrantfile").is_file():
        return summary(plan, {})
    return summary(plan, driver_for(plan).status())


def halt(plan: Plan, reporter: Reporter) -> list[NodeStatus]:
    driver = _existing_driver(plan)
    with reporter.step("halt the VMs"):
        driver.halt()
    return summary(plan, driver.status())


def destroy(plan: Plan, reporter: Reporter) -> list[str]:
    """Destroy the VMs; return what the lab left in libvirt (empty when clean)."""
    inspector = inspector_for(plan)
    if (plan.lab_dir / "Vagrantfile").is_file():
        driver = driver_for(plan)
        with reporter.step("destroy the VMs"):
            driver.destroy()
    with reporter.step("look for leftovers in libvirt"):
        left = inspector.leftovers(
            plan.prefix, [plan.network_name], plan.config.libvirt.storage_pool
        )
    return left


def _existing_driver(plan: Plan) -> VagrantDriver:
    if not (plan.lab_dir / "Vagrantfile").is_file():
        raise KubelabError(f"no lab at {plan.lab_dir}", hint="run `invoke up` first", code=2)
    return driver_for(plan)


def running_driver(plan: Plan, names: list[str] | None = None) -> VagrantDriver:
    """The lab's driver, once Vagrant says every VM named (default: all) is running."""
    driver = _existing_driver(plan)
    states = driver.status()
    wanted = names or [n.name for n in plan.nodes]
    down = [name for name in wanted if states.get(name) != RUNNING]
    if down:
        raise KubelabError(f"not running: {', '.join(down)}", hint="run `invoke up` first")
    return driver


def interactive_ssh(plan: Plan, node_name: str) -> None:
    """Replace this process with `vagrant ssh NODE`: a terminal session needs the real TTY."""
    running_driver(plan, [node_name])
    os.chdir(plan.lab_dir)
    os.execvp("vagrant", ["vagrant", "ssh", node_name])
