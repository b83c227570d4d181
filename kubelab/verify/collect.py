"""Collect: run verify's commands on the lab over the transport and write the evidence.

The order is a list you can read top to bottom, each step in a phase that a run
selects (`Expected.phases`); every command carries its phase to the runner and into
its record (provenance and teardown are phases every run has): read each VM's stage
markers (provenance); probe each VM's node preparation (node-prep, exercise 1); look
at the cluster (version, nodes, pods); deploy verify's nginx and wait for its
rollout, curl pod IPs, the ClusterIP and the NodePort from the nodes, resolve the
Service name (with --dns), and always delete verify's namespace, also on failure
and Ctrl-C (teardown).
Nothing here decides pass or fail: `checks.evaluate` does that over the folder.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kubelab import REPO_ROOT, defaults
from kubelab.errors import KubelabError
from kubelab.templating import environment
from kubelab.transport import CommandResult
from kubelab.verify.checks import own_pod_targets, own_workload, pod_ready, schedulable_nodes
from kubelab.verify.evidence import (
    CLEANUP,
    DEPLOYMENT,
    DNS,
    ENDPOINTS,
    KUBE_SYSTEM_NAMESPACE,
    MANIFEST,
    META,
    NGINX_PODS,
    NODES,
    OWN_DEPLOYMENTS,
    OWN_SERVICES,
    PODS,
    SERVICE,
    VERSION,
    Evidence,
    EvidenceWriter,
    cluster_identity,
    curl_argv,
    curl_record,
    curl_record_path,
    http_url,
    meta_record,
    node_prep_path,
    now,
)
from kubelab.verify.expect import (
    CLUSTER,
    NODE_PREP,
    OWN,
    PROBE,
    PROVENANCE,
    TEARDOWN,
    Expected,
    ExpectedNode,
)
from kubelab.verify.provenance import MARKERS_SCRIPT, markers_path

MANIFEST_TEMPLATE = REPO_ROOT / "labs" / "manifests" / "verify-nginx.yaml.j2"
NODE_PREP_PROBE = REPO_ROOT / "labs" / "probes" / "node-prep.sh"
# A hostname as a VM reports it, before it is handed to the other VMs to resolve.
_HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
NGINX_APP = "kubelab-verify-nginx"
# admin.conf is root's; the transport logs in as the VM user, hence sudo.
DEFAULT_KUBECTL: tuple[str, ...] = (
    "sudo",
    "kubectl",
    "--kubeconfig",
    defaults.GUEST_PATHS["admin_kubeconfig"],
)
CLUSTER_DOMAIN = "cluster.local"
# The machine verify runs on, as a source of requests: the NodePort is curled from here
# when it can route to the lab network, as a student's browser would reach it. The
# runner knows it as a node of this name (a kubelab.transport.LocalTarget).
HOST = "host"


class CommandRunner(Protocol):
    """What collect runs every command through: kubelab.transport.Transport (an SSH
    target per VM, a LocalTarget named HOST for this machine), or live grading's
    deadline wrapper around one. Each command carries its phase."""

    def run(
        self,
        node: str,
        cmd: str,
        *args: str,
        timeout: float = 60.0,
        stdin: str | None = None,
        phase: str | None = None,
    ) -> CommandResult: ...


class StepReporter(Protocol):
    def step(
        self, title: str, deadline: float | None = None
    ) -> contextlib.AbstractContextManager[None]: ...


def render_manifest(namespace: str, image: str, replicas: int, nodeport: int) -> str:
    template = environment(MANIFEST_TEMPLATE.parent, trim=False).get_template(
        MANIFEST_TEMPLATE.name
    )
    return template.render(
        namespace=namespace, image=image, replicas=replicas, nodeport=nodeport, app=NGINX_APP
    )


@dataclass
class _Outcome:
    rc: int | None
    stdout: str
    stderr: str
    error: str


class _Collector:
    def __init__(
        self,
        runner: CommandRunner,
        expected: Expected,
        writer: EvidenceWriter,
        kubectl: Sequence[str],
    ) -> None:
        self.runner = runner
        self.expected = expected
        self.writer = writer
        self.kubectl_argv = list(kubectl)
        self.master = expected.masters[0]
        self.deadlines = expected.deadlines
        self.ns = expected.namespace
        # Nodes whose connection failed, with the error: their later commands are
        # recorded as not run instead of each waiting for its own connect timeout.
        self.unreachable: dict[str, str] = {}
        # The phase of the step running now: each command carries it to the runner and
        # into its record.
        self.phase = PROVENANCE

    # -- running one command -----------------------------------------------------

    def run(
        self,
        check: str,
        node: ExpectedNode,
        argv: Sequence[str],
        *,
        saves: str | None = None,
        timeout: float | None = None,
        keep_on_failure: bool = False,
        shown: Sequence[str] | None = None,
        retry: bool = False,
        stdin: str | None = None,
        stdin_from: str | None = None,
    ) -> _Outcome:
        """Run one command and record it; never raises for a failure on the node's side.

        `retry`: try even a node that failed before (the clean-up always tries).
        `stdin` is fed to the command; `stdin_from` names the evidence file holding it.
        """
        started = now()
        clock = time.monotonic()
        limit = timeout or self.deadlines.command
        outcome = _Outcome(None, "", "", "")
        if node.host in self.unreachable and not retry:
            outcome.error = f"not run: {node.name} unreachable ({self.unreachable[node.host]})"
        else:
            try:
                result = self.runner.run(
                    node.host, argv[0], *argv[1:], timeout=limit, stdin=stdin, phase=self.phase
                )
                outcome = _Outcome(result.rc, result.stdout, result.stderr, "")
                self.unreachable.pop(node.host, None)
            except Exception as exc:
                # A transport failure (no connection, a dropped one) is evidence like any
                # exit code; KeyboardInterrupt is not an Exception and still stops the run.
                outcome.error = f"{type(exc).__name__}: {exc}"
                self.unreachable.setdefault(node.host, outcome.error)
        self.writer.record(
            check=check,
            node=node.name,
            argv=list(shown or argv),
            rc=outcome.rc,
            stdout=outcome.stdout,
            stderr=outcome.stderr,
            error=outcome.error,
            started=started,
            finished=now(),
            duration=time.monotonic() - clock,
            saves=saves,
            keep_on_failure=keep_on_failure,
            timeout=limit,
            phase=self.phase,
            stdin=stdin_from,
        )
        return outcome

    def kubectl(
        self,
        check: str,
        args: str,
        *,
        saves: str | None = None,
        timeout: float | None = None,
        retry: bool = False,
    ) -> _Outcome:
        """kubectl on the master; `args` split on spaces (no name here holds one)."""
        argv = [*self.kubectl_argv, *args.split()]
        return self.run(check, self.master, argv, saves=saves, timeout=timeout, retry=retry)

    def _load(self, rel: str) -> Any:
        try:
            return json.loads((self.writer.root / rel).read_text())
        except (OSError, ValueError):
            return None

    # -- the steps ----------------------------------------------------------------

    def provenance(self) -> None:
        """Each VM's stage markers: what kubelab applied there, when, and by what."""
        for node in self.expected.nodes:
            self.run(
                "provenance",
                node,
                ["sudo", "sh", "-c", MARKERS_SCRIPT],
                saves=markers_path(node.host),
            )

    def node_prep(self) -> None:
        """Each VM's hostname, then the node-prep probe on each, resolving all of them."""
        hostnames = []
        for node in self.expected.nodes:
            got = self.run("hostname", node, ["hostname"])
            name = got.stdout.strip()
            if got.rc == 0 and _HOSTNAME.match(name):
                hostnames.append(name)
        script = NODE_PREP_PROBE.read_text(encoding="utf-8")
        for node in self.expected.nodes:
            argv = ["sudo", "sh", "-c", script, "node-prep", *hostnames]
            shown = ["sudo", "sh", "-c", f"<{NODE_PREP_PROBE.relative_to(REPO_ROOT)}>"]
            self.run(
                "node-prep",
                node,
                argv,
                saves=node_prep_path(node.host),
                shown=[*shown, "node-prep", *hostnames],
            )

    def snapshot(self) -> None:
        self.kubectl("api", "get --raw /version", saves=VERSION)
        self.kubectl("nodes", "get nodes -o json", saves=NODES)
        self.kubectl("system-pods", "get pods -A -o json", saves=PODS)
        self.kubectl(
            "system-pods", "get namespace kube-system -o json", saves=KUBE_SYSTEM_NAMESPACE
        )

    def own(self, nodeport_from: ExpectedNode) -> None:
        """The student's own nginx (exercise 2): their Deployments and Services, then
        curl its pod IPs from every node and its NodePort on every node."""
        self.kubectl("own-deployment", "get deployments -A -o json", saves=OWN_DEPLOYMENTS)
        self.kubectl("own-nodeport", "get services -A -o json", saves=OWN_SERVICES)
        try:
            own = own_workload(
                self._load(OWN_DEPLOYMENTS),
                self._load(OWN_SERVICES),
                self._load(PODS),
                self.expected,
            )
        except Exception:  # noqa: BLE001 - evidence missing or malformed: the checks say why
            return
        for source in self.expected.nodes:
            for ip, _ in own_pod_targets(own):
                self.curl("own-pod-ips", source, ip, http_url(ip, 80))
        ports = ((own.service or {}).get("spec") or {}).get("ports") or [{}]
        if ports[0].get("nodePort"):
            for node in self.expected.nodes:
                url = http_url(node.private_ip, int(ports[0]["nodePort"]))
                self.curl("own-nodeport", nodeport_from, node.private_ip, url)

    def deploy(self, image: str) -> None:
        ns, deadlines = self.ns, self.deadlines
        try:
            replicas = len(schedulable_nodes(self._load(NODES), self.expected))
        except Exception:  # no usable nodes.json: the nodes check says why
            replicas = len(self.expected.nodes)
        manifest = render_manifest(ns, image, replicas, self.expected.nodeport)
        self.writer.write_text(MANIFEST, manifest)
        # A namespace left Terminating by an earlier run would refuse the apply.
        self.kubectl(
            "nginx-rollout",
            f"delete namespace {ns} --ignore-not-found --wait=true --timeout={deadlines.cleanup}s",
            timeout=deadlines.cleanup + 30,
        )
        self.run(
            "nginx-rollout",
            self.master,
            [*self.kubectl_argv, "apply", "-f", "-"],
            stdin=manifest,
            stdin_from=MANIFEST,
        )
        self.kubectl(
            "nginx-rollout",
            f"-n {ns} rollout status deployment/nginx --timeout={deadlines.rollout}s",
            timeout=deadlines.rollout + 30,
        )
        self.kubectl("nginx-rollout", f"-n {ns} get deployment nginx -o json", saves=DEPLOYMENT)
        self.kubectl(
            "nginx-rollout",
            f"-n {ns} get pods -l app.kubernetes.io/name={NGINX_APP} -o json",
            saves=NGINX_PODS,
        )
        self.kubectl("cluster-ip", f"-n {ns} get service nginx -o json", saves=SERVICE)
        self.kubectl("cluster-ip", f"-n {ns} get endpoints nginx -o json", saves=ENDPOINTS)

    def curl(self, check: str, source: ExpectedNode, target: str, url: str) -> None:
        record_rel = curl_record_path(check, source.name, target)
        argv = curl_argv(url, self.deadlines.curl)
        outcome = self.run(
            check,
            source,
            argv,
            saves=record_rel.removesuffix(".json") + ".out",
            keep_on_failure=True,
            timeout=self.deadlines.curl + 10,
        )
        record = curl_record(
            check,
            source.name,
            target,
            url,
            outcome.rc,
            outcome.stdout,
            outcome.stderr,
            outcome.error,
        )
        self.writer.write_json(record_rel, record)

    def curls(self, nodeport_from: ExpectedNode) -> None:
        pods = (self._load(NGINX_PODS) or {}).get("items") or []
        pod_ips = sorted(
            (p["metadata"]["name"], p["status"]["podIP"])
            for p in pods
            if (p.get("status") or {}).get("podIP")
        )
        for source in self.expected.nodes:
            for _, ip in pod_ips:
                self.curl("pod-ips", source, ip, http_url(ip, 80))
        spec = (self._load(SERVICE) or {}).get("spec") or {}
        port = (spec.get("ports") or [{}])[0]
        cluster_ip = spec.get("clusterIP")
        if cluster_ip and port.get("port"):
            url = http_url(cluster_ip, int(port["port"]))
            for source in self.expected.nodes:
                self.curl("cluster-ip", source, cluster_ip, url)
        if port.get("nodePort"):
            for node in self.expected.nodes:
                url = http_url(node.private_ip, int(port["nodePort"]))
                self.curl("nodeport", nodeport_from, node.private_ip, url)

    def dns(self) -> None:
        name = f"nginx.{self.ns}.svc.{CLUSTER_DOMAIN}"
        pods = (self._load(NGINX_PODS) or {}).get("items") or []
        ready = sorted(p["metadata"]["name"] for p in pods if pod_ready(p))
        record: dict[str, Any] = {"name": name, "pod": ready[0] if ready else None}
        if not ready:
            record.update(rc=None, stdout="", stderr="", error="no ready nginx pod to ask from")
        else:
            got = self.kubectl("dns", f"-n {self.ns} exec {ready[0]} -- getent hosts {name}")
            record.update(rc=got.rc, stdout=got.stdout, stderr=got.stderr, error=got.error or None)
        self.writer.write_json(DNS, record)

    def cleanup(self) -> None:
        timeout = self.deadlines.cleanup
        delete = self.kubectl(
            "cleanup",
            f"delete namespace {self.ns} --ignore-not-found --wait=true --timeout={timeout}s",
            timeout=timeout + 30,
            retry=True,
        )
        # Empty stdout with exit 0 from `get --ignore-not-found` means the namespace is gone.
        look = self.kubectl("cleanup", f"get namespace {self.ns} --ignore-not-found -o name")
        record = {
            "namespace": self.ns,
            "delete": {"rc": delete.rc, "stderr": delete.stderr, "error": delete.error or None},
            "check": {
                "rc": look.rc,
                "stdout": look.stdout,
                "stderr": look.stderr,
                "error": look.error or None,
            },
        }
        self.writer.write_json(CLEANUP, record)


@contextlib.contextmanager
def _step(
    reporter: StepReporter | None, title: str, deadline: float | None = None
) -> Iterator[None]:
    if reporter is None:
        yield
    else:
        with reporter.step(title, deadline):
            yield


def collect(
    runner: CommandRunner,
    expected: Expected,
    out_dir: Path | str,
    *,
    image: str,
    kubectl: Sequence[str] = DEFAULT_KUBECTL,
    nodeport_from: str | None = None,
    lab_config: Mapping[str, Any] | None = None,
    student_id: str | None = None,
    exercise: str | int | None = None,
    reporter: StepReporter | None = None,
    restores: Sequence[Mapping[str, Any]] = (),
    spec: Mapping[str, Any] | None = None,
) -> Path:
    """Run verify's commands and write the evidence folder; return its path.

    `image` is the nginx image of the lab's mirror profile. `nodeport_from`
    names the node the NodePort is curled from (default: the master), or HOST for
    this machine (`runner` must know HOST then). The namespace is deleted in every
    case, and cleanup.json and meta.json are written even when the run is interrupted.
    """
    if not expected.masters:
        raise KubelabError(
            "verify needs a master node in the lab config", hint="give one node the role master"
        )
    try:
        if nodeport_from == HOST:
            source = ExpectedNode(HOST, "node", "")
        else:
            source = expected.node(nodeport_from) if nodeport_from else expected.masters[0]
    except KeyError:
        raise KubelabError(
            f"no node named {nodeport_from!r} to curl the NodePort from",
            hint="use a node name from the lab config",
        ) from None
    writer = EvidenceWriter(out_dir)
    collector = _Collector(runner, expected, writer, kubectl)
    meta = meta_record(
        expected, student_id=student_id, exercise=exercise, lab_config=lab_config, spec=spec
    )
    meta |= {
        "image": image,
        "interrupted": False,
        "aborted": None,
        "cluster_identity": None,
        # The lab's snapshot restores (`invoke lab --reset`), from the lab folder.
        "restores": [dict(r) for r in restores],
    }
    # Written first too, so even a folder from a killed run says what it was.
    writer.write_json(META, meta)
    deadlines = expected.deadlines
    try:
        collector.phase = PROVENANCE
        with _step(reporter, "What kubelab applied on each VM", deadlines.command):
            collector.provenance()
        if NODE_PREP in expected.phases:
            collector.phase = NODE_PREP
            nodes = len(expected.nodes)
            with _step(
                reporter,
                "Node preparation: swap, modules, sysctls, SELinux, firewall, names, time",
                deadlines.command * 2 * nodes,
            ):
                collector.node_prep()
        if CLUSTER in expected.phases:
            collector.phase = CLUSTER
            with _step(reporter, "Cluster state: version, nodes, pods", deadlines.command * 4):
                collector.snapshot()
        if OWN in expected.phases:
            collector.phase = OWN
            with _step(reporter, "Your nginx: Deployment, Service, pod IPs, NodePort"):
                collector.own(source)
        if PROBE in expected.phases:
            collector.phase = PROBE
            with _step(
                reporter,
                f"Deploy nginx ({image}) and wait for the rollout",
                deadlines.rollout + deadlines.cleanup + deadlines.command * 5,
            ):
                collector.deploy(image)
            with _step(reporter, "curl pod IPs, ClusterIP and NodePort from the nodes"):
                collector.curls(source)
            if expected.dns:
                with _step(reporter, "Resolve the Service name in a pod", deadlines.command):
                    collector.dns()
    except KeyboardInterrupt:
        meta["interrupted"] = True
        raise
    except BaseException as exc:
        meta["aborted"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        try:
            if PROBE in expected.phases:
                collector.phase = TEARDOWN
                with _step(
                    reporter,
                    f"Delete namespace {expected.namespace}",
                    deadlines.cleanup + deadlines.command,
                ):
                    collector.cleanup()
        finally:
            meta["finished"] = now()
            meta["cluster_identity"] = cluster_identity(Evidence(writer.root))
            writer.write_json(META, meta)
    return writer.root
