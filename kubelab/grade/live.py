"""Live grading: every student's cluster over SSH, concurrently, each with a deadline.

For each student of the inventory: ask every host its name (`hostname`, the one
command the grader adds to verify's), run verify's collect() in a namespace of the
grader's own (collect always deletes it), then grade that evidence exactly as a
hand-in is graded. Nothing else on the cluster is changed.

What keeps one student from costing another:
  - a bounded pool (`concurrency` clusters at once); students whose masters share an
    address are graded one after the other, so they never deploy over each other;
  - a deadline per cluster: every command's timeout is cut to what is left of it,
    and once it has passed only the namespace clean-up may still run, for a grace
    period; a watchdog gives up on a cluster that still has not finished after that;
  - each grade is written to results/<student>.json as soon as it is known, so a
    crash loses nothing already graded, and a rerun skips graded students unless
    `force` (students that ended in an error are tried again);
  - a host that hangs, refuses, drops the connection or answers garbage ends as a
    row with status "error" and the reason; so does one whose command prints more
    than MAX_OUTPUT bytes (a host that streams without end);
  - a stored result that can no longer be written out is graded again, not reloaded.

Host keys: the inventory may pin each host's key (host_key, a fingerprint, or
known_hosts, a file); a host offering another key is refused before any command runs.
Without a pin the key is accepted, the grader says so once per run, and each
student's evidence/host-keys.json records the fingerprints seen, so a key that differs
from the previous run's is flagged (integrity.HOST_KEY) on the rerun.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import paramiko
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kubelab import safeio
from kubelab.errors import KubelabError
from kubelab.grade.archive import summary_line
from kubelab.grade.gradebook import (
    RESULTS,
    ClassReport,
    private_dir,
    read_result,
    renderable,
    write_outputs,
    write_result,
)
from kubelab.grade.grading import (
    GRADED,
    StudentGrade,
    add_class_flags,
    cleaned,
    error_grade,
    grade_evidence,
)
from kubelab.grade.integrity import HOST_KEY, Flag
from kubelab.grade.inventory import Host, Inventory, Settings, StudentLab, load_inventory
from kubelab.grade.rubric import Rubric, load_rubric, rubric_phases
from kubelab.names import bare_version
from kubelab.transport import (
    CommandResult,
    HostKeyRefused,
    SSHTarget,
    Transport,
    TransportError,
)
from kubelab.verify import Deadlines, Evidence, Expected, ExpectedNode, collect
from kubelab.verify.evidence import KUBE_SYSTEM_NAMESPACE, NODES, PODS, VERSION, BadEvidence
from kubelab.verify.expect import TEARDOWN

EVIDENCE = "evidence"
DEFAULT_DEADLINE = 600.0
# After the deadline, deleting the grader's namespace may still take this long.
CLEANUP_GRACE = 30.0
# The watchdog gives up on a cluster this long after its deadline and grace.
WATCHDOG_SLACK = 30.0
PROBE_TIMEOUT = 15.0
CONNECT_TIMEOUT = 10.0
# A placeholder until the API server says which version it runs (no pin given).
UNPINNED = "0.0.0"
_HOSTNAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
# The most one command may print (stdout and stderr): `kubectl get pods -A -o json` of
# a 3-node lab is about 0.3 MB; a busy 100-pod cluster stays under 5 MB.
MAX_OUTPUT = 16 * 1024 * 1024
# Each student's evidence records the host keys its hosts offered.
HOST_KEYS = "host-keys.json"

TransportFactory = Callable[..., Any]


class DeadlineTransport:
    """A transport whose commands share one deadline (see the module docstring)."""

    def __init__(self, inner: Any, deadline: float, grace: float = CLEANUP_GRACE) -> None:
        self.inner = inner
        self.deadline = deadline
        self.grace = grace
        self.expired = False

    def run(
        self,
        node: str,
        cmd: str,
        *args: Any,
        timeout: float = 60.0,
        phase: str | None = None,
        **kwargs: Any,
    ) -> CommandResult:
        now = time.monotonic()
        limit = self.deadline
        if now >= self.deadline:
            self.expired = True
            # Only the teardown (deleting the grader's namespace) runs after the deadline.
            if phase == TEARDOWN:
                limit = self.deadline + self.grace
        left = limit - now
        if left <= 0.5:
            raise TransportError(f"{node}: the grading deadline passed; `{cmd}` not run")
        return self.inner.run(node, cmd, *args, timeout=min(timeout, left), phase=phase, **kwargs)

    def close(self) -> None:
        self.inner.close()


@dataclass
class _Job:
    lab: StudentLab
    started: float = field(default_factory=time.monotonic)  # reset when grading starts
    transport: DeadlineTransport | None = None


def grade_inventory(
    inventory_file: Path | str,
    exercise: int,
    out_dir: Path | str,
    concurrency: int = 16,
    host_deadline: float = DEFAULT_DEADLINE,
    force: bool = False,
    *,
    gradescope: bool = False,
    rubric: Rubric | None = None,
    console: Console | None = None,
    transport_factory: TransportFactory = Transport,
) -> ClassReport:
    """Grade every student of the inventory live; write the gradebook outputs."""
    if concurrency < 1:
        raise KubelabError("concurrency must be at least 1")
    if host_deadline <= 0:
        raise KubelabError("the per-host deadline must be positive")
    inventory = load_inventory(inventory_file)
    rubric = rubric or load_rubric(exercise)
    out_dir = Path(out_dir)
    private_dir(out_dir / RESULTS)
    console = console or Console(stderr=True, highlight=False)
    _quiet_paramiko()
    unpinned = [h for lab in inventory.students for h in lab.hosts if not h.pinned]
    if unpinned:
        console.print(
            f"{len(unpinned)} hosts have no pinned host key (host_key or known_hosts in the "
            f"inventory): each key is accepted as offered and recorded in evidence/<student>/"
            f"{HOST_KEYS}; a key that changes between runs is flagged",
            markup=False,
        )

    done: dict[str, StudentGrade] = {}
    todo: list[StudentLab] = []
    for lab in inventory.students:
        previous = read_result(out_dir / RESULTS / f"{lab.student}.json")
        if previous is not None:
            # A stored grade that cannot be written out any more is graded again.
            previous = renderable(previous, rubric)
        if (
            not force
            and previous is not None
            and previous.status == GRADED
            and previous.exercise == rubric.exercise
        ):
            done[lab.student] = previous
        else:
            todo.append(lab)
    if done:
        console.print(
            f"{len(done)} students already graded in {out_dir / RESULTS}: skipped "
            "(--force grades them again)"
        )

    grader = _Grader(inventory, rubric, out_dir, host_deadline, transport_factory)
    graded, interrupted = _run_pool(todo, grader, concurrency, host_deadline, console)
    for grade in graded:
        done[grade.student] = grade

    grades = [done[lab.student] for lab in inventory.students]
    add_class_flags(grades)
    report = ClassReport(rubric, grades, out_dir)
    report.written = write_outputs(grades, rubric, out_dir, gradescope=gradescope)
    if interrupted:
        raise KeyboardInterrupt  # the outputs hold what was graded; the caller says so
    return report


class _Grader:
    """Grades one student's cluster; safe to call from many threads at once."""

    def __init__(
        self,
        inventory: Inventory,
        rubric: Rubric,
        out_dir: Path,
        host_deadline: float,
        transport_factory: TransportFactory,
    ) -> None:
        self.settings: Settings = inventory.settings
        self.rubric = rubric
        self.out_dir = out_dir
        self.host_deadline = host_deadline
        self.transport_factory = transport_factory
        self._address_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def address_lock(self, lab: StudentLab) -> threading.Lock:
        with self._lock:
            return self._address_locks.setdefault(lab.address, threading.Lock())

    def transport(self, lab: StudentLab, host_keys: HostKeys) -> DeadlineTransport:
        targets: Mapping[str, SSHTarget] = {h.machine: h.target for h in lab.hosts}
        inner = self.transport_factory(
            targets,
            connect_timeout=min(CONNECT_TIMEOUT, self.host_deadline / 3),
            max_output=MAX_OUTPUT,
            host_key_policy=host_keys,
        )
        return DeadlineTransport(inner, time.monotonic() + self.host_deadline)

    def grade(self, job: _Job) -> StudentGrade:
        lab = job.lab
        with self.address_lock(lab):
            job.started = time.monotonic()
            evidence_dir = self.out_dir / EVIDENCE / lab.student
            host_keys = HostKeys(lab, previous=read_host_keys(evidence_dir))
            job.transport = self.transport(lab, host_keys)
            try:
                grade = self._grade(lab, job.transport, evidence_dir)
            finally:
                job.transport.close()
            if evidence_dir.is_dir():
                host_keys.write(evidence_dir / HOST_KEYS)
            grade.flags += host_keys.changed()
            return cleaned(grade)

    def _grade(
        self, lab: StudentLab, transport: DeadlineTransport, evidence_dir: Path
    ) -> StudentGrade:
        started = time.monotonic()
        if evidence_dir.exists():
            shutil.rmtree(evidence_dir)
        evidence_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        relative = str(evidence_dir.relative_to(self.out_dir))
        try:
            expected = self._expected(lab, transport)
            collect(
                transport,
                expected,
                evidence_dir,
                image=self.settings.image,
                kubectl=self.settings.kubectl,
                student_id=lab.student,
                exercise=self.rubric.exercise,
                lab_config={"inventory": _described(lab)},
            )
        except (TransportError, _Unusable) as exc:
            return self._error(lab, str(exc), started, relative)
        problem = _collect_problem(Evidence(evidence_dir), transport)
        if problem:
            return self._error(lab, problem, started, relative)
        if expected.kubernetes_version == UNPINNED:
            expected = replace(expected, kubernetes_version=_server_version(evidence_dir))
        grade = grade_evidence(
            evidence_dir, lab.student, self.rubric, expected=expected, source=lab.address
        )
        grade.evidence = relative
        grade.duration = round(time.monotonic() - started, 3)
        return grade

    def _error(self, lab: StudentLab, message: str, started: float, evidence: str) -> StudentGrade:
        return error_grade(
            lab.student,
            self.rubric,
            message,
            source=lab.address,
            evidence=evidence,
            duration=round(time.monotonic() - started, 3),
        )

    def _expected(self, lab: StudentLab, transport: DeadlineTransport) -> Expected:
        nodes = []
        for host in lab.hosts:
            name = host.name or _probe_name(transport, host.machine, host.target)
            nodes.append(ExpectedNode(name, host.role, host.ip, host.machine))
        names = [n[0] for n in nodes]
        if len(set(names)) != len(names):
            raise _Unusable(
                f"two hosts answer with the same name ({', '.join(names)}): "
                "the inventory lists one VM twice, or the VMs share a hostname"
            )
        settings = self.settings
        # Each command may take the whole deadline; DeadlineTransport cuts the rest.
        deadlines = Deadlines(
            command=min(Deadlines.command, self.host_deadline),
            rollout=int(min(Deadlines.rollout, self.host_deadline)),
            cleanup=int(min(Deadlines.cleanup, CLEANUP_GRACE)),
        )
        return Expected(
            nodes=tuple(nodes),
            kubernetes_version=settings.kubernetes_version or UNPINNED,
            pod_cidr=settings.pod_cidr,
            namespace=settings.namespace,
            nodeport=settings.nodeport,
            cni=settings.cni,
            deadlines=deadlines,
            phases=rubric_phases(self.rubric),  # what the rubric's checks need
        )


class _Unusable(Exception):
    """The cluster cannot be graded: the reason is the error row's text."""


def fingerprint(key: paramiko.PKey) -> str:
    """A host key's fingerprint as `ssh-keygen -lf` prints it: SHA256:<base64, no padding>."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def read_host_keys(evidence_dir: Path) -> dict[str, str]:
    """machine -> fingerprint, as the previous run's evidence recorded them ({} if none)."""
    try:
        data = safeio.parse_json(safeio.read_confined(evidence_dir, HOST_KEYS, 64 * 1024))
    except (OSError, safeio.Unreadable):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        str(machine): entry["fingerprint"]
        for machine, entry in data.items()
        if isinstance(entry, dict) and isinstance(entry.get("fingerprint"), str)
    }


class HostKeys(paramiko.MissingHostKeyPolicy):
    """One student's host key policy: pinned keys enforced, every key seen recorded.

    paramiko asks the policy about every key, since the client loads no known_hosts
    of its own; refusing raises HostKeyRefused, which the transport reports as the
    host's error before any command runs.
    """

    def __init__(self, lab: StudentLab, previous: Mapping[str, str] | None = None) -> None:
        self.previous = dict(previous or {})
        self.seen: dict[str, str] = {}
        # paramiko names a host "addr" on port 22, "[addr]:port" elsewhere.
        self.hosts: dict[str, Host] = {
            (h.target.host if h.target.port == 22 else f"[{h.target.host}]:{h.target.port}"): h
            for h in lab.hosts
        }

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: Any) -> None:
        host = self.hosts.get(hostname)
        if host is None:
            raise HostKeyRefused(f"host key of {hostname}: not a host of this student")
        seen = fingerprint(key)
        self.seen[host.machine] = seen
        if host.host_key is not None and seen != host.host_key:
            raise HostKeyRefused(
                f"host key {seen} is not the pinned {host.host_key} (the key changed, or "
                "another machine answers at this address)"
            )
        if host.known_hosts is not None:
            try:
                known = paramiko.HostKeys(str(host.known_hosts)).lookup(hostname)
            except (OSError, paramiko.SSHException, ValueError) as exc:
                raise HostKeyRefused(f"cannot read {host.known_hosts} ({exc})") from None
            if known is None:
                raise HostKeyRefused(f"{hostname} is not in {host.known_hosts}")
            if key.get_name() not in known or known[key.get_name()] != key:
                raise HostKeyRefused(
                    f"host key {seen} does not match {host.known_hosts} (the key changed, "
                    "or another machine answers at this address)"
                )

    def changed(self) -> list[Flag]:
        """A flag per unpinned host whose key is not the one the previous run saw."""
        flags = []
        for host in self.hosts.values():
            before, now = self.previous.get(host.machine), self.seen.get(host.machine)
            if not host.pinned and before and now and before != now:
                flags.append(
                    Flag(
                        HOST_KEY,
                        f"{host.machine} ({host.target.address}) offered host key {now}; "
                        f"the previous run saw {before}",
                    )
                )
        return flags

    def write(self, path: Path) -> None:
        records = {
            h.machine: {
                "address": h.target.address,
                "fingerprint": self.seen[h.machine],
                "pinned": h.pinned,
            }
            for h in self.hosts.values()
            if h.machine in self.seen
        }
        path.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")


def _quiet_paramiko() -> None:
    """paramiko logs its own tracebacks (a banner timeout, a reset); the transport's error
    says what happened in words, so they must not reach the teacher's terminal."""
    logger = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
    logger.propagate = False


def _probe_name(transport: DeadlineTransport, machine: str, target: SSHTarget) -> str:
    where = f"{machine} ({target.address})"
    result = transport.run(machine, "hostname", timeout=PROBE_TIMEOUT)
    if result.timed_out:
        raise _Unusable(
            f"{where}: no answer to `hostname` within {result.duration:.0f} s (the host hangs)"
        )
    name = result.stdout.strip().lower()
    if result.rc != 0 or not _HOSTNAME.match(name):
        shown = (result.stdout.strip() or result.stderr.strip())[:60]
        raise _Unusable(f"{where}: `hostname` answered garbage (rc {result.rc}: {shown!r})")
    return name


def _collect_problem(evidence: Evidence, transport: DeadlineTransport) -> str:
    """Why this evidence is not a grade of the student's cluster, or ''."""
    if transport.expired:
        return "the grading deadline passed before the cluster was fully read"
    lost = [c for c in evidence.commands() if c.get("error")]
    if lost:
        first = lost[0]
        return (
            f"{len(lost)} command(s) failed on the way, not on the cluster; first: "
            f"{' '.join(map(str, first.get('argv', [])[:6]))} on {first.get('node')}: "
            f"{first['error']}"
        )
    for rel in (VERSION, NODES, PODS, KUBE_SYSTEM_NAMESPACE):
        if evidence.has(rel):
            try:
                evidence.json(rel)
            except BadEvidence as exc:
                return f"the host answered garbage: {exc}"
    return ""


def _server_version(evidence_dir: Path) -> str:
    try:
        version = Evidence(evidence_dir).json(VERSION).get("gitVersion") or ""
    except Exception:  # noqa: BLE001 - no version: the api check says why
        version = ""
    return bare_version(str(version)) or UNPINNED


def _described(lab: StudentLab) -> dict[str, Any]:
    """The inventory entry as meta.json records it (addresses, never key material)."""
    return {
        "student": lab.student,
        "hosts": [
            {"machine": h.machine, "role": h.role, "address": h.target.address, "ip": h.ip}
            for h in lab.hosts
        ],
    }


# --- the pool ---------------------------------------------------------------------------


def _run_pool(
    labs: list[StudentLab],
    grader: _Grader,
    concurrency: int,
    host_deadline: float,
    console: Console,
) -> tuple[list[StudentGrade], bool]:
    """Grade `labs` with at most `concurrency` at once; every lab yields exactly one grade.

    Also says whether a Ctrl-C cut the run short (the labs not started are then error
    rows, so a rerun grades them).
    """
    results: dict[str, StudentGrade] = {}
    give_up_after = host_deadline + CLEANUP_GRACE + WATCHDOG_SLACK
    progress = _Progress(console, len(labs))

    def work(job: _Job) -> StudentGrade:
        try:
            return grader.grade(job)
        except BaseException as exc:  # noqa: BLE001 - a grader bug must not lose the student
            return error_grade(
                job.lab.student,
                grader.rubric,
                f"the grader failed: {type(exc).__name__}: {exc}",
                source=job.lab.address,
            )

    def record(lab: StudentLab, grade: StudentGrade) -> None:
        results[lab.student] = grade
        write_result(grader.out_dir, grade)
        progress.advance(grade)

    def give_up_on_stuck(active: dict[Future[StudentGrade], _Job]) -> None:
        now = time.monotonic()
        for future, job in list(active.items()):
            if job.transport is not None and now - job.started > give_up_after:
                # Still stuck past its deadline: record the student and unstick the
                # worker by closing its connections (its late result is ignored).
                del active[future]
                job.transport.close()
                message = (
                    f"no result within {give_up_after:.0f} s (deadline {host_deadline:g} s): "
                    "the host stopped answering"
                )
                record(job.lab, error_grade(job.lab.student, grader.rubric, message,
                                            source=job.lab.address))  # fmt: skip

    def interrupt(active: dict[Future[StudentGrade], _Job]) -> None:
        # Clusters being graded finish (their deadlines hold), so the grader's namespace
        # is removed from each; the ones not started are recorded as not graded.
        for future, job in list(active.items()):
            if future.cancel():
                del active[future]
                message = "not graded: the run was interrupted (run again to grade)"
                record(job.lab, error_grade(job.lab.student, grader.rubric, message,
                                            source=job.lab.address))  # fmt: skip
        console.print(
            f"interrupted: finishing the {len(active)} clusters being graded so the "
            "grader's namespace is removed from each (Ctrl-C again to stop at once)"
        )

    interrupted = False
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="grade")
    try:
        with progress:
            active = {pool.submit(work, job): job for job in map(_Job, labs)}
            while active:
                try:
                    done, _ = wait(active, timeout=0.25, return_when=FIRST_COMPLETED)
                    for future in done:
                        record(active.pop(future).lab, future.result())
                    give_up_on_stuck(active)
                except KeyboardInterrupt:
                    if interrupted:
                        # Stop at once: closed connections end the workers' commands,
                        # so the process does not wait out their deadlines on exit.
                        for job in active.values():
                            if job.transport is not None:
                                job.transport.close()
                        raise
                    interrupted = True
                    interrupt(active)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return [results[lab.student] for lab in labs], interrupted


class _Progress:
    """A progress bar on a terminal; one plain line per finished student otherwise."""

    def __init__(self, console: Console, total: int) -> None:
        self.console = console
        self.total = total
        self.count = 0
        self.bar: Progress | None = None
        self.task: Any = None

    def __enter__(self) -> _Progress:
        if self.console.is_terminal and self.total:
            self.bar = Progress(
                TextColumn("grading"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[last]}", markup=False),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("grading", total=self.total, last="")
        elif self.total:
            self.console.print(f"grading {self.total} clusters")
        return self

    def advance(self, grade: StudentGrade) -> None:
        self.count += 1
        line = summary_line(grade)
        if self.bar is not None:
            self.bar.update(self.task, advance=1, last=line[:60])
            if not grade.graded:
                # Escaped: the line holds the host's own words, which may look like markup.
                self.bar.console.print(f"[red]{escape(line)}[/]", markup=True, highlight=False)
        else:
            stamp = time.strftime("%H:%M:%S")
            self.console.print(
                f"{stamp} [{self.count}/{self.total}] {line} ({grade.duration:.1f} s)",
                markup=False,
                highlight=False,
            )

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
