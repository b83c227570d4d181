"""kubelab tasks: `invoke --list` shows them; `invoke --help TASK` explains one.

This file is wiring only: each task parses its flags, calls the package and
prints. Every user error ends as one line and a non-zero exit.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

from invoke import Collection, Exit, task

from kubelab import ui
from kubelab.errors import ConfigError, KubelabError
from kubelab.progress import Reporter

# kubelab.plan (the config's pydantic models) is imported by the tasks that load a lab,
# not here: `invoke --list`, `--help`, lint and test start without it.

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


# The exercise of the lab the running task works on (set by _exercise_plan), so that no
# hint in an exercise lab sends the student to `invoke up`, which applies the solution.
_exercise_lab: dict[str, int] = {}


def _hint(hint: str) -> str:
    if "exercise" in _exercise_lab and "invoke up" in hint:
        return hint.replace("invoke up", f"invoke lab --exercise {_exercise_lab['exercise']}")
    return hint


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
            ui.print_error(exc.message, _hint(exc.hint))
            raise Exit(code=exc.code) from None
        except KeyboardInterrupt:
            ui.print_error("interrupted")
            raise Exit(code=130) from None

    return wrapper


def _plan(config=None, lab_dir=None, driver=None, box=None, student=None, stages=None):
    """The lab's plan. A lab started for an exercise (`invoke lab`) lives in the folder
    without the student suffix and remembers its student: every task finds it so."""
    return _exercise_plan(config, lab_dir, driver, box, student, stages)[0]


def _exercise_plan(config=None, lab_dir=None, driver=None, box=None, student=None, stages=None):
    """(plan, the lab's exercise state or None)."""
    from kubelab.lab_state import read_state
    from kubelab.plan import load_plan

    overrides = {
        "libvirt.driver": driver,
        "box.name": box,
        "student_id": student,
        "provision.stages": stages,
    }
    if box:
        # A box given by name (imported or built here) has no Vagrant Cloud version.
        overrides["box.version"] = ""
    config_path = Path(config) if config else None
    folder = Path(lab_dir) if lab_dir else None
    shared = load_plan(
        config_path, {**overrides, "student_id": None}, repo_root=ROOT, lab_dir=folder
    )
    state = read_state(shared.lab_dir)
    if state is None:
        if student is None:  # the same config, flags and folder: the plan just made
            return shared, None
        return load_plan(config_path, overrides, repo_root=ROOT, lab_dir=folder), None
    if student and student != state.student:
        raise KubelabError(
            f"the lab in {shared.lab_dir} is student {state.student}'s (exercise {state.exercise})",
            hint="leave out --student, or use another --lab-dir for another student",
            code=2,
        )
    overrides["student_id"] = state.student
    _exercise_lab["exercise"] = state.exercise
    plan = load_plan(
        config_path, overrides, repo_root=ROOT, lab_dir=shared.lab_dir, exercise=state.exercise
    )
    return plan, state


@task(
    help=_help(
        "config", "driver", "box", "student", out="folder to write (default: the lab folder)"
    )
)
@_user_errors
def render(c, config=None, out=None, driver=None, box=None, student=None):
    """Write the lab folder (Vagrantfile, scripts, manifest); start nothing."""
    from kubelab.render import render as render_files
    from kubelab.render import write_lab

    plan = _plan(config, out, driver, box, student)
    written = write_lab(render_files(plan), plan.lab_dir)
    ui.print_line(f"wrote {len(written)} files to {plan.lab_dir}")
    ui.print_line(f"next: read them, or `cd {plan.lab_dir} && vagrant up --no-provision`")


@task(
    help=_help(
        "config",
        "lab_dir",
        "driver",
        "box",
        "student",
        yes="in a lab started for an exercise: build the whole cluster anyway",
    )
)
@_user_errors
def up(c, config=None, lab_dir=None, driver=None, box=None, student=None, yes=False):
    """Bring the lab up: boot the VMs in parallel, provision them, print a summary."""
    from kubelab import labs, lifecycle

    plan, state = _exercise_plan(config, lab_dir, driver, box, student)
    if state is not None:
        question = labs.up_warning(plan, state)
        if not yes and not ui.confirm(question):
            raise Exit(
                f"{question.splitlines()[0]}\nnot done; to build it anyway: invoke up --yes",
                code=2,
            )
    result = lifecycle.up(plan, Reporter(ui.console))
    ui.console.print(ui.node_table(result.nodes, title=f"lab {plan.config.name}"))
    if result.timings:
        figures = ", ".join(f"{k} {v:.0f} s" for k, v in result.timings.items())
        ui.console.print(f"timings: {figures}")
    if state is not None:
        ui.console.print(
            f"next: {labs.next_commands(labs.load_exercise(state.exercise), state)[1]}"
        )
    else:
        ui.console.print("next: `invoke verify` to prove the cluster works, or `invoke ssh master`")


@task(help=_help("config", "lab_dir", "driver", "box", "student"))
@_user_errors
def status(c, config=None, lab_dir=None, driver=None, box=None, student=None):
    """Show each VM of the lab: role, private IP, state."""
    from kubelab import lifecycle

    plan = _plan(config, lab_dir, driver, box, student)
    ui.console.print(ui.node_table(lifecycle.status(plan), title=f"lab {plan.config.name}"))


@task(
    positional=["node"],
    help=_help("config", "lab_dir", "student", node="VM to log into: master, node1, ..."),
)
@_user_errors
def ssh(c, node, config=None, lab_dir=None, student=None):
    """Open a shell on one VM of the lab."""
    from kubelab import lifecycle

    if node in ("-h", "--help"):  # a positional argument would otherwise swallow --help
        os.execv(PY, [PY, "-m", "invoke", "--help", "ssh"])

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

    plan, state = _exercise_plan(config, lab_dir, student=student)
    if not yes and not ui.confirm(f"destroy every VM of lab {plan.config.name} ({plan.prefix}*)?"):
        raise Exit("not destroyed (pass --yes to skip the question)", code=1)
    if state is not None:  # the exercise's start snapshots go first
        lifecycle.inspector_for(plan).delete_snapshots(plan.prefix)
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


@task(
    help=_help(
        "config",
        "lab_dir",
        "student",
        dns="also check that the Service name resolves inside a pod",
        json="write the results as JSON to this file",
        junit="write the results as JUnit XML to this file",
        evidence_out="evidence folder to write (default: <lab>/evidence/<time>)",
        evidence="re-evaluate this saved evidence folder; contact no cluster",
        exercise="exercise number: score the run with its rubric and write a hand-in archive",
        ssh_config="reach the nodes through this ssh-config file (default: the one `invoke up` "
        "kept in the lab folder, else `vagrant ssh-config`)",
    )
)
@_user_errors
def verify(
    c,
    config=None,
    lab_dir=None,
    student=None,
    dns=False,
    json=None,
    junit=None,
    evidence_out=None,
    evidence=None,
    exercise=None,
    ssh_config=None,
):
    """Prove the cluster works: deploy nginx, curl every pod IP, ClusterIP and NodePort."""
    from kubelab.verify import lab as verify_lab
    from kubelab.verify import report

    if evidence:
        folder = Path(evidence)
        _, results = verify_lab.reevaluate(folder)
    else:
        plan, state = _exercise_plan(config, lab_dir, student=student)
        if state is not None:
            # The lab's exercise and student, remembered by `invoke lab`.
            exercise = exercise or state.exercise
            student = student or state.student
        folder, results = verify_lab.verify_lab(
            plan,
            Reporter(ui.console),
            dns=dns,
            evidence_out=Path(evidence_out) if evidence_out else None,
            exercise=int(exercise) if exercise else None,
            ssh_config=Path(ssh_config) if ssh_config else None,
            state=state,
        )
    report.print_table(results, ui.console)
    if exercise:
        hand_in_dir = folder.parent if evidence else plan.lab_dir
        _hand_in(folder, results, student, exercise, hand_in_dir)
    if json:
        report.write_json(results, json)
    if junit:
        report.write_junit(results, junit)
    ui.console.print(f"evidence: {folder}")
    code = report.exit_code(results)
    if code:
        raise Exit(code=code)


@task(
    name="lab",
    auto_shortflags=False,
    help=_help(
        "config",
        "lab_dir",
        "driver",
        "box",
        "student",
        exercise="exercise number (see --list); default: the lab's current exercise",
        print="print the exercise's manual only: no VM is touched",
        check="check the current exercise step by step while you work (no hand-in)",
        reset="bring every VM back to the exercise's start state (snapshot)",
        solve="apply the reference solution (the exercise will then not count)",
        list="list the exercises",
        lang="language of the manual and hints: en or zh",
        yes="do not ask before --solve",
    ),
)
@_user_errors
def lab_task(
    c,
    exercise=None,
    solve=False,
    list=False,
    lang=None,
    config=None,
    lab_dir=None,
    driver=None,
    box=None,
    student=None,
    print=False,
    check=False,
    reset=False,
    yes=False,
):
    """Bring the lab to an exercise's start, print its manual; --check, --reset, --solve."""
    from kubelab import labs

    # Every flag is checked before anything boots.
    if lang is not None and lang not in labs.LANGUAGES:
        raise Exit(f"--lang must be one of {', '.join(labs.LANGUAGES)}, not {lang!r}", code=2)
    if sum(map(bool, (print, check, reset, solve))) > 1:
        raise Exit("give one of --print, --check, --reset, --solve", code=2)
    if list:
        ui.console.print(ui.exercise_table(labs.list_exercises(), lang or "en"))
        return
    chosen = labs.load_exercise(exercise) if exercise else None
    plan, state = _exercise_plan(config, lab_dir, driver, box, student)
    if chosen is None and state is None:
        ui.console.print(ui.exercise_table(labs.list_exercises(), lang or "en"))
        raise Exit("give --exercise N (or --list)", code=2)
    chosen = chosen or labs.load_exercise(state.exercise)
    language = lang or (state.language if state else "en")
    if print:
        ui.print_manual(chosen, labs.manual_text(chosen, plan, language), language)
        return
    if state is not None and state.exercise != chosen.number and (check or reset or solve):
        raise Exit(
            f"this lab was started for exercise {state.exercise}, not {chosen.number}", code=2
        )
    reporter = Reporter(ui.console)
    if check or reset:
        if state is None:
            raise Exit(
                f"this lab was not started for an exercise: invoke lab --exercise "
                f"{chosen.number} --student ID",
                code=2,
            )
        if reset:
            state, took = labs.reset(plan, state, reporter)
            ui.console.print(
                f"exercise {chosen.number}: every VM is back at its start state "
                f"({took:.0f} s); next: invoke lab --check"
            )
            return
        _check(plan, chosen, state, language)
        return
    if solve:
        warning = labs.solve_warning(chosen)
        ui.console.print(warning)
        if not yes and not ui.confirm("apply the reference solution?"):
            raise Exit("not applied; to apply it anyway: add --yes", code=2)
        from kubelab import lifecycle

        stages = [*chosen.start, *chosen.solution]
        solve_plan = _plan(config, lab_dir, driver, box, student, stages=stages)
        lifecycle.up(solve_plan, reporter, labs.applied_by(chosen, solve=True))
        ui.console.print(f"solution applied ({', '.join(chosen.solution)}): {warning}")
        return
    student_id = student or (state.student if state else "")
    if not student_id:
        raise Exit(
            f"give your student ID: invoke lab --exercise {chosen.number} --student ID", code=2
        )
    if state is not None and state.exercise == chosen.number and state.snapshot:
        # Started already: the snapshot stays the start state; the student's work stays.
        # VMs that are down boot again, with no stage beyond the start (all done already).
        from kubelab import lifecycle

        boot_plan = _plan(config, lab_dir, driver, box, student, stages=[*chosen.start])
        lifecycle.up(boot_plan, reporter, labs.applied_by(chosen, solve=False))
        ui.print_manual(chosen, labs.manual_text(chosen, plan, language), language)
        ui.console.print(f"exercise {chosen.number} was started at {state.started_at}; next:")
        for line in labs.next_commands(chosen, state):
            ui.console.print(f"  {line}", markup=False)
        return
    labs.refuse_past_start(chosen, labs.applied_stages(plan))
    from kubelab.plan import load_plan

    start_plan = load_plan(
        Path(config) if config else None,
        {
            "libvirt.driver": driver,
            "box.name": box,
            "student_id": student_id,
            "provision.stages": [*chosen.start],
            **({"box.version": ""} if box else {}),
        },
        repo_root=ROOT,
        lab_dir=plan.lab_dir if state else _shared_lab_dir(config, lab_dir),
        exercise=chosen.number,
    )
    state = labs.start(
        start_plan,
        chosen,
        labs.LabState(chosen.number, student_id, language),
        reporter,
    )
    from kubelab import lifecycle

    ui.console.print(ui.node_table(lifecycle.status(start_plan), title=f"lab {plan.config.name}"))
    text = labs.manual_text(chosen, start_plan, language)
    labs.manual_file(start_plan, chosen, language).write_text(text + "\n", encoding="utf-8")
    ui.print_manual(chosen, text, language)
    ui.console.print("next:")
    for line in labs.next_commands(chosen, state):
        ui.console.print(f"  {line}", markup=False)


def _shared_lab_dir(config, lab_dir):
    """The lab folder an exercise lab lives in: the one without the student suffix."""
    from kubelab.plan import load_plan

    return load_plan(
        Path(config) if config else None,
        {"student_id": None},
        repo_root=ROOT,
        lab_dir=Path(lab_dir) if lab_dir else None,
    ).lab_dir


def _check(plan, exercise, state, language):
    """verify's checks of the exercise, shown by the manual's steps; no hand-in."""
    from kubelab import labs
    from kubelab.verify import lab as verify_lab

    folder, results = verify_lab.verify_lab(
        plan,
        Reporter(ui.console),
        evidence_out=plan.lab_dir / "check",
        exercise=exercise.number,
        state=state,
        replace=True,
    )
    ui.console.print(ui.steps_table(labs.step_rows(exercise, results), exercise.number))
    done = sum(r.passed for r in results)
    ui.console.print(
        f"{done}/{len(results)} steps done; hand in with: "
        + " ".join(["invoke verify --exercise", str(exercise.number), "--student", state.student]),
        markup=False,
    )


def _hand_in(folder, results, student, exercise, out_dir):
    from kubelab.grade import grade_evidence, load_rubric, make_handin, score_table

    if not student:
        raise Exit("--exercise needs --student ID: the hand-in carries it", code=2)
    rubric = load_rubric(exercise)
    grade = grade_evidence(folder, student, rubric)
    ui.console.print(score_table(grade, width=ui.console.width))
    archive = make_handin(folder, results, student, exercise, out_dir, rubric=rubric)
    ui.console.print(f"hand-in archive: {archive}")


@task(
    help={
        "handins": "folder of hand-in archives (kubelab-ex<N>-<ID>.tar.gz) to grade",
        "exercise": "exercise number whose rubric grades (labs/rubrics/<N>.yaml)",
        "inventory": "grade live clusters listed in this inventory file instead",
        "out": "output folder (default: grades-ex<N> beside tasks.py)",
        "since": "flag evidence older than this date (YYYY-MM-DD)",
        "roster": "CSV student_id,name,... (UTF-8): names on the page, LMS IDs in the exports; "
        "a student without a hand-in becomes an error row",
        "gradescope": "also write per student the results.json the Gradescope autograder "
        "would report (to review; Gradescope itself takes --gradescope-bundle)",
        "due": "flag hand-ins finished or saved after this time (2025-03-01T23:59+08:00)",
        "student": "re-grade only this student; the others keep their last results",
        "gradescope_bundle": "write autograder.zip for Gradescope (grades each submission "
        "with this rubric) into the output folder, and grade nothing",
        "concurrency": "live: clusters graded at once (default 16)",
        "deadline": "live: seconds per cluster (default 600)",
        "force": "live: regrade students already graded",
    },
)
@_user_errors
def grade(
    c,
    handins="",
    exercise=2,
    inventory=None,
    out=None,
    since=None,
    roster=None,
    gradescope=False,
    concurrency=16,
    deadline=600,
    force=False,
    due=None,
    student=None,
    gradescope_bundle=False,
):
    """Grade a class: hand-in archives from a folder, or live clusters from an inventory."""
    from kubelab.grade import grade_handins, grade_inventory
    from kubelab.grade.gradescope import write_bundle

    out_dir = Path(out) if out else ROOT / f"grades-ex{exercise}"
    if gradescope_bundle:
        bundle = write_bundle(out_dir / "autograder.zip", int(exercise))
        ui.console.print(f"Gradescope autograder: {bundle} (upload it as the assignment's zip)")
        return

    if bool(handins) == bool(inventory):
        raise Exit("give either a folder of hand-ins or --inventory FILE (not both)", code=2)
    if inventory and (due or student):
        raise Exit("--due and --student work with a folder of hand-ins (--handins)", code=2)
    if inventory:
        report = grade_inventory(
            inventory,
            int(exercise),
            out_dir,
            int(concurrency),
            float(deadline),
            force,
            gradescope=gradescope,
            console=ui.console,
        )
    else:
        report = grade_handins(
            handins,
            int(exercise),
            out_dir,
            since,
            gradescope,
            roster=roster,
            due=due,
            student=student,
        )
    # One line per student, as written: no wrapping, no markup (errors may hold "[...]").
    ui.console.print(report.summary(), soft_wrap=True, markup=False, highlight=False)


BOX_CACHE = Path(os.environ.get("KUBELAB_BOX_CACHE", Path.home() / ".cache/kubelab/boxes"))


def _box_backend():
    from kubelab.backend.vagrant_driver import VagrantDriver

    BOX_CACHE.mkdir(parents=True, exist_ok=True)
    return VagrantDriver(Path.cwd(), BOX_CACHE / "vagrant.log")


@task(name="list")
@_user_errors
def box_list(c):
    """List the Vagrant boxes installed on this host."""
    from kubelab import boxes

    ui.console.print(ui.box_table(boxes.list_boxes(_box_backend())))


@task(
    name="import",
    help={
        "file": "the .box file (from your teacher)",
        "name": "name to give the box (then: invoke up --box NAME)",
    },
)
@_user_errors
def box_import(c, file, name):
    """Add a .box file to Vagrant under a name: the offline way to get a box."""
    from kubelab import boxes

    boxes.import_box(_box_backend(), Path(file), name)
    ui.console.print(f"box {name} added; next: invoke up --box {name}")


@task(
    name="remove",
    help={
        "name": "the box to remove",
        "uri": "libvirt URI (default qemu:///system)",
        "pool": "storage pool holding the box image (default: default)",
    },
)
@_user_errors
def box_remove(c, name, uri="qemu:///system", pool="default"):
    """Remove a box from Vagrant and its base image from the libvirt pool."""
    from kubelab import boxes
    from kubelab.backend.libvirt_inspect import LibvirtInspector

    deleted = boxes.remove_box(_box_backend(), name, LibvirtInspector(uri), pool)
    volumes = f" and {', '.join(deleted)} from pool {pool}" if deleted else ""
    ui.console.print(f"removed box {name}{volumes}")


@task(
    name="build",
    help={
        "distro": "what to build from (debian12)",
        "name": "name to add the box under",
        "force": "rebuild even if a box of the same recipe is cached",
        "variant": "centos7-quirks: a Debian box that behaves like CentOS 7 where labs break "
        "(sshd PATH without sbin, nss-myhostname, sudo secure_path, RSA-only authorized_keys)",
    },
)
@_user_errors
def box_build(c, distro="debian12", name="kubelab/debian12", force=False, variant=""):
    """Build a small libvirt box offline from Debian packages and add it (needs root)."""
    from kubelab import boxes

    built = boxes.build_box(
        _box_backend(),
        distro,
        name,
        BOX_CACHE,
        BOX_CACHE / "build.log",
        force=force,
        variant=variant,
    )
    ui.console.print(
        f"built {built} and added it as {name}; next: invoke up --box {name} "
        f"(with box.guest: {distro})"
    )


@task(
    help={
        "clusters": "students in the synthetic class (2 hosts each)",
        "concurrency": "clusters graded at once",
    }
)
def bench_grade(c, clusters=50, concurrency=16):
    """Benchmark: grade 100 sshd hosts concurrently vs one at a time (needs root)."""
    script = ROOT / "tests" / "grade" / "bench_live.py"
    c.run(f"{PY} {script} --clusters {clusters} --concurrency {concurrency}", pty=False)


@task(
    help={
        "runs": "in-process renders timed (the median is printed)",
        "process_runs": "`invoke render` processes timed (best and median printed)",
    }
)
def bench_render(c, runs=20, process_runs=10):
    """Benchmark: render the default lab in-process and `invoke render` as a whole process."""
    script = ROOT / "tests" / "bench_render.py"
    c.run(f"{PY} {script} --runs {int(runs)} --process-runs {int(process_runs)}", pty=False)


@task(help={"count": "commands timed each way"})
def bench_transport(c, count=40):
    """Benchmark: a command over the kept SSH connection, a new one, an ssh process (root)."""
    c.run(f"{PY} {ROOT / 'tests' / 'bench_transport.py'} --count {int(count)}", pty=False)


@task
def bench_boot(c):
    """Benchmark on real VMs: box, boot per VM, up, destroy, parallel vs one by one (root)."""
    c.run(f"{PY} {ROOT / 'tests' / 'e2e' / 'bench_boot.py'}", pty=False)


@task
def bench_verify(c):
    """Benchmark on real VMs: verify's commands via the Transport vs `vagrant ssh -c` (root)."""
    c.run(f"{PY} {ROOT / 'tests' / 'e2e' / 'bench_verify.py'}", pty=False)


@task
def lint(c):
    """Lint and type-check: ruff check, ruff format --check, mypy on the package."""
    c.run(f"{PY} -m ruff check kubelab tasks.py tests", pty=False)
    c.run(f"{PY} -m ruff format --check kubelab tasks.py tests", pty=False)
    c.run(f"{PY} -m mypy kubelab", pty=False)


@task(
    help={
        "e2e": "include the real-VM end-to-end tests (default: yes)",
        "k": "only tests matching this pytest -k expression",
        "durations": "list the N slowest tests of each run at the end (CI shows 25)",
        "workers": "pytest-xdist workers for the tests without VMs (default: auto, one per "
        "CPU and one more; 0: one process)",
    }
)
def test(c, e2e=True, k=None, durations=0, workers="auto"):
    """Run the whole test suite: lint, unit, integration and (with root) end to end."""
    import importlib.util
    import subprocess

    # Python writes bytecode for the runs below, whatever the caller's environment says
    # (a CI harness may set PYTHONDONTWRITEBYTECODE): then each xdist worker and the VM
    # run read kubelab's and the tests' compiled (and assert-rewritten) modules instead of
    # compiling them again, about 7.5 s to 2.9 s of each process's start here.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    # That bytecode is written by one collection beside lint (mypy uses one core of our
    # two), not by every worker at once. Its output and result are not needed: the run
    # after it collects again and reports any error.
    compiling = subprocess.Popen(
        [PY, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lint(c)
    except BaseException:
        compiling.kill()
        raise
    finally:
        compiling.wait()
    common = "-p no:cacheprovider"
    if k:
        common += f" -k {k!r}"
    if durations:
        common += f" --durations={int(durations)}"
    parallel = ""
    if str(workers) != "0":
        if importlib.util.find_spec("xdist") is None:
            print("pytest-xdist is not installed: one process (./install.sh --test installs it)")
        else:
            # One worker more than CPUs: many tests wait (sshd hosts, libvirtd, a timeout
            # they prove), and the extra worker computes meanwhile. On our 2-core machine,
            # the tests without VMs: 334 s on 3 workers, 393 s on 2, the same CPU (595 s).
            if workers == "auto":
                workers = (os.cpu_count() or 1) + 1
            # Tests sharing a module fixture stay on one worker (tests/conftest.py).
            parallel = f"-n {workers} --dist loadgroup"

    # The tests without VMs first, spread over the workers; then the VM tests in one
    # process of their own, in the order of the lab's life (tests/e2e/conftest.py).
    def pytest(args: str):  # an invoke Result
        return c.run(
            f"{PY} -m pytest {args} {common}", pty=False, warn=True, env=env, replace_env=True
        )

    runs = [pytest(f"-m 'not e2e' {parallel}")]
    if e2e:
        runs.append(pytest("-m e2e"))
    codes = [run.exited for run in runs]
    # 5: nothing collected (a -k that selects only VM tests, or none of them), not a failure.
    failed = [code for code in codes if code not in (0, 5)]
    if failed:
        raise Exit(code=failed[0])
    if all(code == 5 for code in codes):
        raise Exit("no test matched", code=5)


@task
def golden(c):
    """Rewrite the golden files of rendered output after a deliberate template change."""
    c.run(f"{PY} {ROOT / 'tests' / 'update_golden.py'}")


# --- a class on several libvirt hosts (kubelab.classroom) -------------------------------

CLASS_HELP = {
    "hosts": "the file listing the libvirt hosts (default: hosts.yaml beside tasks.py)",
    "class_dir": "class folder (default: .class beside tasks.py)",
    "config": "the class's lab config (default: lab.yaml beside tasks.py, else defaults)",
}


def _class_help(*names: str, **extra: str) -> dict[str, str]:
    return {**{name: CLASS_HELP[name] for name in names}, **extra}


def _class_paths(class_dir):
    from kubelab.classroom.state import ClassPaths

    return ClassPaths(Path(class_dir) if class_dir else ROOT / ".class")


def _class(hosts, class_dir):
    """The class folder and its hosts, every derived fact made once."""
    from kubelab.classroom.hosts import load_hosts
    from kubelab.classroom.seating import class_host
    from kubelab.classroom.state import prepare

    paths = _class_paths(class_dir)
    prepare(paths)
    specs, base_dir = load_hosts(Path(hosts) if hosts else ROOT / "hosts.yaml")
    return paths, {s.name: class_host(s, base_dir, paths) for s in specs}


def _class_config(config, stages=None):
    from kubelab.config import load_config

    return load_config(
        Path(config) if config else None, {"provision.stages": stages}, search_dir=ROOT
    )


def _class_outcomes(name, title, outcomes, *lines, rerun=False):
    """One row per student, the figures, then exit 1 naming every student that failed."""
    from kubelab.classroom import tables

    ui.console.print(tables.outcomes_table(title, outcomes))
    for line in lines:
        ui.console.print(line)
    failed = [o.student for o in outcomes if not o.ok]
    if failed:
        more = " (rerun continues)" if rerun else ""
        raise Exit(f"{name}: failed for {', '.join(failed)}{more}", code=1)


def _vagrant_home() -> Path:
    return Path(os.environ.get("VAGRANT_HOME", Path.home() / ".vagrant.d"))


@task(name="hosts", help=_class_help("hosts", "class_dir", "config"))
@_user_errors
def class_hosts(c, hosts=None, class_dir=None, config=None):
    """Check each libvirt host: reachable, host key pinned, libvirtd, box, free capacity."""
    from kubelab.classroom import run, tables

    paths, hosts_by_name = _class(hosts, class_dir)
    checks = run.check_hosts(hosts_by_name.values(), paths, _class_config(config).box.name)
    ui.console.print(tables.hosts_table(checks.values()))
    bad = [name for name, check in checks.items() if not check.ok]
    if bad:
        raise Exit(f"class.hosts: not usable: {', '.join(bad)}", code=1)


@task(
    name="up",
    help=_class_help(
        "hosts",
        "class_dir",
        "config",
        roster="CSV or list of student IDs (first column)",
        exercise="exercise number: every lab starts at it (its stages)",
        parallel="labs brought up at once (default 8)",
        plan_only="print the hosts and the placement, then stop (nothing is saved or booted)",
    ),
)
@_user_errors
def class_up(
    c, roster, hosts=None, exercise=None, config=None, class_dir=None, parallel=8, plan_only=False
):
    """Place each student's whole lab on a host by capacity, print the plan, bring all up."""
    from kubelab import labs
    from kubelab.classroom import run, tables
    from kubelab.classroom.grading import write_inventory
    from kubelab.classroom.state import save_seats
    from kubelab.grade.roster import load_roster

    started = time.monotonic()
    paths, hosts_by_name = _class(hosts, class_dir)
    chosen = labs.load_exercise(exercise) if exercise else None
    stages = list(chosen.start) if chosen else None
    base = _class_config(config, stages)
    students = list(load_roster(roster).students)
    if not students:
        raise Exit(f"roster {roster} names no student", code=2)
    checks = run.check_hosts(hosts_by_name.values(), paths, base.box.name)
    ui.console.print(tables.hosts_table(checks.values()))
    placement, seats = run.plan_class(base, students, hosts_by_name, checks, paths)
    boot = run.boot_files_for(run.box_folder(base, _vagrant_home()))
    configs = run.student_configs(base, seats, students, hosts_by_name, boot, stages)
    networks = {s: cfg.network.cidr for s, cfg in configs.items()}
    ui.console.print(tables.placement_table(placement, seats, networks))
    if plan_only:
        return
    save_seats(paths, seats)  # before any boot: class.down finds every lab even after a crash
    outcomes, uploads = run.class_up(
        paths,
        hosts_by_name,
        checks,
        configs,
        seats,
        boot,
        Reporter(ui.console),
        int(parallel),
        exercise=chosen,
    )
    no_access = run.write_ssh_configs(paths, hosts_by_name)
    write_inventory(paths, hosts_by_name)  # its keys stay known if a host dies later
    for outcome in outcomes:
        if outcome.ok and outcome.student in no_access:
            outcome.ok = False
            outcome.detail = f"up, but no student access: {no_access[outcome.student]}"
    figures = ", ".join(f"{h} {s:.1f} s" for h, s in sorted(uploads.items()))
    _class_outcomes(
        "class.up",
        "class up",
        outcomes,
        f"boot files uploaded: {figures or 'none needed'}",
        f"class up in {time.monotonic() - started:.0f} s",
        rerun=True,
    )


@task(name="status", help=_class_help("hosts", "class_dir"))
@_user_errors
def class_status(c, hosts=None, class_dir=None):
    """Each student's lab: host, lab network, VM states (a dead host names its labs)."""
    from kubelab.classroom import run, tables

    paths, hosts_by_name = _class(hosts, class_dir)
    rows = run.class_status(paths, hosts_by_name)
    ui.console.print(tables.status_table(rows))
    failed = [r.student for r in rows if r.error]
    if failed:
        raise Exit(f"class.status: no answer for {', '.join(failed)}", code=1)


@task(name="verify", help=_class_help("hosts", "class_dir"))
@_user_errors
def class_verify(c, hosts=None, class_dir=None):
    """Reach every VM of every lab through its host, concurrently: hostname and addresses."""
    from kubelab.classroom import run

    paths, hosts_by_name = _class(hosts, class_dir)
    started = time.monotonic()
    outcomes = run.class_reach(paths, hosts_by_name, "hostname; hostname -I")
    _class_outcomes(
        "class.verify",
        "class verify (reach)",
        outcomes,
        f"class verify in {time.monotonic() - started:.1f} s",
    )


@task(
    name="grade",
    help=_class_help(
        "hosts",
        "class_dir",
        exercise="the exercise to grade (its rubric)",
        out_dir="where the gradebook goes (default: grades/ in the class folder)",
        concurrency="clusters graded at once (default 16)",
        deadline="seconds per cluster (default 600)",
        force="regrade students already graded",
    ),
)
@_user_errors
def class_grade(
    c, exercise, hosts=None, class_dir=None, out_dir=None, concurrency=16, deadline=600, force=False
):
    """Grade every student's lab live, through its host (an inventory kubelab writes)."""
    from kubelab.classroom.grading import write_inventory
    from kubelab.classroom.state import load_seats
    from kubelab.grade import grade_inventory

    paths, hosts_by_name = _class(hosts, class_dir)
    if not load_seats(paths):
        raise Exit(f"no lab in the class folder {paths.root}: run class.up first", code=2)
    started = time.monotonic()
    inventory, unknown = write_inventory(paths, hosts_by_name)
    ui.console.print(f"inventory: {inventory}")
    for student, why in sorted(unknown.items()):
        ui.console.print(f"{student}: not graded: {why}", markup=False)
    report = grade_inventory(
        inventory,
        int(exercise),
        Path(out_dir) if out_dir else paths.root / "grades",
        int(concurrency),
        float(deadline),
        force,
        console=ui.console,
    )
    ui.console.print(report.summary(), soft_wrap=True, markup=False, highlight=False)
    ui.console.print(f"class grade in {time.monotonic() - started:.1f} s")
    failed = sorted([g.student for g in report.errors] + list(unknown))
    if failed:
        raise Exit(f"class.grade: not graded: {', '.join(failed)}", code=1)


@task(
    name="reset",
    help=_class_help("class_dir", exercise="the exercise whose start every lab goes back to"),
)
@_user_errors
def class_reset(c, exercise, class_dir=None):
    """Every lab back to the exercise's start snapshot (taken by class.up --exercise N)."""
    from kubelab.classroom import run

    started = time.monotonic()
    outcomes = run.class_reset(_class_paths(class_dir), int(exercise))
    _class_outcomes(
        "class.reset",
        f"class reset to exercise {exercise}",
        outcomes,
        f"class reset in {time.monotonic() - started:.0f} s",
    )


@task(
    name="down",
    help=_class_help(
        "hosts",
        "class_dir",
        "config",
        box_volumes="also delete the class box's base volume on every host",
    ),
)
@_user_errors
def class_down(c, hosts=None, class_dir=None, config=None, box_volumes=False):
    """Destroy every lab; check each host has nothing of it left; remove the boot files."""
    from kubelab.classroom import run

    paths, hosts_by_name = _class(hosts, class_dir)
    box_name = _class_config(config).box.name if box_volumes else ""
    report = run.class_down(paths, hosts_by_name, Reporter(ui.console), box_name=box_name)
    _class_outcomes(
        "class.down",
        "class down",
        report.outcomes,
        *(
            f"{host}: removed {', '.join(removed) or 'nothing'}"
            for host, removed in sorted(report.host_cleanup.items())
        ),
        f"class down in {report.seconds:.0f} s",
        rerun=True,
    )


@task(
    name="ssh",
    positional=["node"],
    help=_class_help("class_dir", student="the student whose lab", node="master, node1, ..."),
)
@_user_errors
def class_ssh(c, node, student, class_dir=None):
    """Open a shell on a student's VM, through the lab's host (students/<id>/ssh_config)."""
    from kubelab.config import hostname_for

    paths = _class_paths(class_dir)
    config_file = paths.ssh_config(student)
    if not config_file.is_file():
        raise Exit(f"no {config_file}: run class.up first", code=2)
    os.execvp("ssh", ["ssh", "-F", str(config_file), hostname_for(node, student)])


box = Collection("box", box_list, box_import, box_remove, box_build)
classroom = Collection(
    "class",
    class_hosts,
    class_up,
    class_status,
    class_verify,
    class_grade,
    class_reset,
    class_down,
)
classroom.add_task(class_ssh, name="ssh")
bench = Collection("bench")
bench.add_task(bench_grade, name="grade")
bench.add_task(bench_render, name="render")
bench.add_task(bench_transport, name="transport")
bench.add_task(bench_boot, name="boot")
bench.add_task(bench_verify, name="verify")
ns = Collection(
    render,
    up,
    status,
    ssh,
    halt,
    destroy,
    doctor,
    lab_task,
    verify,
    grade,
    lint,
    test,
    golden,
    box,
    bench,
    classroom,
)
