"""The StageRunner's steps (upload, execute, record, mark, fetch), each on its own.

The transport here is `LocalTransport`: every command runs for real in this
machine's `sh`, in folders of the test's own (the runner's VmFolders point there),
each node seeing its own copy of them (a bind mount in a mount namespace per
command, as each VM has its own disk), except the programs that cannot run here,
answered as the real ones answer: a stage
script's `bash` (its rc and output chosen by the test), and the master's `kubectl`
and `kubeadm` (the join command comes from a recorded `kubeadm init`). The same steps
over real SSH: test_stage_runner_netns.py; with the real stage scripts:
test_stage_runner_resume.py.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kubelab.errors import KubelabError
from kubelab.plan import Fetch, Plan, PlannedNode, Receive, Stage
from kubelab.progress import Reporter
from kubelab.provision import (
    LOCAL_REPO_STAMP,
    StageFailed,
    StageRunner,
    VmFolders,
    folder_digest,
    script_digest,
)
from kubelab.transport import CommandResult, command_line
from tests.provision.harness import render_lab
from tests.support.netns_hosts import fixture

TWO_NODES = {
    "nodes": [
        {"name": "master", "role": "master", "ip": "192.168.56.10"},
        {"name": "node1", "role": "node", "ip": "192.168.56.11"},
    ],
    "provision.stages": ["smoke"],
}
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare (mounts)"
)
# What `kubeadm token create --print-join-command` prints: the worker's join command
# as a recorded `kubeadm init` shows it, on one line.
JOIN_LINE = re.compile(r"^kubeadm join .*?\\\n\s*--discovery-token-ca-cert-hash \S+", re.M)
# The programs this machine cannot stand in for: answered by the test.
ANSWERED = ("bash", "kubectl", "kubeadm")
Answer = Callable[[str, list[str], str | None], tuple[int, str, str]]


def recorded_join_command() -> str:
    found = JOIN_LINE.search(fixture("kubeadm-init-v1.26.15-success.out").read_text())
    assert found
    return " ".join(found.group(0).replace("\\\n", " ").split())


@dataclass
class Call:
    node: str
    argv: list[str]
    stdin: str | None
    timeout: float
    sudo: bool


class LocalTransport:
    """Transport.run and put on this machine; a failure is a result or an error, as there.

    `vm` is the folder the runner's VmFolders are in: each node's commands see the
    node's own folder there (`vm-<node>` beside it)."""

    def __init__(self, vm: Path) -> None:
        self.vm = vm
        self.calls: list[Call] = []
        self.answers: dict[str, Answer] = {
            "bash": lambda node, argv, stdin: (0, f"stage ran on {node}\n", ""),
            "kubectl": lambda node, argv, stdin: (0, "", ""),
            "kubeadm": lambda node, argv, stdin: (0, recorded_join_command() + "\n", ""),
        }

    def run(
        self,
        node: str,
        cmd: str,
        *args: object,
        timeout: float = 60.0,
        sudo: bool = False,
        stdin: bytes | str | None = None,
    ) -> CommandResult:
        line = command_line(cmd, *args)
        argv = shlex.split(line)
        text = stdin.decode() if isinstance(stdin, bytes) else stdin
        self.calls.append(Call(node, argv, text, timeout, sudo))
        program = next(word for word in argv if word != "env" and "=" not in word)
        if program in ANSWERED:
            rc, out, err = self.answers[program](node, argv, text)
        else:
            done = self._in_vm(node, line, text.encode() if text is not None else None, timeout)
            rc, out, err = done.returncode, done.stdout.decode(), done.stderr.decode()
        return CommandResult(node, line, rc, out, err, 0.0, timed_out=rc == 124)

    def _in_vm(
        self, node: str, line: str, data: bytes | None, timeout: float
    ) -> subprocess.CompletedProcess[bytes]:
        own = self.vm.with_name(f"{self.vm.name}-{node}")
        own.mkdir(exist_ok=True)
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'mount --bind "$1" "$2" && exec sh -c "$3"', "vm", own, self.vm, line],
            input=data, capture_output=True, timeout=timeout,
        )  # fmt: skip

    def put(self, node: str, data: bytes, remote_path: str, mode: int = 0o644, **_: Any) -> None:
        """The bytes as they are (a tarball too), written by `sh` in the node's folder."""
        line = command_line(
            "sh -c", 'cat > "$1" && chmod "$2" "$1"', "put", remote_path, format(mode, "o")
        )
        self.calls.append(Call(node, shlex.split(line), None, 60.0, False))
        done = self._in_vm(node, line, data, 60.0)
        if done.returncode != 0:
            raise KubelabError(f"could not write {remote_path} on {node}: {done.stderr.decode()}")

    def ran(self, node: str, program: str) -> list[Call]:
        return [c for c in self.calls if c.node == node and program in c.argv]


class Lab:
    """A two-node lab whose one stage (`smoke`) the test shapes; its VM folders in tmp."""

    def __init__(self, tmp_path: Path, config: dict[str, Any] | None = None, **stage: Any) -> None:
        plan, files = render_lab({**TWO_NODES, **(config or {})}, lab_dir=tmp_path / "lab")
        plan.lab_dir.mkdir()
        [smoke] = plan.stages
        self.stage = dataclasses.replace(smoke, **stage)
        self.plan: Plan = dataclasses.replace(plan, stages=(self.stage,))
        self.files = files
        self.vm = tmp_path / "vm"
        self.vm.mkdir()
        self.folders = VmFolders(
            scripts=str(self.vm / "scripts"),
            markers=str(self.vm / "stages"),
            local_repo=str(self.vm / "local-repo"),
        )
        self.transport = LocalTransport(self.vm)
        self.runner = self.new_runner()

    def new_runner(self, **kwargs: Any) -> StageRunner:
        return StageRunner(
            self.plan, self.files, self.transport, Reporter(), folders=self.folders, **kwargs
        )  # type: ignore[arg-type]

    def node(self, name: str) -> PlannedNode:
        return self.plan.node(name)

    def on(self, name: str) -> Path:
        """The node's own VM folder, as this machine sees it."""
        return self.vm.with_name(f"vm-{name}")

    def script(self, name: str) -> str:
        [rel] = self.plan.spec.scripts[name]
        return self.files[rel]


def pki_bundle(tmp_path: Path) -> Receive:
    return Receive(
        from_master=str(tmp_path / "master-pki" / "{hostname}.tar"),
        to="pki-bundle.tar",
        env="KUBELAB_PKI_BUNDLE",
        missing="run the pki stage on the master first",
    )


# --- upload ---------------------------------------------------------------------------


def test_upload_puts_the_script_in_a_sticky_folder_executable(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    upload = lab.runner.upload(lab.node("node1"), lab.stage)
    script = Path(upload.script)
    assert script.parent == lab.vm / "scripts" and upload.env == {}
    script = lab.on("node1") / "scripts" / script.name
    assert script.read_text() == lab.script("node1")
    assert script.stat().st_mode & 0o777 == 0o755
    assert script.parent.stat().st_mode & 0o7777 == 0o1777  # the SSH user writes, root runs
    assert [c.argv[0] for c in lab.transport.calls] == ["install", "sh"]


def test_upload_brings_what_the_stage_receives_from_the_master_0600(tmp_path: Path) -> None:
    bundle = pki_bundle(tmp_path)
    lab = Lab(tmp_path, receives=(bundle,))
    (tmp_path / "master-pki").mkdir()
    (tmp_path / "master-pki" / "node1.tar").write_bytes(b"node1's certificates")

    upload = lab.runner.upload(lab.node("node1"), lab.stage)

    received = lab.on("node1") / "scripts" / bundle.to
    assert upload.env == {bundle.env: str(lab.vm / "scripts" / bundle.to)}
    assert received.read_bytes() == b"node1's certificates"
    assert received.stat().st_mode & 0o777 == 0o600
    [copied] = lab.transport.ran("master", "base64")
    assert copied.argv[-1] == bundle.source(lab.node("node1")) and copied.sudo


def test_upload_without_the_masters_file_names_it_and_the_catalogs_hint(tmp_path: Path) -> None:
    bundle = pki_bundle(tmp_path)
    lab = Lab(tmp_path, receives=(bundle,))

    with pytest.raises(KubelabError) as failed:
        lab.runner.upload(lab.node("node1"), lab.stage)

    assert bundle.source(lab.node("node1")) in failed.value.message
    assert "rc=1" in failed.value.message and "No such file" in failed.value.message
    assert failed.value.hint == bundle.missing
    assert not (lab.on("node1") / "scripts" / bundle.to).exists()


# --- execute ------------------------------------------------------------------------


def test_execute_runs_the_script_as_root_under_its_deadline(tmp_path: Path) -> None:
    lab = Lab(tmp_path, receives=(pki_bundle(tmp_path),))
    (tmp_path / "master-pki").mkdir()
    (tmp_path / "master-pki" / "node1.tar").write_bytes(b"x")
    node = lab.node("node1")
    upload = lab.runner.upload(node, lab.stage)

    result = lab.runner.execute(node, lab.stage, upload)

    assert result.ok and result.stdout == "stage ran on node1\n"
    [call] = lab.transport.ran("node1", "bash")
    env = [f"{name}={path}" for name, path in upload.env.items()]
    assert call.argv == ["env", *env, "bash", upload.script]
    assert call.sudo and call.timeout == lab.stage.deadline and call.stdin is None


def test_execute_hands_the_join_command_on_stdin_and_nowhere_else(tmp_path: Path) -> None:
    lab = Lab(tmp_path, needs_join_command=True)
    node = lab.node("node1")
    upload = lab.runner.upload(node, lab.stage)

    lab.runner.execute(node, lab.stage, upload)

    [forget] = lab.transport.ran("master", "kubectl")
    [token] = lab.transport.ran("master", "kubeadm")
    assert forget.argv[-2:] == ["--ignore-not-found", node.hostname]
    assert token.argv[1:] == ["token", "create", "--print-join-command"]
    assert lab.transport.calls.index(forget) < lab.transport.calls.index(token)
    [run] = lab.transport.ran("node1", "bash")
    assert run.stdin == recorded_join_command() + "\n"
    secret = recorded_join_command().split("--token ")[1].split()[0]
    assert not [c for c in lab.transport.calls if secret in " ".join(c.argv)]


def test_execute_stops_when_the_master_cannot_forget_the_node(tmp_path: Path) -> None:
    lab = Lab(tmp_path, needs_join_command=True)
    lab.transport.answers["kubectl"] = lambda node, argv, stdin: (
        1,
        "",
        "The connection to the server 192.168.56.10:6443 was refused\n",
    )
    node = lab.node("node1")
    upload = lab.runner.upload(node, lab.stage)

    with pytest.raises(KubelabError, match="could not forget node node1"):
        lab.runner.execute(node, lab.stage, upload)

    assert not lab.transport.ran("node1", "bash") and not lab.transport.ran("master", "kubeadm")


# --- record ---------------------------------------------------------------------------


def _result(node: str, rc: int, stdout: str, stderr: str = "") -> CommandResult:
    return CommandResult(node, "sudo bash x", rc, stdout, stderr, 12.34, timed_out=rc == 124)


def test_record_keeps_the_output_in_the_nodes_log(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    node = lab.node("node1")
    upload = lab.runner.upload(node, lab.stage)

    log = lab.runner.record(node, lab.stage, upload, _result("node1", 0, "out\n", "warn\n"))

    [rel] = lab.plan.spec.scripts["node1"]
    assert log == lab.plan.log_dir / "node1" / Path(rel).with_suffix(".log").name
    assert log.read_text() == f"# {rel} on node1: rc=0 in 12.3 s\nout\n\n# --- stderr ---\nwarn\n"


@pytest.mark.parametrize(("rc", "what"), [(2, "exited 2"), (124, "timed out after")])
def test_record_of_a_failure_raises_with_the_last_lines(tmp_path: Path, rc: int, what: str) -> None:
    lab = Lab(tmp_path)
    node = lab.node("node1")
    upload = lab.runner.upload(node, lab.stage)
    output = "".join(f"line {i}\n" for i in range(1, 31))

    with pytest.raises(StageFailed) as failed:
        lab.runner.record(node, lab.stage, upload, _result("node1", rc, output))

    message = failed.value.message
    assert f"stage 'smoke' failed on node1: `sudo bash {upload.script}` {what}" in message
    assert "line 30" in message and "line 16" in message and "line 15\n" not in message
    assert str(lab.plan.log_dir / "node1") in message
    assert failed.value.hint and "resumes at 'smoke'" in failed.value.hint
    assert "line 1\n" in next((lab.plan.log_dir / "node1").glob("*.log")).read_text()


# --- mark -----------------------------------------------------------------------------


def test_mark_records_the_scripts_digest_and_what_applied_it(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    node = lab.node("node1")
    runner = lab.new_runner(applied_by={"smoke": "exercise 3 start"})
    assert runner.completed(node) == {"smoke": False}

    runner.mark(node, lab.stage)

    assert runner.completed(node) == {"smoke": True}
    markers = lab.on("node1") / "stages"
    assert (markers / "smoke.sha256").read_text().strip() == script_digest(lab.script("node1"))
    record = (markers / "smoke.json").read_text()
    assert '"applied_by": "exercise 3 start"' in record and '"stage": "smoke"' in record


def test_a_changed_script_is_not_done_whatever_its_marker(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    node = lab.node("node1")
    lab.runner.mark(node, lab.stage)
    [rel] = lab.plan.spec.scripts["node1"]
    changed = {**lab.files, rel: lab.files[rel] + "# changed\n"}

    runner = StageRunner(lab.plan, changed, lab.transport, Reporter(), folders=lab.folders)  # type: ignore[arg-type]

    assert runner.completed(node) == {"smoke": False}


# --- fetch ----------------------------------------------------------------------------


def test_fetch_copies_what_the_stage_names_into_the_lab_folder_0600(tmp_path: Path) -> None:
    admin = tmp_path / "admin.conf"
    admin.write_text("apiVersion: v1\nkind: Config\n")
    lab = Lab(tmp_path, fetches=(Fetch(path=str(admin), to="kubeconfig"),))
    old = lab.plan.lab_dir / "kubeconfig"
    old.write_text("an older cluster's")
    old.chmod(0o644)

    written = lab.runner.fetch(lab.node("master"), lab.stage)

    assert written == [old]
    assert old.read_text() == admin.read_text()
    assert old.stat().st_mode & 0o777 == 0o600


def test_fetch_of_a_file_the_vm_lacks_writes_nothing(tmp_path: Path) -> None:
    lab = Lab(tmp_path, fetches=(Fetch(path=str(tmp_path / "none"), to="kubeconfig"),))
    assert lab.runner.fetch(lab.node("master"), lab.stage) == []
    assert not (lab.plan.lab_dir / "kubeconfig").exists()


def test_the_catalog_says_what_is_fetched_not_the_stage_name(tmp_path: Path) -> None:
    plan, _ = render_lab({"nodes": TWO_NODES["nodes"]})  # the default build
    init = next(s for s in plan.stages if s.name == "init-master")
    assert init.fetches == (Fetch(path="/etc/kubernetes/admin.conf", to="kubeconfig"),)
    # The same stage with nothing to fetch fetches nothing.
    lab = Lab(tmp_path)
    assert lab.runner.fetch(lab.node("master"), dataclasses.replace(init, fetches=())) == []
    assert not lab.transport.ran("master", "cat")


# --- the steps together -----------------------------------------------------------------


def test_a_run_takes_each_vm_through_the_steps_in_order_then_skips(tmp_path: Path) -> None:
    admin = tmp_path / "admin.conf"
    admin.write_text("kind: Config\n")
    lab = Lab(tmp_path, fetches=(Fetch(path=str(admin), to="kubeconfig"),))

    runs = lab.runner.run()

    assert [(r.node, r.status) for r in runs] == [("master", "done"), ("node1", "done")]
    for name in ("master", "node1"):
        steps = [c.argv[0] for c in lab.transport.calls if c.node == name]
        # markers read, upload (folder, script), execute, mark, fetch
        assert steps == ["sh", "install", "sh", "bash", "sh", "cat"], steps
    assert (lab.plan.lab_dir / "kubeconfig").read_text() == admin.read_text()

    lab.transport.calls.clear()
    again = lab.new_runner().run()

    assert {r.status for r in again} == {"skipped"}
    assert [c.argv[0] for c in lab.transport.calls] == ["sh", "sh"]  # the markers, once per VM


def test_the_local_packages_reach_every_vm_once_until_the_folder_changes(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "debs"
    (repo / "pool").mkdir(parents=True)
    (repo / "Packages").write_text("Package: chrony\n")
    deb = os.urandom(4096)  # a binary file must arrive byte for byte
    (repo / "pool" / "chrony.deb").write_bytes(deb)
    lab = Lab(tmp_path, config={"mirror.local_repo": str(repo)})

    def shipped() -> list[str]:
        return [c.node for c in lab.transport.calls if any("local-repo.tgz" in a for a in c.argv)
                and c.argv[0] == "sh" and "put" in c.argv]  # fmt: skip

    lab.runner.run()
    assert sorted(shipped()) == ["master", "node1"]
    for name in ("master", "node1"):
        held = lab.on(name) / "local-repo"
        assert (held / "pool" / "chrony.deb").read_bytes() == deb
        assert (held / LOCAL_REPO_STAMP).read_text() == folder_digest(repo) + "\n"
        assert not list(lab.on(name).glob("*.tgz")), "the tarball stays behind"

    lab.transport.calls.clear()
    lab.new_runner().run()
    assert shipped() == []  # every VM holds this very folder

    (repo / "Packages").write_text("Package: chrony\nPackage: runc\n")
    lab.transport.calls.clear()
    lab.new_runner().run()
    assert sorted(shipped()) == ["master", "node1"]
    for name in ("master", "node1"):
        held = lab.on(name) / "local-repo"
        assert (held / "Packages").read_text().endswith("Package: runc\n")


def test_the_folder_digest_follows_content_and_names_not_times(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.deb").write_bytes(b"one")
    first = folder_digest(tmp_path)
    os.utime(tmp_path / "a" / "x.deb", (0, 0))
    assert folder_digest(tmp_path) == first
    (tmp_path / "a" / "x.deb").write_bytes(b"two")
    assert folder_digest(tmp_path) != first
    (tmp_path / "a" / "x.deb").write_bytes(b"one")
    (tmp_path / "a" / "x.deb").rename(tmp_path / "a" / "y.deb")
    assert folder_digest(tmp_path) != first


def test_a_failed_stage_leaves_no_marker_and_fetches_nothing(tmp_path: Path) -> None:
    admin = tmp_path / "admin.conf"
    admin.write_text("kind: Config\n")
    lab = Lab(tmp_path, fetches=(Fetch(path=str(admin), to="kubeconfig"),))
    lab.transport.answers["bash"] = lambda node, argv, stdin: (1, "", "yum: no repo\n")

    with pytest.raises(StageFailed, match="exited 1"):
        lab.runner.run()

    assert lab.runner.completed(lab.node("master")) == {"smoke": False}
    assert not (lab.plan.lab_dir / "kubeconfig").exists()
    assert not lab.transport.ran("master", "cat")


def test_every_stage_the_catalog_receives_or_fetches_for_is_one_the_runner_reads() -> None:
    plan, _ = render_lab({**TWO_NODES, "provision.stages": ["pki", "etcd", "node-components"]})
    stages: dict[str, Stage] = {s.name: s for s in plan.stages}
    [pki] = [s for s in stages.values() if s.leaves]
    for name in ("etcd", "node-components"):
        [bundle] = stages[name].receives
        assert bundle.from_master == pki.leaves
        assert bundle.source(plan.master) == pki.left_for(plan.master)
