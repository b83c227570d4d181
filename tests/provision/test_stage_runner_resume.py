"""A second `invoke up` after kubeadm stopped halfway: the StageRunner resumes to done.

The StageRunner of kubelab/provision.py drives the rendered stage scripts in
isolated roots (root_transport.RootTransport), a master and a node sharing one
stub cluster. The kubeadm double stops the way the real one does when a test asks
it to (tests/provision/stubs/kubelab-stub, `fail-once`): init after its kubeconfig
phase (admin.conf written, no control plane), join after kubelet-start (ca.crt and
bootstrap-kubelet.conf left, no Node), an image pull failing once. Each first run
fails or retries as it would on a VM; the second run reaches the completed state;
a completed lab is left alone.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kubelab import defaults
from kubelab.config import load_config
from kubelab.plan import Plan, make_plan
from kubelab.progress import Reporter
from kubelab.provision import StageFailed, StageRunner
from kubelab.render import render
from tests.provision.harness import Guest, guest_factory
from tests.provision.root_transport import RootTransport

TWO_NODES = {
    "nodes": [
        {"name": "master", "role": "master", "ip": "192.168.56.10"},
        {"name": "node1", "role": "node", "ip": "192.168.56.11"},
    ]
}


class Lab:
    def __init__(
        self, new_guest: Any, tmp_path: Path, retry_delay: int = defaults.RETRY_DELAY
    ) -> None:
        plan = make_plan(load_config(None, dict(TWO_NODES)), tmp_path / "lab")
        self.plan: Plan = replace(plan, spec=replace(plan.spec, retry_delay=retry_delay))
        self.files = render(self.plan)
        self.cluster = cluster = tmp_path / "cluster"  # the stub API server's state
        cluster.mkdir()
        self.guests: dict[str, Guest] = {
            node.name: new_guest("centos7", node, cluster=cluster) for node in self.plan.nodes
        }
        self.transport = RootTransport(self.guests)

    def up(self) -> list[Any]:
        """What `invoke up` does once the VMs answer: the StageRunner over every stage."""
        self.transport.commands.clear()
        runner = StageRunner(self.plan, self.files, self.transport, Reporter())  # type: ignore[arg-type]
        return runner.run()

    def fail_once(self, node: str, what: str) -> None:
        folder = self.guests[node].ctl / "fail-once"
        folder.mkdir(exist_ok=True)
        (folder / what).write_text("")

    def kubeadm(self, node: str, sub: str) -> int:
        return len([c for c in self.guests[node].calls() if c.argv[:2] == ["kubeadm", sub]])

    def done(self) -> dict[str, dict[str, bool]]:
        runner = StageRunner(self.plan, self.files, self.transport, Reporter())  # type: ignore[arg-type]
        return {node.name: runner.completed(node) for node in self.plan.nodes}


@pytest.fixture
def lab(new_guest: Any, tmp_path: Path) -> Lab:
    return Lab(new_guest, tmp_path)


@pytest.fixture(scope="module")
def completed_lab(tmp_path_factory: pytest.TempPathFactory, base: Path, harness_layer: Path) -> Lab:
    """A lab one `invoke up` completed, made once for the two tests that read it or run
    `up` on it again (which changes nothing, as the second checks): in either order."""
    folder = tmp_path_factory.mktemp("completed-lab")
    lab = Lab(guest_factory(folder, base, harness_layer), folder)
    lab.up()
    return lab


def all_done(lab: Lab) -> bool:
    return all(all(stages.values()) for stages in lab.done().values())


def test_init_that_stopped_after_kubeconfig_is_reset_and_run_again(lab: Lab) -> None:
    lab.fail_once("master", "init-after-kubeconfig")
    with pytest.raises(StageFailed) as failed:
        lab.up()
    assert failed.value.stage.name == "init-master" and failed.value.node == "master"
    assert lab.guests["master"].exists("/etc/kubernetes/admin.conf")  # what fooled the old test
    assert not lab.done()["master"]["init-master"]

    lab.up()

    assert all_done(lab)
    assert lab.kubeadm("master", "reset") == 1
    assert lab.kubeadm("master", "init") == 2
    assert "stopped halfway" in (lab.plan.log_dir / "master" / "05-init-master.log").read_text()
    assert (lab.plan.lab_dir / "kubeconfig").stat().st_mode & 0o777 == 0o600


def test_join_that_stopped_after_kubelet_start_is_reset_and_joins(lab: Lab) -> None:
    lab.fail_once("node1", "join-after-kubelet-start")
    with pytest.raises(StageFailed) as failed:
        lab.up()
    assert failed.value.stage.name == "join" and failed.value.node == "node1"
    node = lab.guests["node1"]
    assert node.exists("/etc/kubernetes/pki/ca.crt")
    assert node.exists("/etc/kubernetes/bootstrap-kubelet.conf")

    lab.up()

    assert all_done(lab)
    # The master forgot the node before the new join command was fetched ...
    forget = lab.transport.ran("master", "delete node")
    fetch = lab.transport.ran("master", "token create")
    order = [line for _, line in lab.transport.commands]
    assert forget and fetch and order.index(forget[0]) < order.index(fetch[0])
    # ... and the node reset itself, then joined (preflight would refuse the leftovers).
    assert lab.kubeadm("node1", "reset") == 1
    assert lab.kubeadm("node1", "join") == 2
    assert not node.exists("/etc/kubernetes/bootstrap-kubelet.conf")
    assert "node1" in (lab.cluster / "nodes").read_text().split()


def test_join_without_reset_fails_preflight_as_kubeadm_does(lab: Lab) -> None:
    # The double refuses leftovers the way kubeadm's FileAvailable checks do.
    lab.fail_once("node1", "join-after-kubelet-start")
    with pytest.raises(StageFailed):
        lab.up()
    again = lab.guests["node1"].run("kubeadm join --config /dev/null")
    assert again.rc == 1
    assert "[ERROR FileAvailable--etc-kubernetes-pki-ca.crt]" in again.stderr


def test_an_image_pull_that_fails_once_is_retried_in_the_same_run(
    new_guest: Any, tmp_path: Path
) -> None:
    # The stages wait the spec's retry delay between tries (10 s in a real lab); here 1 s.
    lab = Lab(new_guest, tmp_path, retry_delay=1)
    lab.fail_once("master", "images-pull")

    lab.up()

    assert all_done(lab)
    pulls = [c for c in lab.guests["master"].calls() if c.argv[1:3] == ["config", "images"]]
    assert len(pulls) == 2
    log = (lab.plan.log_dir / "master" / "04-kube-packages.log").read_text()
    assert "failed (attempt 1 of 3); again in 1s" in log


def test_a_completed_lab_is_left_alone(completed_lab: Lab) -> None:
    lab = completed_lab
    assert all_done(lab)
    before = {name: len(guest.calls()) for name, guest in lab.guests.items()}

    runs = lab.up()

    assert {run.status for run in runs} == {"skipped"}
    assert not lab.transport.ran("master", "token create")
    assert not lab.transport.ran("master", "delete node")
    assert {name: len(guest.calls()) for name, guest in lab.guests.items()} == before


def test_no_file_holds_the_join_token_after_a_full_run(completed_lab: Lab) -> None:
    """The bootstrap token reaches the node on stdin only: not in the lab folder, its
    logs, any file a VM kept, or an argv any stub saw."""
    lab = completed_lab
    assert all_done(lab)
    token = b"abcdef.0123456789abcdef"  # what the kubeadm double's `token create` prints
    assert lab.kubeadm("master", "token") == 1  # made by the one run that joined the node
    places = [p for p in lab.plan.lab_dir.rglob("*") if p.is_file()]
    for guest in lab.guests.values():
        places += [p for p in guest.upper.rglob("*") if p.is_file() and not p.is_symlink()]
        places.append(guest.calls_log)
    assert places
    holding = [str(p) for p in places if token in p.read_bytes()]
    assert holding == []
