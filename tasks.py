"""kubelab tasks: `invoke --list` shows them; `invoke --help TASK` explains one.

This file is wiring only: each task parses its flags, calls the package and
prints. Every user error ends as one line and a non-zero exit.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from invoke import Collection, Exit, task

from kubelab import ui
from kubelab.errors import ConfigError, KubelabError
from kubelab.plan import load_plan
from kubelab.progress import Reporter

ROOT = Path(__file__).resolve().parent
PY = sys.executable

CONFIG_HELP = {
    "config": "lab config file (default: lab.yaml beside tasks.py, else built-in defaults)",
    "lab_dir": "lab folder (default: .lab/<name> beside tasks.py)",
    "driver": "libvirt driver: kvm (default) or qemu (software emulation, no KVM)",
    "box": "Vagrant box name to use instead of the config's",
    "student": "student ID (hostnames carry it)",
}


def _help(*names: str, **extra: str) -> dict[str, str]:
    return {**{name: CONFIG_HELP[name] for name in names}, **extra}


def _user_errors(fn):
    """Turn a KubelabError into one line on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            ui.print_error(exc.message)
            raise Exit(code=exc.code) from None
        except KubelabError as exc:
            ui.print_error(exc.message, exc.hint)
            raise Exit(code=exc.code) from None
        except KeyboardInterrupt:
            ui.print_error("interrupted")
            raise Exit(code=130) from None

    return wrapper


def _plan(config=None, lab_dir=None, driver=None, box=None, student=None):
    overrides = {"libvirt.driver": driver, "box.name": box, "student_id": student}
    return load_plan(Path(config) if config else None, overrides, repo_root=ROOT,
                     lab_dir=Path(lab_dir) if lab_dir else None)


@task(help=_help("config", "driver", "box", "student",
                 out="folder to write (default: the lab folder)"))
@_user_errors
def render(c, config=None, out=None, driver=None, box=None, student=None):
    """Write the lab folder (Vagrantfile, scripts, manifest); start nothing."""
    from kubelab.render import render as render_files
    from kubelab.render import write_lab

    plan = _plan(config, out, driver, box, student)
    written = write_lab(render_files(plan), plan.lab_dir)
    ui.console.print(f"wrote {len(written)} files to {plan.lab_dir}")
    ui.console.print(f"next: read them, or `cd {plan.lab_dir} && vagrant up --no-provision`")


@task(help=_help("config", "lab_dir", "driver", "box", "student"))
@_user_errors
def up(c, config=None, lab_dir=None, driver=None, box=None, student=None):
    """Bring the lab up: boot the VMs in parallel, provision them, print a summary."""
    from kubelab import lifecycle

    plan = _plan(config, lab_dir, driver, box, student)
    result = lifecycle.up(plan, Reporter(ui.console))
    ui.console.print(ui.node_table(result.nodes, title=f"lab {plan.config.name}"))
    if result.timings:
        figures = ", ".join(f"{k} {v:.0f} s" for k, v in result.timings.items())
        ui.console.print(f"timings: {figures}")
    ui.console.print("next: `invoke verify` to prove the cluster works, or `invoke ssh master`")


@task(help=_help("config", "lab_dir", "driver", "box", "student"))
@_user_errors
def status(c, config=None, lab_dir=None, driver=None, box=None, student=None):
    """Show each VM of the lab: role, private IP, state."""
    from kubelab import lifecycle

    plan = _plan(config, lab_dir, driver, box, student)
    ui.console.print(ui.node_table(lifecycle.status(plan), title=f"lab {plan.config.name}"))


@task(help=_help("config", "lab_dir", "student", node="VM to log into: master, node1, ..."))
@_user_errors
def ssh(c, node, config=None, lab_dir=None, student=None):
    """Open a shell on one VM of the lab."""
    from kubelab import lifecycle

    plan = _plan(config, lab_dir, student=student)
    lifecycle.interactive_ssh(plan, plan.node(node).name)


@task(help=_help("config", "lab_dir", "student"))
@_user_errors
def halt(c, config=None, lab_dir=None, student=None):
    """Shut the lab's VMs down (they keep their disks; `invoke up` resumes)."""
    from kubelab import lifecycle

    plan = _plan(config, lab_dir, student=student)
    ui.console.print(ui.node_table(lifecycle.halt(plan, Reporter(ui.console))))


@task(help=_help("config", "lab_dir", "student", yes="do not ask for confirmation"))
@_user_errors
def destroy(c, config=None, lab_dir=None, student=None, yes=False):
    """Delete the lab's VMs, disks and network; report anything left behind."""
    from kubelab import lifecycle

    plan = _plan(config, lab_dir, student=student)
    if not yes and not ui.confirm(f"destroy every VM of lab {plan.config.name} ({plan.prefix}*)?"):
        raise Exit("not destroyed (pass --yes to skip the question)", code=1)
    left = lifecycle.destroy(plan, Reporter(ui.console))
    if left:
        raise Exit(f"left behind in libvirt: {', '.join(left)}", code=1)
    ui.console.print(f"lab {plan.config.name} destroyed: no domain, volume or network left")


@task(help=_help("config", "driver", "box", "student"))
@_user_errors
def doctor(c, config=None, driver=None, box=None, student=None):
    """Check this host can run the lab: one line per check, with a fix."""
    from kubelab import doctor as host_doctor

    plan = _plan(config, None, driver, box, student)
    findings = host_doctor.run_checks(plan)
    ui.console.print(ui.findings_table(findings))
    failed = [f.check for f in findings if f.status == "fail"]
    if failed:
        raise Exit(f"doctor: {len(failed)} check(s) failed: {', '.join(failed)}", code=1)


@task(help=_help(
    "config", "lab_dir", "student",
    dns="also check that the Service name resolves inside a pod",
    json="write the results as JSON to this file",
    junit="write the results as JUnit XML to this file",
    evidence_out="evidence folder to write (default: <lab>/evidence/<time>)",
    evidence="re-evaluate this saved evidence folder; contact no cluster",
    exercise="exercise number: score the run with its rubric and write a hand-in archive",
    ssh_config="reach the nodes through this ssh-config file instead of Vagrant",
))
@_user_errors
def verify(c, config=None, lab_dir=None, student=None, dns=False, json=None, junit=None,
           evidence_out=None, evidence=None, exercise=None, ssh_config=None):
    """Prove the cluster works: deploy nginx, curl every pod IP, ClusterIP and NodePort."""
    from kubelab.verify import lab as verify_lab
    from kubelab.verify import report

    if evidence:
        folder = Path(evidence)
        _, results = verify_lab.reevaluate(folder)
    else:
        plan = _plan(config, lab_dir, student=student)
        folder, results = verify_lab.verify_lab(
            plan, Reporter(ui.console), dns=dns,
            evidence_out=Path(evidence_out) if evidence_out else None,
            exercise=int(exercise) if exercise else None,
            ssh_config=Path(ssh_config) if ssh_config else None,
        )
    report.print_table(results, ui.console)
    if json:
        report.write_json(results, json)
    if junit:
        report.write_junit(results, junit)
    ui.console.print(f"evidence: {folder}")
    code = report.exit_code(results)
    if code:
        raise Exit(code=code)


@task(help={"e2e": "include the real-VM end-to-end tests (default: yes)",
            "k": "only tests matching this pytest -k expression"})
def test(c, e2e=True, k=None):
    """Run the whole test suite: lint, unit, integration and (with root) end to end."""
    c.run(f"{PY} -m ruff check kubelab tasks.py tests", pty=False)
    marker = "" if e2e else "-m 'not e2e'"
    select = f"-k {k!r}" if k else ""
    c.run(f"{PY} -m pytest {marker} {select} -p no:cacheprovider", pty=False)


@task
def golden(c):
    """Rewrite the golden files of rendered output after a deliberate template change."""
    c.run(f"{PY} tests/update_golden.py")


ns = Collection(render, up, status, ssh, halt, destroy, doctor, verify, test, golden)
