"""collect() with a transport that replays the captures.

A running Kubernetes API cannot exist here, so the fake sits at the transport
boundary: it answers each command verify sends with what the v1.21.0 cluster's
captures hold (an evidence folder assembled from them, see verify_captures),
and records every command so the test can check what verify asked and when.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubelab import REPO_ROOT
from kubelab.errors import KubelabError
from kubelab.verify.checks import evaluate
from kubelab.verify.collect import DEFAULT_KUBECTL, HOST, NGINX_APP, _Collector, collect
from kubelab.verify.evidence import (
    CLEANUP,
    COMMANDS,
    DEPLOYMENT,
    DNS,
    ENDPOINTS,
    KUBE_SYSTEM_NAMESPACE,
    MANIFEST,
    META,
    NGINX_PODS,
    NODES,
    PODS,
    SERVICE,
    VERSION,
    http_url,
)
from kubelab.verify.expect import (
    CLUSTER,
    PROBE,
    PROVENANCE,
    TEARDOWN,
    Expected,
    ExpectedNode,
)
from kubelab.verify.provenance import MARKERS_SCRIPT
from tests.verify.verify_captures import (
    NODES_READY,
    Folder,
    build_folder,
    curl_stdout,
    fixture,
    read_json,
)


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str = ""


@dataclass
class Call:
    host: str
    argv: list[str]
    timeout: float
    phase: str | None = None
    stdin: str | None = None


@dataclass
class ReplayTransport:
    source: Folder
    down: set[str] = field(default_factory=set)  # addresses where nginx does not answer
    fail: Callable[[list[str]], BaseException | Result | None] = lambda argv: None
    calls: list[Call] = field(default_factory=list)
    deleted: bool = False

    def run(
        self,
        node: str,
        cmd: str,
        *args: str,
        timeout: float = 60.0,
        stdin: str | None = None,
        phase: str | None = None,
    ) -> Result:
        argv = [cmd, *args]
        self.calls.append(Call(node, argv, timeout, phase, stdin))
        failure = self.fail(argv)
        if isinstance(failure, BaseException):
            raise failure
        if isinstance(failure, Result):
            return failure
        return self.answer(argv, stdin)

    def _text(self, rel: str) -> str:
        return (self.source.root / rel).read_text()

    def answer(self, argv: list[str], stdin: str | None = None) -> Result:
        ns = self.source.expected.namespace
        if argv == ["sudo", "sh", "-c", MARKERS_SCRIPT]:
            return Result(0, "")  # a VM kubelab never provisioned: no stage markers
        if argv[0] == "curl":
            url = argv[-1]
            host = url.split("//", 1)[1].rsplit(":", 1)[0]
            if host in self.down:
                return Result(7, curl_stdout("", 0), f"curl: (7) Failed to connect to {host}")
            return Result(0, curl_stdout(self.source.welcome, 200))
        assert argv[: len(DEFAULT_KUBECTL)] == list(DEFAULT_KUBECTL), argv
        rest = " ".join(argv[len(DEFAULT_KUBECTL) :])
        if rest == "apply -f -":  # the manifest comes on stdin
            assert stdin is not None, "kubectl apply -f - with nothing on stdin"
            created = [
                f"{d['kind'].lower()}/{d['metadata']['name']} created"
                for d in yaml.safe_load_all(stdin)
                if d
            ]
            return Result(0, "\n".join(created) + "\n")
        assert stdin is None, f"stdin fed to {argv}"
        answers = {
            "get --raw /version": lambda: self._text(VERSION),
            "get nodes -o json": lambda: fixture(NODES_READY).read_text(),
            "get pods -A -o json": lambda: self._text(PODS),
            "get namespace kube-system -o json": self._namespace,
            f"-n {ns} get deployment nginx -o json": lambda: self._text(DEPLOYMENT),
            f"-n {ns} get pods -l app.kubernetes.io/name={NGINX_APP} -o json": lambda: self._text(
                NGINX_PODS
            ),
            f"-n {ns} get service nginx -o json": lambda: self._text(SERVICE),
            f"-n {ns} get endpoints nginx -o json": lambda: self._text(ENDPOINTS),
            f"get namespace {ns} --ignore-not-found -o name": lambda: (
                "" if self.deleted else f"namespace/{ns}\n"
            ),
        }
        if rest in answers:
            return Result(0, answers[rest]())
        if rest.startswith(f"delete namespace {ns} "):
            self.deleted = True
            return Result(0, f'namespace "{ns}" deleted\n')
        if rest.startswith(f"-n {ns} rollout status deployment/nginx "):
            self.deleted = False
            return Result(0, 'deployment "nginx" successfully rolled out\n')
        if rest.startswith(f"-n {ns} exec ") and " -- getent hosts " in rest:
            name = rest.rsplit(" ", 1)[1]
            cluster_ip = json.loads(self._text(SERVICE))["spec"]["clusterIP"]
            return Result(0, f"{cluster_ip}      {name}\n")
        raise AssertionError(f"verify sent a command the lab would not expect: {argv}")

    def _namespace(self) -> str:
        # No capture holds the kube-system Namespace object: derive the minimum,
        # with a UID made from the capture's machine ID.
        machine = read_json(NODES_READY)["items"][0]["status"]["nodeInfo"]["machineID"]
        uid = str(uuid.uuid5(uuid.NAMESPACE_OID, machine))
        doc = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "kube-system", "uid": uid},
        }
        return json.dumps(doc, indent=4) + "\n"

    def kubectl_calls(self) -> list[str]:
        return [
            " ".join(c.argv[len(DEFAULT_KUBECTL) :])
            for c in self.calls
            if c.argv[: len(DEFAULT_KUBECTL)] == list(DEFAULT_KUBECTL)
        ]


@pytest.fixture
def source(tmp_path: Path) -> Folder:
    return build_folder(tmp_path / "captured")


def with_machines(expected: Expected) -> Expected:
    """The lab's Vagrant machine names beside the Kubernetes node names."""
    machines = ["master"] + [f"node{i}" for i in range(1, len(expected.nodes))]
    return replace(
        expected,
        nodes=tuple(
            ExpectedNode(n.name, n.role, n.private_ip, m)
            for n, m in zip(expected.nodes, machines, strict=True)
        ),
    )


# The nginx image of the official mirror profile.
IMAGE = yaml.safe_load((REPO_ROOT / "provision" / "mirrors.yaml").read_text())["profiles"][
    "official"
]["nginx_image"]


def verdicts(folder: Path, expected: Expected) -> list[tuple[str, bool, str]]:
    return [(r.id, r.passed, r.detail) for r in evaluate(folder, expected)]


def test_collect_writes_the_documented_folder(source: Folder, tmp_path: Path) -> None:
    transport = ReplayTransport(source)
    expected = with_machines(source.expected)
    out = collect(
        transport,
        expected,
        tmp_path / "out",
        image=IMAGE,
        student_id="20231234",
        exercise=2,
        lab_config={"name": "default"},
        spec={"lab": "default"},
    )
    for rel in (
        META,
        COMMANDS,
        VERSION,
        NODES,
        PODS,
        KUBE_SYSTEM_NAMESPACE,
        MANIFEST,
        DEPLOYMENT,
        NGINX_PODS,
        SERVICE,
        ENDPOINTS,
        CLEANUP,
    ):
        assert (out / rel).is_file(), rel
    assert not (out / DNS).exists()
    # Exactly as kubectl printed them.
    assert (out / NODES).read_bytes() == fixture(NODES_READY).read_bytes()
    assert (out / PODS).read_text() == (source.root / PODS).read_text()
    # The same verdicts as the folder the captures make.
    assert verdicts(out, expected) == verdicts(source.root, source.expected)
    meta = json.loads((out / META).read_text())
    assert meta["student_id"] == "20231234"
    assert meta["exercise"] == 2
    assert meta["lab_config"] == {"name": "default"}
    assert meta["spec"] == {"lab": "default"}  # the lab's LabSpec.to_dict(), as given
    assert meta["image"] == IMAGE
    assert meta["started"] <= meta["finished"]
    assert meta["interrupted"] is False and meta["aborted"] is None
    assert meta["expected"]["nodes"][0]["machine"] == "master"
    identity = meta["cluster_identity"]
    namespace = json.loads((out / KUBE_SYSTEM_NAMESPACE).read_text())
    assert identity["kube_system_uid"] == namespace["metadata"]["uid"]
    captured = read_json(NODES_READY)["items"]
    assert identity["nodes"] == [
        {
            "name": n["metadata"]["name"],
            "machine_id": n["status"]["nodeInfo"]["machineID"],
            "boot_id": n["status"]["nodeInfo"]["bootID"],
            "system_uuid": n["status"]["nodeInfo"]["systemUUID"],
        }
        for n in captured
    ]


def test_commands_jsonl_records_every_command(source: Folder, tmp_path: Path) -> None:
    transport = ReplayTransport(source)
    out = collect(transport, source.expected, tmp_path / "out", image=IMAGE)
    lines = [json.loads(line) for line in (out / COMMANDS).read_text().splitlines()]
    assert len(lines) == len(transport.calls)
    for line, call in zip(lines, transport.calls, strict=True):
        assert line["node"] == call.host  # no machine names here: the same
        assert line["argv"] == call.argv
        assert line["phase"] == call.phase  # the runner got the phase the record shows
        if call.stdin is not None:
            assert line["stdin"] == MANIFEST  # the manifest itself is in MANIFEST
            assert (out / MANIFEST).read_text() == call.stdin
        else:
            assert line["stdin"] is None
        assert line["rc"] == 0 and line["error"] is None
        assert line["started"] <= line["finished"]
        if line["stdout"]:
            assert (out / line["stdout"]).is_file()
    saved = {line["saves"]: line["stdout"] for line in lines if line["saves"]}
    assert saved[NODES] == NODES and saved[PODS] == PODS


def test_commands_issued_in_order(source: Folder, tmp_path: Path) -> None:
    transport = ReplayTransport(source)
    expected = with_machines(source.expected)
    ns = expected.namespace
    out = collect(transport, expected, tmp_path / "out", image=IMAGE)
    kubectl = transport.kubectl_calls()
    rollout = expected.deadlines.rollout
    assert kubectl.index(f"-n {ns} rollout status deployment/nginx --timeout={rollout}s") < (
        kubectl.index(f"-n {ns} get deployment nginx -o json")
    )
    # The namespace goes at the end, and the look that confirms it comes last.
    assert kubectl[-2].startswith(f"delete namespace {ns} --ignore-not-found --wait=true")
    assert kubectl[-1] == f"get namespace {ns} --ignore-not-found -o name"
    # The apply comes after the snapshot and before the rollout wait.
    apply_at = next(i for i, c in enumerate(transport.calls) if "apply" in c.argv)
    rollout_at = next(i for i, c in enumerate(transport.calls) if "rollout" in c.argv)
    nodes_at = next(
        i for i, c in enumerate(transport.calls) if c.argv[-3:] == ["nodes", "-o", "json"]
    )
    assert nodes_at < apply_at < rollout_at
    assert transport.calls[rollout_at].timeout > rollout
    hosts = [n.host for n in expected.nodes]
    # kubectl runs on the master, by the transport's (Vagrant) name.
    assert {c.host for c in transport.calls if "kubectl" in c.argv} == {"master"}
    # Before anything else, each VM's stage markers (what kubelab applied there).
    markers = [c.host for c in transport.calls if c.argv[-1] == MARKERS_SCRIPT]
    assert markers == hosts and transport.calls[0].argv[-1] == MARKERS_SCRIPT
    # The manifest: one replica per schedulable node (the captured master is tainted).
    manifest = [d for d in yaml.safe_load_all((out / MANIFEST).read_text()) if d]
    deployment = next(d for d in manifest if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
    service = next(d for d in manifest if d["kind"] == "Service")
    assert service["spec"]["ports"][0]["nodePort"] == expected.nodeport
    assert transport.calls[apply_at].argv == [*DEFAULT_KUBECTL, "apply", "-f", "-"]
    assert transport.calls[apply_at].stdin == (out / MANIFEST).read_text()
    # curl: every node to every pod IP and the ClusterIP; the master to every NodePort.
    curls = [(c.host, c.argv[-1]) for c in transport.calls if c.argv[0] == "curl"]
    pod_ips = [p["status"]["podIP"] for p in json.loads((out / NGINX_PODS).read_text())["items"]]
    cluster_ip = json.loads((out / SERVICE).read_text())["spec"]["clusterIP"]
    assert sorted(curls) == sorted(
        [(h, f"http://{ip}:80/") for h in hosts for ip in pod_ips]
        + [(h, f"http://{cluster_ip}:80/") for h in hosts]
        + [("master", f"http://{n.private_ip}:{expected.nodeport}/") for n in expected.nodes]
    )
    # Records carry the Kubernetes node names.
    assert {p.name.split("__")[0] for p in (out / "curl" / "pod-ips").glob("*.json")} == {
        n.name for n in expected.nodes
    }


def test_each_command_carries_its_phase(source: Folder, tmp_path: Path) -> None:
    transport = ReplayTransport(source)
    collect(transport, source.expected, tmp_path / "out", image=IMAGE)
    phases = [c.phase for c in transport.calls]
    # The phases in order, each one's commands together: the runner is told, it never
    # has to guess from a command line.
    assert list(dict.fromkeys(phases)) == [PROVENANCE, CLUSTER, PROBE, TEARDOWN]
    assert phases.count(PROVENANCE) == len(source.expected.nodes)
    ns = source.expected.namespace
    teardown = [" ".join(c.argv[len(DEFAULT_KUBECTL) :]) for c in transport.calls[-2:]]
    assert phases[-2:] == [TEARDOWN, TEARDOWN] and phases.count(TEARDOWN) == 2
    assert teardown[0].startswith(f"delete namespace {ns} ")
    assert teardown[1] == f"get namespace {ns} --ignore-not-found -o name"


def test_the_nodeport_from_this_machine_goes_through_the_same_runner(
    source: Folder, tmp_path: Path
) -> None:
    # HOST is a node of the runner like the VMs (a LocalTarget of the real Transport).
    transport = ReplayTransport(source)
    expected = source.expected
    out = collect(transport, expected, tmp_path / "out", image=IMAGE, nodeport_from=HOST)
    from_host = [c for c in transport.calls if c.host == HOST]
    assert [c.argv[-1] for c in from_host] == [
        http_url(n.private_ip, expected.nodeport) for n in expected.nodes
    ]
    assert all(c.argv[0] == "curl" and c.phase == PROBE for c in from_host)
    nodeport = next(r for r in evaluate(out, expected) if r.id == "nodeport")
    assert nodeport.passed, nodeport.detail


def test_ctrl_c_during_the_rollout_still_deletes_the_namespace(
    source: Folder, tmp_path: Path
) -> None:
    def interrupt(argv: list[str]) -> BaseException | None:
        return KeyboardInterrupt() if "rollout" in argv else None

    transport = ReplayTransport(source, fail=interrupt)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        collect(transport, source.expected, out, image=IMAGE)
    ns = source.expected.namespace
    kubectl = transport.kubectl_calls()
    assert kubectl[-2].startswith(f"delete namespace {ns} ")
    assert not any("get deployment" in c for c in kubectl)  # nothing ran after the interrupt
    meta = json.loads((out / META).read_text())
    assert meta["interrupted"] is True and meta["finished"]
    results = {r.id: r for r in evaluate(out, source.expected)}
    assert results["cleanup"].passed
    assert results["nginx-rollout"].detail == f"no evidence: {DEPLOYMENT}"
    assert results["nodes"].passed


def test_a_step_that_raises_still_deletes_the_namespace(
    source: Folder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any, nodeport_from: Any) -> None:
        raise ValueError("a bug in a step")

    monkeypatch.setattr(_Collector, "curls", broken)
    transport = ReplayTransport(source)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="a bug in a step"):
        collect(transport, source.expected, out, image=IMAGE)
    assert transport.kubectl_calls()[-2].startswith(f"delete namespace {source.expected.namespace}")
    assert json.loads((out / META).read_text())["aborted"] == "ValueError: a bug in a step"
    assert (out / CLEANUP).is_file()


def test_a_transport_error_is_evidence_not_a_crash(source: Folder, tmp_path: Path) -> None:
    def drop(argv: list[str]) -> BaseException | None:
        return (
            ConnectionResetError("connection dropped")
            if argv[-3:] == ["nodes", "-o", "json"]
            else None
        )

    transport = ReplayTransport(source, fail=drop)
    out = collect(transport, source.expected, tmp_path / "out", image=IMAGE)
    results = {r.id: r for r in evaluate(out, source.expected)}
    detail = results["nodes"].detail
    assert detail.startswith(f"no evidence: {NODES} (`sudo kubectl")
    assert detail.endswith("ConnectionResetError: connection dropped)")
    # Without nodes.json verify cannot tell which nodes are schedulable: one per node.
    manifest = [d for d in yaml.safe_load_all((out / MANIFEST).read_text()) if d]
    assert next(d for d in manifest if d["kind"] == "Deployment")["spec"]["replicas"] == 3
    assert transport.kubectl_calls()[-2].startswith("delete namespace")


def test_a_failed_kubectl_leaves_a_gap_with_its_exit_code(source: Folder, tmp_path: Path) -> None:
    refused = (
        "The connection to the server 10.10.1.31:6443 was refused - did you specify the right "
        "host or port?\n"
    )

    def down(argv: list[str]) -> Result | None:
        return Result(1, "", refused) if "/version" in argv else None

    out = collect(
        ReplayTransport(source, fail=down), source.expected, tmp_path / "out", image=IMAGE
    )
    api = next(r for r in evaluate(out, source.expected) if r.id == "api")
    assert not api.passed
    assert api.detail.startswith(f"no evidence: {VERSION} (`sudo kubectl")
    assert api.detail.endswith(f"exited 1: {refused.strip()})")
    line = next(json.loads(x) for x in (out / COMMANDS).read_text().splitlines() if "/version" in x)
    assert (out / line["stderr"]).read_text() == refused


def test_one_pod_ip_down_fails_exactly_pod_ips(source: Folder, tmp_path: Path) -> None:
    pod = json.loads((source.root / NGINX_PODS).read_text())["items"][0]
    ip = pod["status"]["podIP"]
    out = collect(
        ReplayTransport(source, down={ip}), source.expected, tmp_path / "out", image=IMAGE
    )
    results = evaluate(out, source.expected)
    assert [r.id for r in results if not r.passed] == ["pod-ips"]
    detail = next(r for r in results if r.id == "pod-ips").detail
    assert detail.startswith(f"{ip} ({pod['metadata']['name']} on {pod['spec']['nodeName']})")
    assert detail.count("curl exited 7") == len(source.expected.nodes)


def test_dns_when_asked(source: Folder, tmp_path: Path) -> None:
    expected = replace(source.expected, dns=True)
    transport = ReplayTransport(source)
    out = collect(transport, expected, tmp_path / "out", image=IMAGE)
    record = json.loads((out / DNS).read_text())
    assert record["name"] == f"nginx.{expected.namespace}.svc.cluster.local"
    assert next(r for r in evaluate(out, expected) if r.id == "dns").passed


def test_run_is_collect_then_evaluate(source: Folder, tmp_path: Path) -> None:
    folder = collect(ReplayTransport(source), source.expected, tmp_path / "out", image=IMAGE)
    results = evaluate(folder, source.expected)
    assert results == evaluate(tmp_path / "out", source.expected)
    assert all(r.passed for r in results)


def test_refuses_a_folder_with_old_evidence(source: Folder) -> None:
    with pytest.raises(KubelabError, match="is not empty"):
        collect(ReplayTransport(source), source.expected, source.root, image=IMAGE)


def test_nodeport_from_an_unknown_node(source: Folder, tmp_path: Path) -> None:
    with pytest.raises(KubelabError, match="no node named 'nowhere'"):
        collect(
            ReplayTransport(source),
            source.expected,
            tmp_path / "out",
            image=IMAGE,
            nodeport_from="nowhere",
        )


def test_an_unreachable_master_is_tried_once_then_at_cleanup(
    source: Folder, tmp_path: Path
) -> None:
    def refuse(argv: list[str]) -> BaseException:
        return ConnectionRefusedError("[Errno 111] Connection refused")

    transport = ReplayTransport(source, fail=refuse)
    out = collect(transport, source.expected, tmp_path / "out", image=IMAGE)
    # The first command on each VM (its stage markers) finds it unreachable; the rest
    # are recorded as not run, except the namespace delete, which is always tried.
    hosts = [n.host for n in source.expected.nodes]
    assert [c.host for c in transport.calls] == [*hosts, "k8s-controller1"]
    assert all(c.argv[-1] == MARKERS_SCRIPT for c in transport.calls[:-1])
    assert transport.kubectl_calls()[0].startswith("delete namespace")
    results = evaluate(out, source.expected)
    assert [r.id for r in results if r.passed] == []
    nodes = next(r for r in results if r.id == "nodes")
    assert "not run: k8s-controller1 unreachable (ConnectionRefusedError" in nodes.detail
    lines = (out / COMMANDS).read_text().splitlines()
    assert len(lines) > len(transport.calls)  # skipped commands are recorded too


def test_a_timed_out_command_states_its_deadline(source: Folder, tmp_path: Path) -> None:
    def hang(argv: list[str]) -> Result | None:
        return Result(124, "", "") if "deployment" in argv else None

    out = collect(
        ReplayTransport(source, fail=hang), source.expected, tmp_path / "out", image=IMAGE
    )
    rollout = next(r for r in evaluate(out, source.expected) if r.id == "nginx-rollout")
    limit = source.expected.deadlines.command
    assert rollout.detail.startswith(f"no evidence: {DEPLOYMENT} (`sudo kubectl")
    assert rollout.detail.endswith(f"on k8s-controller1 timed out after {limit:g} s)")
