"""Run the rendered provisioning stages on the VMs, over SSH, in order.

Order: the master runs its stages first; then the nodes run theirs in parallel;
then the master runs the stages marked `after_nodes` (waiting for the whole
cluster). Each stage is one rendered script, taken through five steps:

  upload   the script into the VM, and each file the stage `receives` from the
           master (the pki stage's bundle for the etcd stage) beside it, 0600
  execute  sudo bash under the stage's deadline (a join command on stdin)
  record   its output to logs/<node>/<script>.log; a failure raises StageFailed
  mark     the marker below
  fetch    each file the stage `fetches` into the lab folder, 0600 (the
           kubeconfig after init-master)

What a stage receives and fetches is data in provision/catalog.yaml (plan.Stage),
not code that knows stage names.

A finished stage leaves a marker on the VM holding its script's digest
(/var/lib/kubelab/stages/<stage>.sha256). A later run skips a stage whose marker
matches the script it would run, so `invoke up` resumes where it stopped and a
changed script runs again. The state lives on the VM, not on the host.

Beside it, <stage>.json records when the stage ran and what applied it (`up`, an
exercise's start state, `--solve`): verify copies these into the evidence, so a
grade can say which work kubelab did (kubelab/grade/rubric.py voids on it).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import io
import json
import os
import tarfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from kubelab import defaults
from kubelab.errors import KubelabError
from kubelab.plan import Plan, PlannedNode, Receive, Stage
from kubelab.progress import Reporter

if TYPE_CHECKING:
    from kubelab.transport import CommandResult, Transport

MARKER_DIR = defaults.GUEST_PATHS["markers_dir"]
REMOTE_SCRIPT_DIR = "/var/tmp/kubelab"
LOCAL_REPO_DIR = defaults.GUEST_PATHS["local_repo_dir"]
# In LOCAL_REPO_DIR: the digest of the folder last unpacked there (folder_digest).
LOCAL_REPO_STAMP = ".kubelab-sha256"
# sh -c SCRIPT ship FOLDER TARBALL DIGEST STAMP: unpack, drop the tarball, then stamp.
UNPACK_LOCAL_REPO = (
    'mkdir -p "$1" && tar -xzf "$2" -C "$1" && rm -f "$2" && printf "%s\\n" "$3" > "$4"'
)
TAIL_LINES = 15
APPLIED_BY_UP = "up"  # what applied a stage when the caller does not say


@dataclass(frozen=True)
class VmFolders:
    """Where on a VM the runner keeps its files (tests point them at folders of their own)."""

    scripts: str = REMOTE_SCRIPT_DIR  # the uploaded scripts and received files
    markers: str = MARKER_DIR  # what each finished stage leaves
    local_repo: str = LOCAL_REPO_DIR  # mirror.local_repo, unpacked


@dataclass(frozen=True)
class Upload:
    """What the upload step left on a VM for one stage."""

    script: str  # the script's path on the VM
    env: dict[str, str]  # variable -> path of a file received from the master


@dataclass(frozen=True)
class StageRun:
    node: str
    stage: str
    status: str  # done | skipped
    duration: float
    log_path: Path | None


class StageFailed(KubelabError):
    def __init__(
        self, node: str, stage: Stage, command: str, rc: int, tail: str, log_path: Path
    ) -> None:
        timed_out = rc == 124
        what = f"timed out after {stage.deadline} s" if timed_out else f"exited {rc}"
        super().__init__(
            f"stage {stage.name!r} failed on {node}: `{command}` {what}\n"
            f"--- last lines ---\n{tail}\n--- full log: {log_path}",
            hint=f"fix the cause, then run `invoke up` again: it resumes at {stage.name!r}",
        )
        self.node = node
        self.stage = stage


def folder_digest(folder: Path) -> str:
    """sha256 over every file's relative path and content, in sorted order: the same
    folder gives the same digest whenever and wherever it is packed."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as data:
            digest.update(hashlib.file_digest(data, "sha256").digest())
    return digest.hexdigest()


def script_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class StageRunner:
    """Runs a plan's stages over a transport, reporting through a Reporter."""

    def __init__(
        self,
        plan: Plan,
        files: dict[str, str],
        transport: Transport,
        reporter: Reporter,
        applied_by: Mapping[str, str] | None = None,
        folders: VmFolders = VmFolders(),
    ) -> None:
        self.plan = plan
        self.files = files
        self.transport = transport
        self.reporter = reporter
        # Stage name -> what applies it (recorded in its marker); default APPLIED_BY_UP.
        self.applied_by = dict(applied_by or {})
        self.folders = folders

    def run(
        self,
        on_stage: Callable[[StageRun], None] | None = None,
        done: Mapping[str, Mapping[str, bool]] | None = None,
    ) -> list[StageRun]:
        """Every stage on every VM, in order. `done`: what `completed` gave for each VM
        earlier in this `up` (its markers are then not read again)."""
        runs: list[StageRun] = []

        def collect(run: StageRun) -> None:
            runs.append(run)
            if on_stage:
                on_stage(run)

        master = self.plan.master
        self._ship_local_repo(list(self.plan.nodes))
        # What each VM had finished before this run: read once per VM.
        known = dict(done or {})
        master_done = known[master.name] if master.name in known else self.completed(master)
        for stage in self.plan.stages_for(master):
            if not stage.after_nodes:
                collect(self._run_stage(master, stage, master_done))
        workers = self.plan.workers
        if workers:
            with ThreadPoolExecutor(max_workers=len(workers)) as pool:
                results = list(pool.map(lambda n: self._run_node(n, known.get(n.name)), workers))
            for node_runs in results:
                for run in node_runs:
                    collect(run)
        for stage in self.plan.stages_for(master):
            if stage.after_nodes:
                collect(self._run_stage(master, stage, master_done))
        return runs

    def completed(self, node: PlannedNode) -> dict[str, bool]:
        """Stage name -> whether the VM holds a marker matching today's script."""
        markers = self._markers(node)
        return {
            stage.name: markers.get(stage.name) == script_digest(self._script(node, stage)[1])
            for stage in self.plan.stages_for(node)
        }

    def _run_node(self, node: PlannedNode, done: Mapping[str, bool] | None) -> list[StageRun]:
        if done is None:
            done = self.completed(node)
        return [self._run_stage(node, stage, done) for stage in self.plan.stages_for(node)]

    def _script(self, node: PlannedNode, stage: Stage) -> tuple[str, str]:
        index = self.plan.stages_for(node).index(stage)
        rel = self.plan.spec.scripts[node.name][index]
        return rel, self.files[rel]

    def _markers(self, node: PlannedNode) -> dict[str, str]:
        result = self.transport.run(
            node.name,
            "sh",
            "-c",
            f'for f in {self.folders.markers}/*.sha256; do [ -e "$f" ] && echo "$f $(cat "$f")"; '
            "done; true",
            sudo=True,
            timeout=30,
        )
        markers = {}
        for line in result.stdout.splitlines():
            path, _, digest = line.partition(" ")
            markers[PurePosixPath(path).name.removesuffix(".sha256")] = digest.strip()
        return markers

    def _run_stage(self, node: PlannedNode, stage: Stage, done: Mapping[str, bool]) -> StageRun:
        """One stage on one VM: upload, execute, record, mark, fetch (or skip it)."""
        if done.get(stage.name):
            self.reporter.vm(node.name, state="skipped", step=f"{stage.name} (already done)")
            return StageRun(node.name, stage.name, "skipped", 0.0, None)
        self.reporter.vm(node.name, state="provisioning", step=stage.title)
        upload = self.upload(node, stage)
        result = self.execute(node, stage, upload)
        log_path = self.record(node, stage, upload, result)
        self.mark(node, stage)
        self.fetch(node, stage)
        self.reporter.vm(node.name, state="done", step=f"{stage.name} ({result.duration:.0f} s)")
        return StageRun(node.name, stage.name, "done", result.duration, log_path)

    def upload(self, node: PlannedNode, stage: Stage) -> Upload:
        """The stage's script into the VM's script folder, and each file it receives
        from the master beside it (0600)."""
        rel, text = self._script(node, stage)
        script = f"{self.folders.scripts}/{PurePosixPath(rel).name}"
        # World-writable and sticky like /tmp: the SSH user uploads, root runs.
        self.transport.run(
            node.name, "install", "-d", "-m", "1777", self.folders.scripts, sudo=True, timeout=30
        )
        self.transport.put(node.name, text.encode(), script, 0o755)
        env = {}
        for received in stage.receives:
            # A path, not a secret: the file itself is 0600.
            env[received.env] = self._receive(node, received)
        return Upload(script, env)

    def execute(self, node: PlannedNode, stage: Stage, upload: Upload) -> CommandResult:
        """`sudo bash <script>` under the stage's deadline; its duration as seen from here."""
        # The join command carries a bootstrap token: it goes on stdin, never into an
        # argv or environment another user could read, or into a log.
        stdin = self._join_command(node) + "\n" if stage.needs_join_command else None
        argv = ["bash", upload.script]
        if upload.env:
            argv = ["env", *(f"{name}={path}" for name, path in upload.env.items()), *argv]
        started = time.monotonic()
        result = self.transport.run(
            node.name, *argv, sudo=True, timeout=float(stage.deadline), stdin=stdin
        )
        return dataclasses.replace(result, duration=time.monotonic() - started)

    def record(
        self, node: PlannedNode, stage: Stage, upload: Upload, result: CommandResult
    ) -> Path:
        """The run's output into logs/<node>/<script>.log; StageFailed when it failed."""
        rel, _ = self._script(node, stage)
        log_path = self.plan.log_dir / rel.removeprefix("scripts/").replace(".sh", ".log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(
            f"# {rel} on {node.name}: rc={result.rc} in {result.duration:.1f} s\n"
            f"{result.stdout}\n# --- stderr ---\n{result.stderr}"
        )
        if result.rc != 0:
            self.reporter.vm(node.name, state="failed", step=stage.title)
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-TAIL_LINES:])
            command = f"sudo bash {upload.script}"
            raise StageFailed(node.name, stage, command, result.rc, tail, log_path)
        return log_path

    def mark(self, node: PlannedNode, stage: Stage) -> None:
        """The marker a later run skips the stage by (the script's digest), and its record."""
        digest = script_digest(self._script(node, stage)[1])
        markers = self.folders.markers
        marker = f"{markers}/{stage.name}"
        record = json.dumps(
            {
                "stage": stage.name,
                "digest": digest,
                "applied_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "applied_by": self.applied_by.get(stage.name, APPLIED_BY_UP),
            }
        )
        self.transport.run(
            node.name,
            "sh",
            "-c",
            f'mkdir -p {markers} && echo {digest} > {marker}.sha256 && printf "%s\\n" "$1" '
            f"> {marker}.json",
            "kubelab-marker",
            record,
            sudo=True,
            timeout=30,
        )

    def fetch(self, node: PlannedNode, stage: Stage) -> list[Path]:
        """Each file the stage's catalog entry `fetches`, from the VM into the lab folder.

        Created 0600: such a file (the admin kubeconfig) holds credentials, never readable
        by others, not even for the moment between writing and a chmod. A file the VM
        cannot give is left out (verify reports what is missing).
        """
        written = []
        for wanted in stage.fetches:
            result = self.transport.run(node.name, "cat", wanted.path, sudo=True, timeout=30)
            if result.rc != 0 or not result.stdout:
                continue
            path = self.plan.lab_dir / wanted.to
            path.unlink(missing_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(result.stdout)
            written.append(path)
        return written

    def _join_command(self, node: PlannedNode) -> str:
        """A fresh join command from the master, fetched at join time.

        The join stage runs only when it is not done, so a Node object the master
        holds under this name is left from a join that stopped halfway: the master
        forgets it first, and the node resets itself before joining again.
        """
        forget = self.transport.run(
            self.plan.master.name,
            "kubectl",
            "--kubeconfig",
            self.plan.spec.guest_paths["admin_kubeconfig"],
            "delete",
            "node",
            "--ignore-not-found",
            node.hostname,
            sudo=True,
            timeout=60,
        )
        if not forget.ok:
            raise KubelabError(
                f"the master could not forget node {node.hostname} before it joins again: "
                f"rc={forget.rc} {forget.tail(3)}",
                hint="check the control plane: `invoke ssh master`, then `kubectl get nodes`",
            )
        result = self.transport.run(
            self.plan.master.name,
            "kubeadm",
            "token",
            "create",
            "--print-join-command",
            sudo=True,
            timeout=60,
        )
        command = result.stdout.strip()
        if result.rc != 0 or not command.startswith("kubeadm join"):
            raise KubelabError(
                f"could not get a join command from {self.plan.master.name}: "
                f"rc={result.rc} {result.stderr.strip()[-300:]}",
                hint="check the master with `invoke ssh master` and `sudo kubeadm token list`",
            )
        return command

    def _receive(self, node: PlannedNode, received: Receive) -> str:
        """Copy `node`'s file from the master (the catalog's `receives`) into its
        script folder, 0600; its path there.

        It travels base64 over the transport; the stage unpacks it and deletes it.
        Nothing of it is logged.
        """
        source = received.source(node)
        result = self.transport.run(
            self.plan.master.name, "base64", "-w", "0", source, sudo=True, timeout=60
        )
        try:
            data = base64.b64decode(result.stdout.strip(), validate=True)
        except binascii.Error:
            data = b""
        if result.rc != 0 or not data:
            raise KubelabError(
                f"could not copy {source} from {self.plan.master.name}: "
                f"rc={result.rc} {result.stderr.strip()[-300:]}",
                hint=received.missing,
            )
        remote = f"{self.folders.scripts}/{received.to}"
        self.transport.put(node.name, data, remote, 0o600)
        return remote

    def _ship_local_repo(self, nodes: list[PlannedNode]) -> None:
        """Copy mirror.local_repo into every VM, where the repos stage points at it.

        The VMs get it at once, and a VM that already holds this very folder (its
        digest, written after the last unpack) gets nothing: a second `up` with
        stages left ships no package again."""
        folder = self.plan.config.mirror.local_repo
        if not folder:
            return
        digest = folder_digest(Path(folder))
        stamp = f"{self.folders.local_repo}/{LOCAL_REPO_STAMP}"
        tarball: list[bytes] = []  # made once, by the first VM that needs it
        packing = threading.Lock()

        def packed() -> bytes:
            with packing:
                if not tarball:
                    buffer = io.BytesIO()
                    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
                        tar.add(folder, arcname=".")
                    tarball.append(buffer.getvalue())
                return tarball[0]

        def ship(node: PlannedNode) -> None:
            held = self.transport.run(node.name, "cat", stamp, sudo=True)
            if held.rc == 0 and held.stdout.strip() == digest:
                return
            self.reporter.vm(node.name, state="provisioning", step="ship local packages")
            remote = f"{self.folders.scripts}-local-repo.tgz"
            self.transport.put(node.name, packed(), remote, 0o644)
            result = self.transport.run(
                node.name,
                "sh",
                "-c",
                UNPACK_LOCAL_REPO,
                "ship",
                self.folders.local_repo,
                remote,
                digest,
                stamp,
                sudo=True,
                timeout=300,
            )
            if result.rc != 0:
                raise KubelabError(
                    f"could not unpack the local package folder on {node.name}: "
                    f"{result.stderr.strip()[-300:]}",
                    hint="check free space in the VM (df -h /var)",
                )

        with ThreadPoolExecutor(max_workers=len(nodes) or 1) as pool:
            list(pool.map(ship, nodes))  # list(): the first VM's error is raised here
