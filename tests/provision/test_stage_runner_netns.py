"""The StageRunner's steps over real SSH: kubelab's Transport against real sshd hosts.

tests/support/netns_hosts.py starts one sshd per VM at the lab addresses, in a
network namespace of the test's own; the runner's VmFolders point into the test
user's home there (the hosts share this machine's disk, so the two VMs' files are
kept apart by the stage itself: node1 runs it, the master only gives its file).
The stage is a short script of the test's, so what is tested is the runner: the
upload (a script, a file received from the master, 0600), the run under sudo with
the received path in the environment, the log, the marker a second run skips by,
the file fetched back, a failure's last lines, and a deadline the VM enforces.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubelab.plan import Fetch, Plan, Receive
from kubelab.progress import Reporter
from kubelab.provision import StageFailed, StageRunner, VmFolders
from kubelab.transport import Transport
from tests.provision.harness import render_lab
from tests.support.netns_hosts import NetnsHosts, missing_requirements

_missing = missing_requirements()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.netns,
    pytest.mark.skipif(_missing is not None, reason=f"real sshd hosts: {_missing}"),
]

ONE_NODE = {
    "nodes": [
        {"name": "master", "role": "master", "ip": "192.168.56.10"},
        {"name": "node1", "role": "node", "ip": "192.168.56.11"},
    ],
    "provision.stages": ["smoke"],
}
# The stage as node1 runs it: where it runs, what it received (and its mode), stdout
# and stderr, then an exit status of the test's choosing.
STAGE = """\
echo "on $(hostname) as node1"
echo "received: $(cat "$KUBELAB_PKI_BUNDLE") mode $(stat -c %a "$KUBELAB_PKI_BUNDLE")"
echo "to stderr" >&2
for i in $(seq 1 30); do echo "line $i"; done
printf 'kind: Config\\n' > "$HOME/admin.conf"
exit {rc}
"""


class Lab:
    def __init__(self, hosts: NetnsHosts, tmp_path: Path, *, rc: int = 0, deadline: int = 60):
        plan, files = render_lab(ONE_NODE, lab_dir=tmp_path / "lab")
        plan.lab_dir.mkdir()
        self.hosts = hosts
        home = hosts.root / "home"
        [smoke] = plan.stages
        self.stage = dataclasses.replace(
            smoke,
            runs_on="nodes",
            deadline=deadline,
            receives=(
                Receive(
                    from_master=f"{home}/pki/{{hostname}}.tar",
                    to="pki-bundle.tar",
                    env="KUBELAB_PKI_BUNDLE",
                    missing="run the pki stage first",
                ),
            ),
            fetches=(Fetch(path=f"{home}/admin.conf", to="kubeconfig"),),
        )
        self.plan: Plan = dataclasses.replace(plan, stages=(self.stage,))
        [rel] = plan.spec.scripts["node1"]
        self.files = {**files, rel: STAGE.format(rc=rc)}
        self.folders = VmFolders(scripts=f"{home}/scripts", markers=f"{home}/stages")
        self.home = home
        # What the master holds for node1, as the pki stage leaves it. The test user's
        # own: the harness's sudo runs a command with that user's rights.
        (home / "pki").mkdir()
        bundle = home / "pki" / "node1.tar"
        bundle.write_text("node1's certificates")
        for path in (home / "pki", bundle):
            shutil.chown(path, hosts.user, hosts.user)

    def runner(self, transport: Transport) -> StageRunner:
        return StageRunner(self.plan, self.files, transport, Reporter(), folders=self.folders)

    def over_ssh(self, body: Any) -> Any:
        """`body(runner)` inside the namespace, with one Transport for the whole body."""

        def in_ns() -> Any:
            with Transport(self.hosts.targets(), connect_timeout=10) as transport:
                return body(self.runner(transport))

        return self.hosts.call_in_ns(in_ns)


@pytest.fixture
def hosts() -> Iterator[NetnsHosts]:
    with NetnsHosts("stages", ["192.168.56.10", "192.168.56.11"], names=["master", "node1"]) as h:
        yield h


def test_each_step_over_ssh_then_a_second_run_skips(hosts: NetnsHosts, tmp_path: Path) -> None:
    lab = Lab(hosts, tmp_path)
    node = lab.plan.node("node1")

    def steps(runner: StageRunner) -> tuple[dict[str, bool], Any, dict[str, bool], list[Any]]:
        before = runner.completed(node)
        upload = runner.upload(node, lab.stage)
        result = runner.execute(node, lab.stage, upload)
        log = runner.record(node, lab.stage, upload, result)
        runner.mark(node, lab.stage)
        fetched = runner.fetch(node, lab.stage)
        return before, (upload, result, log, fetched), runner.completed(node), runner.run()

    before, (upload, result, log, fetched), after, second = lab.over_ssh(steps)

    assert before == {"smoke": False} and after == {"smoke": True}
    assert upload.script == f"{lab.home}/scripts/{Path(upload.script).name}"
    assert upload.env == {"KUBELAB_PKI_BUNDLE": f"{lab.home}/scripts/pki-bundle.tar"}
    assert result.ok and "on node1 as node1" in result.stdout
    assert "received: node1's certificates mode 600" in result.stdout
    text = log.read_text()
    assert text.startswith(f"# {lab.plan.spec.scripts['node1'][0]} on node1: rc=0 in ")
    assert "line 30" in text and "# --- stderr ---\nto stderr" in text
    assert fetched == [lab.plan.lab_dir / "kubeconfig"]
    assert fetched[0].read_text() == "kind: Config\n"
    assert fetched[0].stat().st_mode & 0o777 == 0o600
    assert [(r.node, r.status) for r in second] == [("node1", "skipped")]


def test_a_failing_stage_over_ssh_names_its_last_lines_and_leaves_no_marker(
    hosts: NetnsHosts, tmp_path: Path
) -> None:
    lab = Lab(hosts, tmp_path, rc=3)

    def run(runner: StageRunner) -> tuple[StageFailed, dict[str, bool]]:
        with pytest.raises(StageFailed) as failed:
            runner.run()
        return failed.value, runner.completed(lab.plan.node("node1"))

    failed, done = lab.over_ssh(run)

    assert failed.node == "node1" and "exited 3" in failed.message
    assert "line 30" in failed.message and "line 10\n" not in failed.message
    assert done == {"smoke": False}
    assert not (lab.plan.lab_dir / "kubeconfig").exists()


def test_a_stage_past_its_deadline_is_stopped_on_the_vm(hosts: NetnsHosts, tmp_path: Path) -> None:
    lab = Lab(hosts, tmp_path, deadline=2)
    [rel] = lab.plan.spec.scripts["node1"]
    lab.files[rel] = "sleep 60\n"

    def run(runner: StageRunner) -> StageFailed:
        with pytest.raises(StageFailed) as failed:
            runner.run()
        return failed.value

    failed = lab.over_ssh(run)

    assert "timed out after 2 s" in failed.message
