"""The grader's inventory: per student, how to reach the master and nodes of their cluster.

    defaults:                  # any host key, for every host that does not set it
      user: student
      key_file: keys/grader    # a path (relative to this file), or key_env: VARIABLE
    grading:                   # optional, what live grading deploys and expects
      kubernetes_version: ""   # empty: whatever the API server runs
      pod_cidr: 10.244.0.0/16
      cni: flannel
      mirror: official         # the nginx image comes from this mirror profile ...
      image: ""                # ... unless given here
      namespace: kubelab-grade # the grader's own, always deleted
      nodeport: 30099
      kubectl: [sudo, kubectl, --kubeconfig, /etc/kubernetes/admin.conf]
    students:
      "2021001":
        master: {host: 10.20.1.5}
        nodes:
          - {host: 10.20.1.6}
      "2021002":
        master: {host: lab.example.edu, port: 2201, ip: 192.168.56.10}
        nodes: [{host: lab.example.edu, port: 2202, ip: 192.168.56.11}]
    jumps:                     # optional: hosts the grader goes through (class.grade)
      school-a: {host: 10.20.0.2, user: kubelab, key_file: keys/host, known_hosts: known_hosts}

Per host: host, port, user, key_file | key_env (kubelab.transport's keys), and for
grading: ip, the private address kubelet must register (default: host, when host is
an address), and name, the Kubernetes node name (default: the host's `hostname`).
Host keys, per host or in defaults: host_key (a fingerprint, SHA256:... as
`ssh-keygen -lf` prints it) or known_hosts (a file, as ssh writes it); with neither,
live grading accepts the key a host offers and records its fingerprint (live.py).
A private key never sits in the inventory: an entry holding one is refused.

A lab behind a libvirt host (`invoke class.grade` writes such an inventory itself):
a host's `jump` names an entry of `jumps`, whose sshd opens the connection to the VM;
a jump host's key is always pinned (known_hosts is required). `more_key_files` are
keys offered after key_file, in order, as vagrant's ssh-config lists several.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from kubelab import defaults, safeio
from kubelab.config import bounded_yaml, mirror_profiles
from kubelab.errors import ConfigError, KubelabError
from kubelab.names import bare_version, is_student_id
from kubelab.transport import INVENTORY_KEYS, SECRET_KEYS, SSHTarget, target_from_inventory
from kubelab.verify.collect import DEFAULT_KUBECTL

GRADING_KEYS = ("ip", "name", "host_key", "known_hosts", "jump", "more_key_files")
# An OpenSSH key fingerprint as `ssh-keygen -lf` prints it: SHA256, base64, no padding.
HOST_KEY = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")
# The start of every PEM and OpenSSH private key file.
_INLINE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Host:
    machine: str  # how the grader names it: master, node1, node2, ...
    role: str  # master | node
    target: SSHTarget
    ip: str  # the private address kubelet must register as InternalIP
    name: str | None = None  # the Kubernetes node name; None: ask the host
    # The host key pinned for it: a fingerprint, or a known_hosts file naming the host.
    host_key: str | None = None
    known_hosts: Path | None = None

    @property
    def pinned(self) -> bool:
        return self.host_key is not None or self.known_hosts is not None


@dataclass(frozen=True)
class StudentLab:
    student: str
    hosts: tuple[Host, ...]

    @property
    def master(self) -> Host:
        return self.hosts[0]

    @property
    def address(self) -> str:
        """Where the master is; two labs behind different hosts may share a VM address."""
        target = self.master.target
        return f"{target.address} via {target.jump.address}" if target.jump else target.address


@dataclass(frozen=True)
class Settings:
    kubernetes_version: str = ""
    pod_cidr: str = "10.244.0.0/16"
    cni: str = "flannel"
    image: str = ""
    namespace: str = defaults.GRADE_NAMESPACE
    nodeport: int = defaults.GRADE_NODEPORT
    kubectl: tuple[str, ...] = DEFAULT_KUBECTL


@dataclass(frozen=True)
class Inventory:
    students: tuple[StudentLab, ...]
    settings: Settings
    source: Path


def load_inventory(path: Path | str) -> Inventory:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KubelabError(
            f"cannot read inventory {path}: {exc.strerror or exc}",
            hint="give the inventory YAML file (see `invoke grade --help`)",
        ) from None
    if _INLINE_KEY.search(text):
        # Refused before parsing, so no part of the key reaches an error message.
        raise ConfigError(
            [
                f"{path}: holds a private key; put it in a file (key_file) or an environment "
                "variable (key_env), never in the inventory"
            ]
        )
    try:
        data = bounded_yaml(text, path)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML ({safeio.shown(exc, 200)})"]) from None
    return parse_inventory(data, path)


def parse_inventory(data: Any, source: Path) -> Inventory:
    """Validate the whole inventory and report every problem, one line each."""
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: expected a mapping with a 'students' section"])
    unknown = set(data) - {"defaults", "grading", "students", "jumps"}
    if unknown:
        problems.append(f"{source}: unknown sections {', '.join(sorted(map(str, unknown)))}")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        problems.append(f"{source}: defaults must be a mapping of host keys")
        defaults = {}
    settings = _settings(data.get("grading") or {}, source, problems)
    jumps = _jumps(data.get("jumps") or {}, source, problems)
    students = data.get("students")
    if not isinstance(students, dict) or not students:
        problems.append(f"{source}: students must map each student ID to its hosts")
        students = {}
    labs = []
    for raw_id, entry in students.items():
        student = str(raw_id)
        where = f"{source}: {student}"
        if not is_student_id(student):
            problems.append(f"{where}: student ID must be letters, digits and '-' (at most 32)")
            continue
        if not isinstance(entry, dict) or "master" not in entry:
            problems.append(f"{where}: needs a master (and nodes)")
            continue
        extra = set(entry) - {"master", "nodes"}
        if extra:
            problems.append(f"{where}: unknown keys {', '.join(sorted(map(str, extra)))}")
        nodes = entry.get("nodes") or []
        if not isinstance(nodes, list):
            problems.append(f"{where}: nodes must be a list of hosts")
            nodes = []
        hosts = []
        for n, (machine, role, raw) in enumerate(
            [("master", "master", entry["master"])]
            + [(f"node{i}", "node", h) for i, h in enumerate(nodes, start=1)]
        ):
            host = _host(
                f"{where}: {machine if n else 'master'}",
                machine,
                role,
                raw,
                defaults,
                source.parent,
                problems,
                jumps,
            )
            if host is not None:
                hosts.append(host)
        labs.append(StudentLab(student, tuple(hosts)))
    if problems:
        raise ConfigError(problems)
    return Inventory(tuple(labs), settings, source)


def _host(
    where: str,
    machine: str,
    role: str,
    raw: Any,
    defaults: Mapping[str, Any],
    base_dir: Path,
    problems: list[str],
    jumps: Mapping[str, SSHTarget],
) -> Host | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping with host (and port, user, key_file)")
        return None
    entry = {**defaults, **raw}
    if "key_file" in raw or "key_env" in raw:
        # A host's own key replaces the default one, of either kind.
        entry = {k: v for k, v in entry.items() if k not in ("key_file", "key_env") or k in raw}
    ssh = {k: v for k, v in entry.items() if k not in GRADING_KEYS}
    for key in ssh:
        if key not in INVENTORY_KEYS and key not in SECRET_KEYS:
            problems.append(
                f"{where}: unknown key '{key}' (known: {', '.join(INVENTORY_KEYS + GRADING_KEYS)})"
            )
    ssh = {k: v for k, v in ssh.items() if k in INVENTORY_KEYS or k in SECRET_KEYS}
    try:
        target = target_from_inventory(where.rsplit(": ", 1)[-1], ssh, base_dir=base_dir)
    except ConfigError as exc:
        problems += [f"{where}: {p.split(': ', 1)[-1]}" for p in exc.problems]
        return None
    jump = entry.get("jump")
    if jump is not None and jump not in jumps:
        problems.append(f"{where}: jump {safeio.shown(repr(jump), 80)} is not one of jumps")
        return None
    more_key_files = entry.get("more_key_files") or []
    if not isinstance(more_key_files, list) or not all(
        isinstance(k, str) and k for k in more_key_files
    ):
        problems.append(f"{where}: more_key_files must be a list of key file paths")
        return None
    target = SSHTarget(
        machine,
        target.host,
        target.port,
        target.user,
        target.key_file,
        target.key_env,
        more_key_files=tuple(_path(k, base_dir) for k in more_key_files),
        jump=jumps[jump] if jump is not None else None,
    )
    ip = entry.get("ip")
    if ip is None:
        try:
            ip = str(ipaddress.ip_address(target.host))
        except ValueError:
            problems.append(
                f"{where}: host {target.host} is a name; give ip, the private "
                "address the node registers with"
            )
            return None
    else:
        try:
            ip = str(ipaddress.ip_address(str(ip)))
        except ValueError:
            problems.append(f"{where}: ip {ip!r} is not an IP address")
            return None
    name = entry.get("name")
    if name is not None and (not isinstance(name, str) or not _NODE_NAME.match(name)):
        problems.append(f"{where}: name {name!r} is not a Kubernetes node name")
        return None
    host_key = entry.get("host_key")
    if host_key is not None and (not isinstance(host_key, str) or not HOST_KEY.match(host_key)):
        problems.append(
            f"{where}: host_key must be a fingerprint as `ssh-keygen -lf` prints it "
            f"(SHA256:...), not {safeio.shown(repr(host_key), 80)}"
        )
        return None
    known_hosts = entry.get("known_hosts")
    known_hosts_path = None
    if known_hosts is not None:
        if not isinstance(known_hosts, str) or not known_hosts:
            problems.append(f"{where}: known_hosts must be the path of a known_hosts file")
            return None
        known_hosts_path = _path(known_hosts, base_dir)
        if not known_hosts_path.is_file():
            problems.append(f"{where}: known_hosts file {known_hosts_path} does not exist")
            return None
    return Host(machine, role, target, ip, name, host_key, known_hosts_path)


def _path(value: str, base_dir: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def _jumps(raw: Any, source: Path, problems: list[str]) -> dict[str, SSHTarget]:
    """The hosts labs sit behind, each pinned by a known_hosts file."""
    if not isinstance(raw, dict):
        problems.append(f"{source}: jumps must map a name to a host")
        return {}
    jumps = {}
    for raw_name, entry in raw.items():
        name = str(raw_name)
        where = f"{source}: jumps: {name}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a mapping with host, user, key_file, known_hosts")
            continue
        known_hosts = entry.get("known_hosts")
        if not isinstance(known_hosts, str) or not known_hosts:
            problems.append(f"{where}: known_hosts is required (a jump host's key is pinned)")
            continue
        known_hosts_path = _path(known_hosts, source.parent)
        if not known_hosts_path.is_file():
            problems.append(f"{where}: known_hosts file {known_hosts_path} does not exist")
            continue
        ssh = {k: v for k, v in entry.items() if k != "known_hosts"}
        try:
            target = target_from_inventory(name, ssh, base_dir=source.parent)
        except ConfigError as exc:
            problems += [f"{where}: {p.split(': ', 1)[-1]}" for p in exc.problems]
            continue
        jumps[name] = replace(target, known_hosts=known_hosts_path)
    return jumps


def _settings(raw: Any, source: Path, problems: list[str]) -> Settings:
    if not isinstance(raw, dict):
        problems.append(f"{source}: grading must be a mapping")
        return Settings()
    known = {
        "kubernetes_version",
        "pod_cidr",
        "cni",
        "mirror",
        "image",
        "namespace",
        "nodeport",
        "kubectl",
    }
    if set(raw) - known:
        problems.append(f"{source}: grading: unknown keys {', '.join(sorted(set(raw) - known))}")
    values: dict[str, Any] = {}
    version = bare_version(str(raw.get("kubernetes_version") or ""))
    if version and not re.match(r"^\d+\.\d+\.\d+$", version):
        problems.append(f"{source}: grading.kubernetes_version {version!r} is not like 1.31.13")
    values["kubernetes_version"] = version
    if "pod_cidr" in raw:
        try:
            values["pod_cidr"] = str(ipaddress.ip_network(str(raw["pod_cidr"]), strict=False))
        except ValueError:
            problems.append(f"{source}: grading.pod_cidr {raw['pod_cidr']!r} is not a CIDR")
    if "cni" in raw:
        values["cni"] = str(raw["cni"])
    namespace = str(raw.get("namespace", Settings.namespace))
    if not _NAMESPACE.match(namespace) or namespace.startswith("kube-"):
        problems.append(
            f"{source}: grading.namespace {namespace!r} is not a namespace of "
            "the grader's own (a DNS label, not kube-*)"
        )
    values["namespace"] = namespace
    nodeport = raw.get("nodeport", Settings.nodeport)
    if (
        isinstance(nodeport, bool)
        or not isinstance(nodeport, int)
        or not (30000 <= nodeport <= 32767)
    ):
        problems.append(f"{source}: grading.nodeport must be in 30000-32767, not {nodeport!r}")
    values["nodeport"] = nodeport
    if "kubectl" in raw:
        kubectl = raw["kubectl"]
        if (
            not isinstance(kubectl, list)
            or not kubectl
            or not all(isinstance(a, str) and a for a in kubectl)
        ):
            problems.append(f"{source}: grading.kubectl must be a command as a list of words")
        else:
            values["kubectl"] = tuple(kubectl)
    image = str(raw.get("image") or "")
    if not image:
        profile = str(raw.get("mirror") or "official")
        profiles = mirror_profiles()
        if profile not in profiles:
            problems.append(
                f"{source}: grading.mirror {profile!r} is not a mirror profile "
                f"({', '.join(sorted(profiles))})"
            )
        else:
            image = profiles[profile].get("nginx_image", "")
    values["image"] = image
    return Settings(**values)
