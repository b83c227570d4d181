"""Plan: what a validated config means for this host.

A plan resolves everything the templates and the backend need: each VM's
hostname, the libvirt names that keep two labs apart, the catalog entries for
the pinned versions, the mirror profile with its placeholders filled, and the
ordered provisioning stages. It is pure: it reads only the config and the
catalog data files.

`Plan.spec` is the LabSpec: every fact about the lab derived once (node
identities, addresses and interface, the API endpoint, the version tag, the
images, verify's namespace and NodePort, script and log paths, the stages).
Templates print its fields, verify's expectations are a projection of it, and
meta.json keeps its `to_dict()`, read back by `LabSpec.from_dict` alone.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from kubelab import defaults, readback
from kubelab.catalog import catalog, mirror_profiles
from kubelab.config_cache import CachedConfig
from kubelab.errors import KubelabError
from kubelab.names import hostname_for, version_tag

if TYPE_CHECKING:
    from typing import TypeAlias

    from kubelab.config import LabConfig

    # A validated config: by kubelab.config in this process, or kept by an earlier one
    # (kubelab/config_cache.py); a plan reads both alike.
    ValidConfig: TypeAlias = LabConfig | CachedConfig

LAB_ROOT_NAME = ".lab"


@dataclass(frozen=True)
class PlannedNode:
    name: str  # the Vagrant machine name (master, node1, ...): what vagrant and ssh know
    hostname: str  # the VM's hostname, carrying the student ID when set
    role: str  # master | node
    ip: str  # the private (lab network) address, on `interface`
    cpus: int
    memory: int
    k8s_name: str  # the name kubelet registers the node under: the hostname (kubeadm's)
    interface: str  # the guest interface of the lab network (flannel's --iface)

    @property
    def is_master(self) -> bool:
        return self.role == "master"


def for_node(pattern: str, node: PlannedNode) -> str:
    """A catalog path naming the VM it is for ({hostname}), filled in for `node`."""
    return pattern.replace("{hostname}", node.hostname)


@dataclass(frozen=True)
class Fetch:
    """A file the host copies from the VM into the lab folder once the stage succeeded."""

    path: str  # on the VM
    to: str  # its name in the lab folder (written 0600: it may hold credentials)


@dataclass(frozen=True)
class Receive:
    """A file the host copies from the master into the VM before the stage runs."""

    from_master: str  # its path on the master, {hostname} standing for the receiving VM's
    to: str  # its name in the VM's script folder (written 0600)
    env: str  # the variable that hands the stage its path
    missing: str  # the hint when the master has no such file

    def source(self, node: PlannedNode) -> str:
        """The file on the master for `node`."""
        return for_node(self.from_master, node)


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    # all | master | nodes: which VMs run it. Stages marked `after_nodes` run on
    # the master once the nodes are done (waiting for the whole cluster).
    runs_on: str
    deadline: int  # seconds
    template: str  # path under provision/
    after_nodes: bool = False
    needs_join_command: bool = False  # a fresh join command from the master, on stdin
    fetches: tuple[Fetch, ...] = ()
    receives: tuple[Receive, ...] = ()
    leaves: str = ""  # a file per VM it leaves on the master ({hostname}), or ""

    def left_for(self, node: PlannedNode) -> str:
        """The file this stage leaves for `node`."""
        return for_node(self.leaves, node)

    @property
    def leaves_folder(self) -> str:
        return str(PurePosixPath(self.leaves).parent)


@dataclass(frozen=True)
class StageFiles:
    """What one stage moves between the host and the VMs (the catalog's `fetches`,
    `receives`, `leaves`), as the spec records it."""

    name: str
    fetches: tuple[Fetch, ...] = ()
    receives: tuple[Receive, ...] = ()
    leaves: str = ""

    @classmethod
    def of(cls, stage: Stage) -> StageFiles:
        return cls(stage.name, stage.fetches, stage.receives, stage.leaves)


# The version of LabSpec.to_dict's layout. meta.json (evidence format 3 and later) keeps
# the spec under "spec"; from_dict reads any layout up to this one and passes over
# keys it does not know (a newer kubelab's additions). 2: the components' ports, the
# guest paths and each stage's files.
SPEC_FORMAT = 2


@dataclass(frozen=True)
class LabSpec:
    """Every derived fact of one lab, computed once in `make_plan`; read-only after."""

    lab: str
    student_id: str  # "" when none was given
    nodes: tuple[PlannedNode, ...]  # the master first
    lab_cidr: str  # the private network the nodes' ips are in
    management_cidr: str  # vagrant-libvirt's NAT network, on eth0
    api_port: int
    api_endpoint: str  # the master's ip:port, what nodes join
    kubernetes_version: str  # exact, without the "v": "1.31.13"
    version_tag: str  # with it, as kubeadm and the API server write it: "v1.31.13"
    pod_cidr: str
    service_cidr: str
    cni: str
    runtime: str
    image_registry: str
    kubeadm_api_version: str  # the apiVersion of kubeadm's config: "kubeadm.k8s.io/v1beta4"
    pause_image: str  # the sandbox image the runtime is configured with
    component_images: dict[str, str]  # control plane component -> image
    nginx_image: str  # verify's nginx
    verify_namespace: str
    verify_nodeport: int
    log_dir: str  # relative to the lab folder
    scripts: dict[str, tuple[str, ...]]  # machine name -> its stage scripts, in order
    stages: tuple[str, ...]
    hardway: bool  # etcd built by hand, no kubeadm (exercise 4)
    # etcd's ports in the hard way. A spec written before they were recorded reads back
    # with these defaults: they are the constants it was built with.
    etcd_client_port: int = defaults.ETCD_CLIENT_PORT
    etcd_peer_port: int = defaults.ETCD_PEER_PORT
    # Added in format 2; a format-1 spec reads back with the constants it was built with.
    kubelet_port: int = defaults.KUBELET_PORT
    health_ports: dict[str, int] = field(default_factory=lambda: dict(defaults.HEALTH_PORTS))
    guest_paths: dict[str, str] = field(default_factory=lambda: dict(defaults.GUEST_PATHS))
    # What each stage moves between host and VMs, in build order (empty in format 1).
    stage_files: tuple[StageFiles, ...] = ()
    retry_delay: int = defaults.RETRY_DELAY  # seconds between a stage's download tries
    # The cluster DNS Service's address (kubelet's clusterDNS, the kube-dns Service);
    # "" in a spec written before it was recorded.
    dns_service_ip: str = ""
    format: int = SPEC_FORMAT

    @property
    def master(self) -> PlannedNode:
        return next(n for n in self.nodes if n.is_master)

    @property
    def lab_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.lab_cidr)

    def etcd_client_url(self, node: PlannedNode) -> str:
        """Where `node`'s etcd member serves its clients (TLS, the private address only)."""
        return f"https://{node.ip}:{self.etcd_client_port}"

    def etcd_peer_url(self, node: PlannedNode) -> str:
        return f"https://{node.ip}:{self.etcd_peer_port}"

    @property
    def etcd_endpoints(self) -> str:
        """Every member's client URL, comma-separated: etcdctl's, flanneld's and
        kube-apiserver's list of etcd servers."""
        return ",".join(self.etcd_client_url(n) for n in self.nodes)

    @property
    def etcd_initial_cluster(self) -> str:
        """etcd's ETCD_INITIAL_CLUSTER: every member as hostname=peer URL."""
        return ",".join(f"{n.hostname}={self.etcd_peer_url(n)}" for n in self.nodes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["nodes"] = [asdict(n) for n in self.nodes]
        data["scripts"] = {name: list(paths) for name, paths in self.scripts.items()}
        data["stages"] = list(self.stages)
        data["stage_files"] = [
            {
                "name": s.name,
                "fetches": [asdict(f) for f in s.fetches],
                "receives": [asdict(r) for r in s.receives],
                "leaves": s.leaves,
            }
            for s in self.stage_files
        ]
        return data

    @classmethod
    def from_dict(cls, data: object) -> LabSpec:
        """The inverse of to_dict, for a meta.json that may be hostile or newer.

        Every type is checked; keys this kubelab does not know are passed over; a spec
        of a newer format than SPEC_FORMAT is refused. ValueError says what is wrong.
        """
        if not isinstance(data, dict):
            raise ValueError("the spec is not a mapping")
        layout = data.get("format")
        if (
            not isinstance(layout, int)
            or isinstance(layout, bool)
            or not 1 <= layout <= SPEC_FORMAT
        ):
            raise ValueError(f"spec format {layout!r} is not one this kubelab reads")
        values: dict[str, Any] = {}
        for spec_field in fields(cls):
            if spec_field.name not in data:
                if spec_field.default is not MISSING or spec_field.default_factory is not MISSING:
                    continue  # a field added since: the spec was built with its default
                raise ValueError(f"the spec has no {spec_field.name!r}")
            values[spec_field.name] = _checked(spec_field.name, data[spec_field.name])
        return cls(**values)


def _checked(name: str, value: object) -> Any:
    """One LabSpec field read back from JSON, its type checked."""
    if name == "nodes":
        if not isinstance(value, list) or not value:
            raise ValueError("nodes must be a non-empty list")
        return tuple(_checked_node(n) for n in value)
    if name == "stages":
        return readback.texts(value, "stages")
    if name == "scripts":
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ValueError("scripts must map machine names to lists of paths")
        return {k: readback.texts(v, f"scripts of {k}") for k, v in value.items()}
    if name in _MAPPINGS:
        return readback.mapping(name, value, _MAPPINGS[name])
    if name == "stage_files":
        if not isinstance(value, list):
            raise ValueError("stage_files must be a list")
        return tuple(_checked_stage_files(s) for s in value)
    kind = _SPEC_TYPES[name]
    if kind is int and not readback.is_int(value):
        raise ValueError(f"{name} must be a whole number")
    if kind is not int and not isinstance(value, kind):
        raise ValueError(f"{name} is {type(value).__name__}, not {kind.__name__}")
    return value


def _checked_node(value: object) -> PlannedNode:
    if not isinstance(value, dict):
        raise ValueError("a node is not a mapping")
    values: dict[str, Any] = {}
    for node_field in fields(PlannedNode):
        item = value.get(node_field.name)
        kind = int if node_field.name in ("cpus", "memory") else str
        if not (readback.is_int(item) if kind is int else isinstance(item, str)):
            raise ValueError(f"a node's {node_field.name} must be a {kind.__name__}")
        values[node_field.name] = item
    if values["role"] not in ("master", "node"):
        raise ValueError(f"a node's role must be master or node, not {values['role']!r}")
    return PlannedNode(**values)


def _texts_of(value: object, keys: tuple[str, ...], what: str) -> dict[str, str]:
    """A mapping holding a text under each of `keys` (others passed over)."""
    if not isinstance(value, dict) or not all(isinstance(value.get(k), str) for k in keys):
        raise ValueError(f"{what} must be a mapping with the texts {', '.join(keys)}")
    return {k: value[k] for k in keys}


def _checked_stage_files(value: object) -> StageFiles:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ValueError("a stage's files must be a mapping with a name")
    fetches, receives = value.get("fetches", []), value.get("receives", [])
    if not isinstance(fetches, list) or not isinstance(receives, list):
        raise ValueError(f"stage {value['name']}: fetches and receives must be lists")
    leaves = value.get("leaves", "")
    if not isinstance(leaves, str):
        raise ValueError(f"stage {value['name']}: leaves must be a text")
    return StageFiles(
        name=value["name"],
        fetches=tuple(Fetch(**_texts_of(f, ("path", "to"), "a fetch")) for f in fetches),
        receives=tuple(
            Receive(**_texts_of(r, ("from_master", "to", "env", "missing"), "a receive"))
            for r in receives
        ),
        leaves=leaves,
    )


# The mapping fields: how each value is checked, what it is called, and the constants a
# name the file lacks reads back as.
_MAPPINGS: dict[str, readback.MappingRule] = {
    "component_images": (readback.is_text, "texts", {}),
    **readback.SHARED_MAPPINGS,
}


# The type of each plain LabSpec field as JSON holds it.
_SPEC_TYPES: dict[str, type] = {
    "lab": str,
    "student_id": str,
    "lab_cidr": str,
    "management_cidr": str,
    "api_port": int,
    "api_endpoint": str,
    "kubernetes_version": str,
    "version_tag": str,
    "pod_cidr": str,
    "service_cidr": str,
    "cni": str,
    "runtime": str,
    "image_registry": str,
    "kubeadm_api_version": str,
    "pause_image": str,
    "nginx_image": str,
    "verify_namespace": str,
    "verify_nodeport": int,
    "log_dir": str,
    "hardway": bool,
    "etcd_client_port": int,
    "etcd_peer_port": int,
    "kubelet_port": int,
    "retry_delay": int,
    "dns_service_ip": str,
    "format": int,
}


def is_hardway(stages: list[str] | tuple[str, ...]) -> bool:
    """Stages that build etcd by hand and no kubeadm cluster (exercise 4)."""
    return "etcd" in stages and "init-master" not in stages


def script_path(node: PlannedNode, index: int, stage_name: str) -> str:
    return f"scripts/{node.name}/{index:02d}-{stage_name}.sh"


@dataclass(frozen=True)
class Plan:
    config: ValidConfig
    lab_dir: Path
    prefix: str  # vagrant-libvirt default_prefix: domains and volumes start with it
    network_name: str  # the libvirt network of the lab (private, no DHCP)
    nodes: tuple[PlannedNode, ...]
    stages: tuple[Stage, ...]
    kubernetes: dict[str, Any]
    runtime: dict[str, Any]
    cni: dict[str, Any]
    guest: dict[str, Any]
    mirror: dict[str, str]
    spec: LabSpec
    network: dict[str, str] = field(default_factory=dict)
    # The exercise the lab was started for (`invoke lab`), or None. In an exercise lab
    # Vagrant sets plain hostnames: carrying the student ID is the student's step.
    exercise: int | None = None
    hardway: dict[str, Any] = field(default_factory=dict)  # the catalog's pinned hard-way parts

    @property
    def master(self) -> PlannedNode:
        return next(n for n in self.nodes if n.is_master)

    @property
    def workers(self) -> tuple[PlannedNode, ...]:
        return tuple(n for n in self.nodes if not n.is_master)

    def node(self, name: str) -> PlannedNode:
        for candidate in self.nodes:
            if name in (candidate.name, candidate.hostname):
                return candidate
        raise KubelabError(
            f"no node named {name!r} in this lab",
            hint=f"use one of {', '.join(n.name for n in self.nodes)}",
            code=2,
        )

    def stages_for(self, node: PlannedNode) -> list[Stage]:
        return [s for s in self.stages if _runs_on(s, node)]

    @property
    def log_dir(self) -> Path:
        return self.lab_dir / defaults.LOG_DIR


def _runs_on(stage: Stage, node: PlannedNode) -> bool:
    return (
        stage.runs_on == "all"
        or (stage.runs_on == "master" and node.is_master)
        or (stage.runs_on == "nodes" and not node.is_master)
    )


def default_lab_dir(repo_root: Path, config: ValidConfig) -> Path:
    suffix = f"-{config.student_id.lower()}" if config.student_id else ""
    return repo_root / LAB_ROOT_NAME / f"{config.name}{suffix}"


def lab_prefix(config: ValidConfig, lab_dir: Path) -> str:
    """A default_prefix no other lab on this host shares.

    The lab name and student ID make it readable; a short digest of the lab
    folder's absolute path keeps two folders with the same config apart.
    """
    digest = hashlib.sha256(os.fsencode(lab_dir)).hexdigest()[:6]
    student = f"-{config.student_id.lower()}" if config.student_id else ""
    return f"kubelab-{config.name}{student}-{digest}-"


def stage_catalog() -> list[dict[str, Any]]:
    return list(catalog()["stages"])


def guest_path(pattern: str) -> str:
    """A catalog path with its {pki_dir}-style names (defaults.GUEST_PATHS) filled in;
    {hostname} is left for `for_node`."""
    for name, path in defaults.GUEST_PATHS.items():
        pattern = pattern.replace("{" + name + "}", path)
    return pattern


def resolve_stages(names: list[str] | None) -> tuple[Stage, ...]:
    entries = stage_catalog()
    if names is None:
        names = [s["name"] for s in entries if not s.get("optional")]
    order = [s["name"] for s in entries]
    chosen = sorted(set(names), key=order.index)
    stages = []
    for entry in entries:
        if entry["name"] not in chosen:
            continue
        stages.append(
            Stage(
                name=entry["name"],
                title=entry["title"],
                runs_on=entry["runs_on"],
                deadline=int(entry["deadline"]),
                template=f"stages/{entry['name']}.sh.j2",
                after_nodes=bool(entry.get("after_nodes", False)),
                needs_join_command=bool(entry.get("needs_join_command", False)),
                fetches=tuple(
                    Fetch(path=guest_path(f["path"]), to=f["to"]) for f in entry.get("fetches", ())
                ),
                receives=tuple(
                    Receive(**{**r, "from_master": guest_path(r["from_master"])})
                    for r in entry.get("receives", ())
                ),
                leaves=guest_path(str(entry.get("leaves", ""))),
            )
        )
    return tuple(stages)


def resolve_mirror(config: ValidConfig, minor: str) -> dict[str, str]:
    profiles = mirror_profiles()
    resolved = dict(profiles["official"])
    resolved.update(profiles.get(config.mirror.profile) or {})
    if config.mirror.profile == "custom":
        resolved.update(config.mirror.custom)
    resolved = {key: value.replace("{minor}", minor) for key, value in resolved.items()}
    resolved["profile"] = config.mirror.profile
    return resolved


def make_plan(config: ValidConfig, lab_dir: Path, exercise: int | None = None) -> Plan:
    """Resolve a validated config for a lab folder. `lab_dir` should be absolute."""
    cat = catalog()
    version = config.kubernetes.version or cat["default_kubernetes"]
    k8s_entry = cat["kubernetes"][version]
    kubernetes = {
        "version": version,
        **k8s_entry,
        "pod_cidr": config.kubernetes.pod_cidr,
        "service_cidr": config.kubernetes.service_cidr,
        # The Service IP of the API server (kubernetes.default): the CIDR's first host.
        "service_ip": str(next(ipaddress.IPv4Network(config.kubernetes.service_cidr).hosts())),
        # The cluster DNS Service's IP, where kubeadm puts it: the CIDR's tenth address.
        "dns_service_ip": str(ipaddress.IPv4Network(config.kubernetes.service_cidr)[10]),
        "proxy_mode": config.kubernetes.proxy_mode,
        "firewall": config.kubernetes.firewall,
        "runtime": config.kubernetes.runtime,
        "cni": config.kubernetes.cni,
    }
    prefix = lab_prefix(config, lab_dir)
    lab_net = ipaddress.IPv4Network(config.network.cidr)
    nodes = tuple(
        PlannedNode(
            name=n.name,
            hostname=hostname_for(n.name, config.student_id),
            role=n.role,
            ip=n.ip,
            cpus=n.cpus,
            memory=n.memory,
            k8s_name=hostname_for(n.name, config.student_id),
            interface=defaults.PRIVATE_INTERFACE,
        )
        # The master first: everything that iterates nodes does it in this order.
        for n in sorted(config.nodes, key=lambda n: n.role != "master")
    )
    stages = resolve_stages(config.provision.stages)
    mirror = resolve_mirror(config, k8s_entry["minor"])
    spec = derive_spec(config, nodes, stages, kubernetes, mirror)
    return Plan(
        config=config,
        lab_dir=lab_dir,
        prefix=prefix,
        network_name=f"{prefix}net",
        nodes=nodes,
        stages=stages,
        kubernetes=kubernetes,
        runtime={"name": config.kubernetes.runtime, **cat["runtimes"][config.kubernetes.runtime]},
        cni={"name": config.kubernetes.cni, **cat["cnis"][config.kubernetes.cni]},
        guest={"name": config.box.guest, **cat["guests"][config.box.guest]},
        mirror=mirror,
        spec=spec,
        network={
            "cidr": str(lab_net),
            "netmask": str(lab_net.netmask),
            "host_ip": str(next(lab_net.hosts())),
        },
        exercise=exercise,
        hardway=dict(cat.get("hardway") or {}),
    )


# The control plane's images, as kubeadm pulls them (tag: the version tag).
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")


def api_endpoint(master_ip: str) -> str:
    """What nodes join and kubectl talks to: the master's private address and API port."""
    return f"{master_ip}:{defaults.API_PORT}"


def coredns_image(registry: str, version: str) -> str:
    """CoreDNS in `registry`, laid out as kubeadm expects it: under coredns/ in the
    official registry, at the top of a mirror's (registry.aliyuncs.com/google_containers)."""
    official = mirror_profiles()["official"]["image_registry"]
    path = "coredns/coredns" if registry == official else "coredns"
    return f"{registry}/{path}:{version}"


def derive_spec(
    config: ValidConfig,
    nodes: tuple[PlannedNode, ...],
    stages: tuple[Stage, ...],
    kubernetes: dict[str, Any],
    mirror: dict[str, str],
) -> LabSpec:
    """The derived facts, each computed here and nowhere else."""
    master = next(n for n in nodes if n.is_master)
    registry = mirror["image_registry"]
    tag = version_tag(kubernetes["version"])
    stage_names = tuple(s.name for s in stages)
    return LabSpec(
        lab=config.name,
        student_id=config.student_id,
        nodes=nodes,
        lab_cidr=str(ipaddress.IPv4Network(config.network.cidr)),
        management_cidr=defaults.MANAGEMENT_CIDR,
        api_port=defaults.API_PORT,
        api_endpoint=api_endpoint(master.ip),
        kubernetes_version=kubernetes["version"],
        version_tag=tag,
        pod_cidr=kubernetes["pod_cidr"],
        service_cidr=kubernetes["service_cidr"],
        cni=config.kubernetes.cni,
        runtime=config.kubernetes.runtime,
        image_registry=registry,
        kubeadm_api_version=f"kubeadm.k8s.io/{kubernetes['kubeadm_api']}",
        pause_image=f"{registry}/pause:{kubernetes['pause']}",
        component_images={
            **{name: f"{registry}/{name}:{tag}" for name in CONTROL_PLANE},
            "coredns": coredns_image(registry, kubernetes["coredns"]),
        },
        nginx_image=mirror["nginx_image"],
        verify_namespace=defaults.VERIFY_NAMESPACE,
        verify_nodeport=defaults.VERIFY_NODEPORT,
        log_dir=defaults.LOG_DIR,
        scripts={
            node.name: tuple(
                script_path(node, index, stage.name)
                for index, stage in enumerate((s for s in stages if _runs_on(s, node)), start=1)
            )
            for node in nodes
        },
        stages=stage_names,
        hardway=is_hardway(stage_names),
        etcd_client_port=defaults.ETCD_CLIENT_PORT,
        etcd_peer_port=defaults.ETCD_PEER_PORT,
        kubelet_port=defaults.KUBELET_PORT,
        health_ports=dict(defaults.HEALTH_PORTS),
        guest_paths=dict(defaults.GUEST_PATHS),
        stage_files=tuple(StageFiles.of(s) for s in stages),
        dns_service_ip=kubernetes["dns_service_ip"],
    )


def load_plan(
    config_path: Path | None,
    overrides: dict[str, Any] | None,
    *,
    repo_root: Path,
    lab_dir: Path | None = None,
    exercise: int | None = None,
) -> Plan:
    """Config file (or lab.yaml beside tasks.py) + flag overrides -> a plan."""
    from kubelab import config_cache

    config = config_cache.load(config_path, overrides, search_dir=repo_root)
    folder = (lab_dir or default_lab_dir(repo_root, config)).resolve()
    return make_plan(config, folder, exercise)
