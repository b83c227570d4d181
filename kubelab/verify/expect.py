"""What verify expects of a cluster: the nodes, the pinned version, the names it uses.

A projection of the lab's LabSpec (`Expected.from_spec`) plus what this run
collects, for `invoke verify` (the plan's spec) and live grading (the spec
kubelab/grade/inventory.py builds from a student's inventory entry) alike.
Checks compare the evidence against this, never against the evidence's own
claims about itself. meta.json keeps `to_dict()`, and
`from_dict` is its one reader: `verify --evidence`, grading and live grading.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, NamedTuple

from kubelab import defaults, readback
from kubelab.names import bare_version
from kubelab.plan import is_hardway

if TYPE_CHECKING:
    from kubelab.plan import LabSpec

ROLES = ("master", "node")

# What verify collects, in groups a run selects; collect.py tags each command with its
# phase and a check runs when its phase was collected: the node preparation of
# exercise 1 (over SSH, no cluster needed), the cluster's own state, the student's own
# nginx Deployment and NodePort Service (exercise 2), verify's nginx probe.
NODE_PREP, CLUSTER, OWN, PROBE = "node-prep", "cluster", "own", "probe"
PHASES = (NODE_PREP, CLUSTER, OWN, PROBE)
# Two more phases tag commands but are no run's choice: every run reads each VM's stage
# markers first (provenance), and a run that probes deletes verify's namespace last,
# also after a failure (teardown: live grading lets it past the cluster's deadline).
PROVENANCE, TEARDOWN = "provenance", "teardown"
# What a plain `invoke verify` and every evidence folder older than phases collected.
DEFAULT_PHASES = (CLUSTER, PROBE)


class ExpectedNode(NamedTuple):
    name: str  # the Kubernetes node name (the VM's hostname, with the student ID when set)
    role: str  # master | node
    private_ip: str  # the lab-network address kubelet must register as InternalIP
    # The name the transport knows the VM by (the Vagrant machine name: master,
    # node1, ...); the Kubernetes name when they are the same.
    machine: str = ""
    # The name the node registered under, when the student named it otherwise
    # (k8s-master-<ID>, <ID>-node1): found in nodes.json by `identify_nodes`.
    registered: str = ""

    @property
    def host(self) -> str:
        return self.machine or self.name

    @property
    def k8s_name(self) -> str:
        """The name to look the node up by in the cluster's own output."""
        return self.registered or self.name


@dataclass(frozen=True)
class Deadlines:
    """How long each wait may take, in seconds. Results state the one that ran out."""

    command: float = 60.0  # any single kubectl call
    rollout: int = 180  # kubectl rollout status of verify's nginx
    # A pod still Pending or ContainerCreating this long after it was created counts as stuck.
    pending: int = 180
    curl: int = 5  # curl --max-time
    cleanup: int = 120  # kubectl delete namespace --timeout


@dataclass(frozen=True)
class Expected:
    nodes: tuple[ExpectedNode, ...]
    kubernetes_version: str  # exact, without the "v": "1.31.13"
    pod_cidr: str  # what kubeadm init --pod-network-cidr was given: "10.244.0.0/16"
    namespace: str = defaults.VERIFY_NAMESPACE  # verify's own; deleted at the end of every run
    nodeport: int = defaults.VERIFY_NODEPORT
    dns: bool = False  # --dns: also check that the Service name resolves inside a pod
    cni: str = "flannel"
    # vagrant-libvirt's management (NAT) network: an InternalIP in it means kubelet
    # picked eth0 instead of the lab network.
    management_cidr: str = defaults.MANAGEMENT_CIDR
    deadlines: Deadlines = field(default_factory=Deadlines)
    # The student whose hostnames the nodes carry ("" when none was given).
    student_id: str = ""
    # What was collected (see PHASES): the checks of the other phases do not run.
    phases: tuple[str, ...] = DEFAULT_PHASES
    language: str = "en"  # of the hints: the exercise's (`invoke lab --lang`)
    # A lab built the hard way (etcd, no kubeadm): verify runs the checks of
    # kubelab/verify/checks_hardway.py instead of the cluster's.
    hardway: bool = False
    # The stages that built it (the exercise's start + solution): a hard-way check of a
    # part not built (the flannel network, the components) does not run.
    stages: tuple[str, ...] = ()
    # The hard way's ports and files on the VMs, as the spec holds them (evidence older
    # than them reads back with the constants it was collected with).
    etcd_client_port: int = defaults.ETCD_CLIENT_PORT
    etcd_peer_port: int = defaults.ETCD_PEER_PORT
    health_ports: dict[str, int] = field(default_factory=lambda: dict(defaults.HEALTH_PORTS))
    guest_paths: dict[str, str] = field(default_factory=lambda: dict(defaults.GUEST_PATHS))
    # The kube-dns Service's ClusterIP the lab's kubelets are given ("": not known, as in
    # evidence from before it was recorded or a live inventory).
    dns_service_ip: str = ""

    def __post_init__(self) -> None:
        # Accept plain (name, role, private_ip[, machine]) tuples.
        nodes = tuple(ExpectedNode(*n) for n in self.nodes)
        for node in nodes:
            if node.role not in ROLES:
                raise ValueError(
                    f"node {node.name}: role must be one of {ROLES}, not {node.role!r}"
                )
        object.__setattr__(self, "nodes", nodes)
        phases = tuple(self.phases)
        unknown = [p for p in phases if p not in PHASES]
        if unknown:
            raise ValueError(f"unknown phases {unknown}: known are {PHASES}")
        object.__setattr__(self, "phases", phases)
        object.__setattr__(self, "stages", tuple(self.stages))
        object.__setattr__(self, "kubernetes_version", bare_version(self.kubernetes_version))

    @classmethod
    def from_spec(
        cls,
        spec: LabSpec,
        *,
        dns: bool = False,
        phases: tuple[str, ...] = DEFAULT_PHASES,
        language: str = "en",
        stages: tuple[str, ...] | None = None,
    ) -> Expected:
        """What verify expects of the lab the spec describes. `stages`: what built the
        lab when it is not what the config lists (an exercise's start + solution)."""
        built = spec.stages if stages is None else tuple(stages)
        return cls(
            nodes=tuple(
                ExpectedNode(name=n.k8s_name, role=n.role, private_ip=n.ip, machine=n.name)
                for n in spec.nodes
            ),
            kubernetes_version=spec.kubernetes_version,
            pod_cidr=spec.pod_cidr,
            namespace=spec.verify_namespace,
            nodeport=spec.verify_nodeport,
            dns=dns,
            cni=spec.cni,
            management_cidr=spec.management_cidr,
            student_id=spec.student_id,
            phases=phases,
            language=language,
            hardway=is_hardway(built),
            stages=built,
            etcd_client_port=spec.etcd_client_port,
            etcd_peer_port=spec.etcd_peer_port,
            health_ports=dict(spec.health_ports),
            guest_paths=dict(spec.guest_paths),
            dns_service_ip=spec.dns_service_ip,
        )

    @property
    def masters(self) -> tuple[ExpectedNode, ...]:
        return tuple(n for n in self.nodes if n.role == "master")

    def node(self, name: str) -> ExpectedNode:
        """A node by its Kubernetes or its machine name; KeyError when there is none."""
        for node in self.nodes:
            if name in (node.name, node.machine, node.registered):
                return node
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["nodes"] = [n._asdict() for n in self.nodes]
        data["phases"] = list(self.phases)
        data["stages"] = list(self.stages)
        return data

    @classmethod
    def from_dict(cls, data: object) -> Expected:
        """The inverse of to_dict, for meta.json read back by `verify --evidence`, grading
        and live grading alike. Evidence is hostile: every type is checked, unknown keys
        (from a newer kubelab) are passed over; ValueError says what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("'expected' is not a mapping")
        nodes = data.get("nodes")
        if not isinstance(nodes, list) or not all(
            isinstance(n, dict) and all(isinstance(n.get(k), str) for k in _NODE_TEXT)
            for n in nodes
        ):
            raise ValueError("nodes must be a list of {name, role, private_ip} texts")
        raw_deadlines = data.get("deadlines") or {}
        if not isinstance(raw_deadlines, dict):
            raise ValueError("deadlines must be a mapping")
        deadline_fields = {f.name for f in fields(Deadlines)}
        deadlines = {k: v for k, v in raw_deadlines.items() if k in deadline_fields}
        if not all(readback.is_number(v) for v in deadlines.values()):
            raise ValueError("deadlines must be numbers")
        rest: dict[str, Any] = {}
        for key, kind in _FIELD_TYPES.items():
            if key not in data:
                continue
            value = data[key]
            if key in readback.SHARED_MAPPINGS:
                value = readback.mapping(key, value, readback.SHARED_MAPPINGS[key])
            elif kind is tuple:
                value = readback.texts(value, key)
            elif not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                raise ValueError(f"{key} is {type(value).__name__}, not {kind.__name__}")
            rest[key] = value
        if "kubernetes_version" not in rest or "pod_cidr" not in rest:
            raise ValueError("kubernetes_version and pod_cidr are required")
        return cls(
            nodes=tuple(
                ExpectedNode(
                    n["name"],
                    n["role"],
                    n["private_ip"],
                    n["machine"] if isinstance(n.get("machine"), str) else "",
                    n["registered"] if isinstance(n.get("registered"), str) else "",
                )
                for n in nodes
            ),
            deadlines=Deadlines(**deadlines),
            **rest,
        )


_NODE_TEXT = ("name", "role", "private_ip")
# The type of each plain field of Expected as meta.json holds it (tuple: a list of texts).
_FIELD_TYPES: dict[str, type] = {
    "kubernetes_version": str,
    "pod_cidr": str,
    "namespace": str,
    "nodeport": int,
    "dns": bool,
    "cni": str,
    "management_cidr": str,
    "student_id": str,
    "phases": tuple,
    "stages": tuple,
    "language": str,
    "hardway": bool,
    "etcd_client_port": int,
    "etcd_peer_port": int,
    "health_ports": dict,
    "guest_paths": dict,
    "dns_service_ip": str,
}
