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

Per host: host, port (22), user (vagrant), key_file | key_env (the private key's file,
or the environment variable holding it; with neither, the SSH agent), and for
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

The file is validated the way the lab config is (kubelab.config): pydantic models that
forbid unknown keys and check every type, every problem reported at once, one line
each, before anything is graded. `lab_spec` turns one student's entry into the LabSpec
live grading expects of that cluster (kubelab.plan): what the entry says (machines,
roles, addresses, node names) and the grading section (version, pod CIDR, CNI, nginx,
namespace, NodePort); what no inventory can say (the runtime, the images the lab was
built with, its stages) stays empty rather than guessed.
"""

from __future__ import annotations

import ipaddress
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from kubelab import defaults, safeio
from kubelab.config import (
    KubernetesConfig,
    _capped,
    _format_pydantic,
    _UniqueKeyLoader,
    bounded_yaml,
    mirror_profiles,
)
from kubelab.errors import ConfigError, KubelabError
from kubelab.names import SECRET_KEYS, bare_version, is_student_id, version_tag
from kubelab.plan import LabSpec, PlannedNode, api_endpoint
from kubelab.transport import DEFAULT_PORT, DEFAULT_USER, SSHTarget
from kubelab.verify.collect import DEFAULT_KUBECTL

# An OpenSSH key fingerprint as `ssh-keygen -lf` prints it: SHA256, base64, no padding.
HOST_KEY = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")
# The start of every PEM and OpenSSH private key file.
_INLINE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
# The most an inventory file may hold: 500 students take about 100 KB.
MAX_INVENTORY_BYTES = 4 * 1024 * 1024
# The lab config's own defaults: an inventory that says nothing expects what a lab gets.
_LAB_KUBERNETES = KubernetesConfig()


# --- the file, as pydantic models ---------------------------------------------------


_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)


def _text(value: Any, key: str, what: str) -> Any:
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"'{key}' must be {what}, not {safeio.shown(repr(value), 80)}")
    return value


def _base_dir(info: ValidationInfo) -> Path:
    return Path((info.context or {}).get("base_dir", "."))


def _path(value: str, base_dir: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


class SSHEntry(BaseModel):
    """How to log in to one host: what kubelab.transport.SSHTarget needs."""

    model_config = _STRICT
    host: str
    port: int = DEFAULT_PORT
    user: str = DEFAULT_USER
    key_file: str | None = None
    key_env: str | None = None
    known_hosts: str | None = None

    @field_validator("host", mode="before")
    @classmethod
    def _host(cls, value: Any) -> Any:
        if not isinstance(value, str) or not value:
            raise ValueError("'host' is required (an address or host name)")
        return value

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            raise ValueError(
                f"'port' must be a number from 1 to 65535, not {safeio.shown(repr(value), 80)}"
            )
        return value

    @field_validator("user", mode="before")
    @classmethod
    def _user(cls, value: Any) -> Any:
        return _text(value, "user", "a user name")

    @field_validator("key_file", "key_env", mode="before")
    @classmethod
    def _key(cls, value: Any, info: ValidationInfo) -> Any:
        return _text(value, str(info.field_name), "a non-empty string")

    @field_validator("known_hosts", mode="before")
    @classmethod
    def _known_hosts(cls, value: Any, info: ValidationInfo) -> Any:
        _text(value, "known_hosts", "the path of a known_hosts file")
        if value is not None and not _path(value, _base_dir(info)).is_file():
            raise ValueError(f"known_hosts file {_path(value, _base_dir(info))} does not exist")
        return value

    @model_validator(mode="after")
    def _one_key(self) -> SSHEntry:
        if self.key_file is not None and self.key_env is not None:
            raise ValueError("give key_file or key_env, not both")
        return self

    def target(
        self,
        name: str,
        base_dir: Path,
        *,
        more_key_files: Sequence[str] = (),
        jump: SSHTarget | None = None,
        known_hosts: bool = False,
    ) -> SSHTarget:
        """The transport's target. `known_hosts`: the transport itself checks the host's
        key against it (a jump host's); live grading checks a VM's (live.HostKeys)."""
        return SSHTarget(
            name,
            self.host,
            self.port,
            self.user,
            _path(self.key_file, base_dir) if self.key_file is not None else None,
            self.key_env,
            more_key_files=tuple(_path(k, base_dir) for k in more_key_files),
            jump=jump,
            known_hosts=_path(self.known_hosts, base_dir)
            if known_hosts and self.known_hosts
            else None,
        )


class JumpEntry(SSHEntry):
    """A host labs sit behind: its key is always pinned."""

    @model_validator(mode="before")
    @classmethod
    def _pinned(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("known_hosts"):
            raise ValueError("known_hosts is required (a jump host's key is pinned)")
        return data


class HostEntry(SSHEntry):
    """One VM of a student's cluster: how to log in, and what grading expects of it."""

    more_key_files: list[str] = Field(default_factory=list)
    ip: str | None = None
    name: str | None = None
    host_key: str | None = None
    jump: str | None = None

    @field_validator("more_key_files", mode="before")
    @classmethod
    def _more_keys(cls, value: Any) -> Any:
        if not isinstance(value, list) or not all(isinstance(k, str) and k for k in value):
            raise ValueError("more_key_files must be a list of key file paths")
        return value

    @field_validator("ip", mode="before")
    @classmethod
    def _ip(cls, value: Any) -> Any:
        try:
            return None if value is None else str(ipaddress.ip_address(str(value)))
        except ValueError:
            raise ValueError(f"ip {safeio.shown(repr(value), 80)} is not an IP address") from None

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        if value is not None and (not isinstance(value, str) or not _NODE_NAME.match(value)):
            raise ValueError(f"name {safeio.shown(repr(value), 80)} is not a Kubernetes node name")
        return value

    @field_validator("host_key", mode="before")
    @classmethod
    def _host_key(cls, value: Any) -> Any:
        if value is not None and (not isinstance(value, str) or not HOST_KEY.match(value)):
            raise ValueError(
                "host_key must be a fingerprint as `ssh-keygen -lf` prints it "
                f"(SHA256:...), not {safeio.shown(repr(value), 80)}"
            )
        return value

    @field_validator("jump", mode="before")
    @classmethod
    def _jump(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and value not in (info.context or {}).get("jumps", ()):
            raise ValueError(f"jump {safeio.shown(repr(value), 80)} is not one of jumps")
        return value

    @model_validator(mode="after")
    def _private_ip(self) -> HostEntry:
        if self.ip is None:
            try:
                address = str(ipaddress.ip_address(self.host))
            except ValueError:
                raise ValueError(
                    f"host {safeio.shown(self.host, 80)} is a name; give ip, the private "
                    "address the node registers with"
                ) from None
            object.__setattr__(self, "ip", address)  # frozen: set once, while validating
        return self


class StudentEntry(BaseModel):
    model_config = _STRICT
    master: HostEntry
    nodes: list[HostEntry] = Field(default_factory=list)

    @field_validator("nodes", mode="before")
    @classmethod
    def _nodes(cls, value: Any) -> Any:
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValueError("nodes must be a list of hosts")
        return value

    @model_validator(mode="after")
    def _one_family(self) -> StudentEntry:
        # One lab network holds every node (lab_network): IPv4 and IPv6 do not mix.
        if len({ipaddress.ip_address(str(h.ip)).version for h in (self.master, *self.nodes)}) > 1:
            raise ValueError("the master and nodes mix IPv4 and IPv6 addresses (ip)")
        return self


class Settings(BaseModel):
    """The `grading` section: what live grading deploys and expects of every cluster."""

    model_config = _STRICT
    kubernetes_version: str = ""  # exact, without the "v"; "": what the API server runs
    pod_cidr: str = _LAB_KUBERNETES.pod_cidr
    cni: str = _LAB_KUBERNETES.cni
    mirror: str = "official"
    image: str = ""  # after validation: the mirror's nginx image unless given
    namespace: str = defaults.GRADE_NAMESPACE
    nodeport: int = defaults.GRADE_NODEPORT
    kubectl: tuple[str, ...] = DEFAULT_KUBECTL

    @field_validator("kubernetes_version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        version = bare_version(str(value or ""))
        if version and not _VERSION.match(version):
            raise ValueError(
                f"kubernetes_version {safeio.shown(repr(version), 80)} is not like 1.31.13"
            )
        return version

    @field_validator("pod_cidr", mode="before")
    @classmethod
    def _pod_cidr(cls, value: Any) -> Any:
        try:
            return str(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            raise ValueError(f"pod_cidr {safeio.shown(repr(value), 80)} is not a CIDR") from None

    @field_validator("namespace", mode="before")
    @classmethod
    def _namespace(cls, value: Any) -> Any:
        if not isinstance(value, str) or not _NAMESPACE.match(value) or value.startswith("kube-"):
            raise ValueError(
                f"namespace {safeio.shown(repr(value), 80)} is not a namespace of the "
                "grader's own (a DNS label, not kube-*)"
            )
        return value

    @field_validator("nodeport", mode="before")
    @classmethod
    def _nodeport(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not 30000 <= value <= 32767:
            raise ValueError(
                f"nodeport must be in 30000-32767, not {safeio.shown(repr(value), 80)}"
            )
        return value

    @field_validator("kubectl", mode="before")
    @classmethod
    def _kubectl(cls, value: Any) -> Any:
        if (
            not isinstance(value, list | tuple)
            or not value
            or not all(isinstance(a, str) and a for a in value)
        ):
            raise ValueError("kubectl must be a command as a list of words")
        return tuple(value)

    @field_validator("mirror", mode="before")
    @classmethod
    def _mirror(cls, value: Any) -> Any:
        profiles = mirror_profiles()
        if not isinstance(value, str) or value not in profiles:
            raise ValueError(
                f"mirror {safeio.shown(repr(value), 80)} is not a mirror profile "
                f"({', '.join(sorted(profiles))})"
            )
        return value

    @model_validator(mode="after")
    def _image(self) -> Settings:
        if not self.image:
            image = mirror_profiles()[self.mirror].get("nginx_image", "")
            object.__setattr__(self, "image", image)  # frozen: set once, while validating
        return self


def _student_id(value: str) -> str:
    if not is_student_id(value):
        raise ValueError("student ID must be letters, digits and '-' (at most 32)")
    return value


class InventoryFile(BaseModel):
    model_config = _STRICT
    defaults: dict[str, Any] = Field(default_factory=dict)  # merged into each host first
    grading: Settings = Field(default_factory=Settings)
    students: dict[Annotated[str, AfterValidator(_student_id)], StudentEntry]
    jumps: dict[str, JumpEntry] = Field(default_factory=dict)

    @field_validator("students", mode="before")
    @classmethod
    def _students(cls, value: Any) -> Any:
        if not isinstance(value, dict) or not value:
            raise ValueError("students must map each student ID to its hosts")
        return value


# The defaults section holds host keys; every host key may be given there.
HOST_ENTRY_KEYS = tuple(HostEntry.model_fields)


# --- the resolved inventory, as live grading reads it ----------------------------------


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
class Inventory:
    students: tuple[StudentLab, ...]
    settings: Settings
    source: Path


def load_inventory(path: Path | str) -> Inventory:
    path = Path(path)
    text = _read_text(path)
    if _INLINE_KEY.search(text):
        # Refused before parsing, so no part of the key reaches an error message.
        raise ConfigError(
            [
                f"{path}: holds a private key; put it in a file (key_file) or an environment "
                "variable (key_env), never in the inventory"
            ]
        )
    try:
        data = bounded_yaml(text, path, _UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML ({safeio.shown(exc, 200)})"]) from None
    return parse_inventory(data, path)


def _read_text(path: Path) -> str:
    """The inventory's text: a regular UTF-8 file of at most MAX_INVENTORY_BYTES."""
    hint = "give the inventory YAML file (see `invoke grade --help`)"
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise KubelabError(f"inventory {path} is not a regular file", hint=hint)
        if info.st_size > MAX_INVENTORY_BYTES:
            raise ConfigError(
                [f"{path}: {info.st_size} bytes; an inventory is at most {MAX_INVENTORY_BYTES}"]
            )
        with path.open("rb") as f:
            data = f.read(MAX_INVENTORY_BYTES + 1)
    except OSError as exc:
        raise KubelabError(
            f"cannot read inventory {path}: {exc.strerror or exc}", hint=hint
        ) from None
    if len(data) > MAX_INVENTORY_BYTES:  # grew after stat
        raise ConfigError([f"{path}: an inventory is at most {MAX_INVENTORY_BYTES} bytes"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not a text file (an inventory is UTF-8 YAML)"]) from None


def parse_inventory(data: Any, source: Path) -> Inventory:
    """Validate the whole inventory and report every problem, one line each."""
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: expected a mapping with a 'students' section"])
    problems: list[str] = []
    data = _without_secrets(data, source, problems)
    context = {"base_dir": source.parent, "jumps": _names(data.get("jumps"))}
    host_defaults = _valid_defaults(data.get("defaults"), source, context, problems)
    students = data.get("students")
    if isinstance(students, dict):
        data["students"] = {
            str(student): _with_defaults(entry, host_defaults)
            for student, entry in students.items()
        }
    if isinstance(data.get("jumps"), dict):
        data["jumps"] = {str(name): entry for name, entry in data["jumps"].items()}
    try:
        parsed = InventoryFile.model_validate({**data, "defaults": host_defaults}, context=context)
    except ValidationError as exc:
        raise ConfigError(problems + [_problem(error, source) for error in exc.errors()]) from None
    if problems:
        raise ConfigError(problems)
    return _resolved(parsed, source)


def _names(section: Any) -> tuple[str, ...]:
    return tuple(str(name) for name in section) if isinstance(section, dict) else ()


def _valid_defaults(
    raw: Any, source: Path, context: Mapping[str, Any], problems: list[str]
) -> dict[str, Any]:
    """The defaults section's keys that are valid host keys, each problem named once
    (not once per host it would be merged into)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{source}: defaults must be a mapping of host keys")
        return {}
    try:
        # Any address stands in for the host, which defaults do not give.
        HostEntry.model_validate({"host": "192.0.2.1", **raw}, context=context)
    except ValidationError as exc:
        bad = set()
        for error in exc.errors():
            problems.append(_problem({**error, "loc": ("defaults", *error["loc"])}, source))
            # A problem of the entry as a whole (key_file and key_env both): both go.
            bad |= {str(error["loc"][0])} if error["loc"] else {"key_file", "key_env"}
        return {k: v for k, v in raw.items() if str(k) not in bad}
    return dict(raw)


def _without_secrets(data: dict[Any, Any], source: Path, problems: list[str]) -> dict[Any, Any]:
    """The document with every secret key named in `problems` and taken out, so that no
    later message (pydantic echoes what it refuses) can show its value."""

    def clean(entry: Any, where: str) -> Any:
        if not isinstance(entry, dict):
            return entry
        for key in entry:
            if key in SECRET_KEYS:
                problems.append(
                    f"{where}: '{key}' puts a secret in the inventory; use key_file "
                    "(a path) or key_env (the name of an environment variable)"
                )
        return {k: v for k, v in entry.items() if k not in SECRET_KEYS}

    data = dict(data)
    if "defaults" in data:
        data["defaults"] = clean(data["defaults"], f"{source}: defaults")
    if isinstance(data.get("jumps"), dict):
        data["jumps"] = {
            name: clean(entry, f"{source}: jumps: {name}") for name, entry in data["jumps"].items()
        }
    if isinstance(data.get("students"), dict):
        students = {}
        for student, entry in data["students"].items():
            where = f"{source}: {student}"
            if isinstance(entry, dict):
                entry = dict(entry)
                if "master" in entry:
                    entry["master"] = clean(entry["master"], f"{where}: master")
                if isinstance(entry.get("nodes"), list):
                    entry["nodes"] = [
                        clean(node, f"{where}: node{i}")
                        for i, node in enumerate(entry["nodes"], start=1)
                    ]
            students[student] = entry
        data["students"] = students
    return data


def _with_defaults(entry: Any, host_defaults: Mapping[str, Any]) -> Any:
    """A student's hosts with the defaults filled in; a host's own key reference replaces
    the default one, of either kind."""
    if not isinstance(entry, dict):
        return entry

    def host(raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        inherited = dict(host_defaults)
        if "key_file" in raw or "key_env" in raw:
            inherited.pop("key_file", None)
            inherited.pop("key_env", None)
        return {**inherited, **raw}

    entry = dict(entry)
    if "master" in entry:
        entry["master"] = host(entry["master"])
    if isinstance(entry.get("nodes"), list):
        entry["nodes"] = [host(node) for node in entry["nodes"]]
    return entry


# What each part of the file is, for a problem with its shape as a whole.
_SHAPES = {
    "student": "needs a master (and nodes)",
    "host": "expected a mapping with host (and port, user, key_file)",
    "jump": "expected a mapping with host, user, key_file, known_hosts",
    "grading": "grading must be a mapping",
    "defaults": "defaults must be a mapping of host keys",
    "file": "expected a mapping with a 'students' section",
}


def _problem(error: Mapping[str, Any], source: Path) -> str:
    """One validation error as one line, named the way the inventory reads: the student,
    then the machine (master, node1, ...), or the section."""
    loc = list(error["loc"])
    where, part, known = [str(source)], "file", tuple(InventoryFile.model_fields)
    if loc[:1] == ["students"] and len(loc) >= 2:
        where.append(str(loc[1]))
        loc, part = loc[2:], "student"
        if error["type"] == "missing" and loc == ["master"]:
            loc = []  # said as the student's shape
        elif loc[:1] == ["master"] or (loc[:1] == ["nodes"] and len(loc) >= 2):
            where.append("master" if loc[0] == "master" else f"node{int(loc[1]) + 1}")
            loc, part, known = loc[1 if loc[0] == "master" else 2 :], "host", HOST_ENTRY_KEYS
    elif loc[:1] == ["jumps"] and len(loc) >= 2:
        where += ["jumps", str(loc[1])]
        loc, part, known = loc[2:], "jump", tuple(JumpEntry.model_fields)
    elif loc[:1] in (["grading"], ["defaults"]):
        where.append(str(loc[0]))
        part = str(loc[0])
        known = tuple(Settings.model_fields) if part == "grading" else HOST_ENTRY_KEYS
        loc = loc[1:]
    head = ": ".join(where)
    kind = error["type"]
    if kind == "value_error":  # a validator's own sentence: it says what is wrong
        return _capped(f"{head}: {error['ctx']['error']}")
    if kind == "missing" and loc == ["host"]:
        return _capped(f"{head}: 'host' is required (an address or host name)")
    if kind == "extra_forbidden":
        return _capped(f"{head}: unknown key '{loc[-1]}' (known: {', '.join(known)})")
    if not loc or (kind == "missing" and loc == ["students"]):
        if loc == ["students"]:
            return _capped(f"{head}: students must map each student ID to its hosts")
        return _capped(f"{head}: {_SHAPES[part]}")
    return _capped(f"{head}: {_format_pydantic({**error, 'loc': tuple(loc)})}")


def _resolved(parsed: InventoryFile, source: Path) -> Inventory:
    base_dir = source.parent
    jumps = {
        name: jump.target(name, base_dir, known_hosts=True) for name, jump in parsed.jumps.items()
    }
    labs = []
    for student, entry in parsed.students.items():
        hosts = []
        machines = [("master", "master", entry.master)] + [
            (f"node{i}", "node", node) for i, node in enumerate(entry.nodes, start=1)
        ]
        for machine, role, raw in machines:
            target = raw.target(
                machine,
                base_dir,
                more_key_files=raw.more_key_files,
                jump=jumps[raw.jump] if raw.jump else None,
            )
            known_hosts = _path(raw.known_hosts, base_dir) if raw.known_hosts else None
            assert raw.ip is not None  # HostEntry._private_ip sets it
            hosts.append(Host(machine, role, target, raw.ip, raw.name, raw.host_key, known_hosts))
        labs.append(StudentLab(student, tuple(hosts)))
    return Inventory(tuple(labs), parsed.grading, source)


# --- what live grading expects of one student's cluster --------------------------------


def lab_network(ips: Sequence[str]) -> str:
    """The smallest network holding every node's address: an inventory does not name the
    lab network, and this one is surely inside it."""
    addresses = [ipaddress.ip_address(ip) for ip in ips]
    bits = addresses[0].max_prefixlen
    for prefix in range(bits, -1, -1):
        network = ipaddress.ip_network(f"{addresses[0]}/{prefix}", strict=False)
        if all(a.version == network.version and a in network for a in addresses):
            return str(network)
    raise ValueError(f"no one network holds {', '.join(ips)} (IPv4 and IPv6 mixed)")


def lab_spec(
    lab: StudentLab, settings: Settings, node_names: Sequence[str], version: str, source: Path
) -> LabSpec:
    """The LabSpec of one student's cluster, as the inventory describes it.

    `node_names`: each host's Kubernetes node name, in the order of `lab.hosts` (the
    inventory's `name`, else what the host's `hostname` answered). `version`: the
    version expected, without the "v" (the grading section's, else the API server's;
    "" when neither says).
    What an inventory cannot say is empty (the runtime, the images and stages the lab
    was built with, its VMs' sizes and interface), never guessed; verify's expectations
    (`Expected.from_spec`) read none of it.
    """
    nodes = tuple(
        PlannedNode(
            name=host.machine,
            hostname=name,
            role=host.role,
            ip=host.ip,
            cpus=0,  # not known: the grader never sized these VMs
            memory=0,
            k8s_name=name,
            interface="",
        )
        for host, name in zip(lab.hosts, node_names, strict=True)
    )
    return LabSpec(
        lab=source.stem,
        student_id=lab.student,
        nodes=nodes,
        lab_cidr=lab_network([h.ip for h in lab.hosts]),
        # The reference of the InternalIP check: an address there is kubelet on the
        # wrong interface of a vagrant-libvirt VM.
        management_cidr=defaults.MANAGEMENT_CIDR,
        api_port=defaults.API_PORT,
        api_endpoint=api_endpoint(lab.master.ip),
        kubernetes_version=bare_version(version),
        version_tag=version_tag(version) if version else "",
        pod_cidr=settings.pod_cidr,
        service_cidr="",
        cni=settings.cni,
        runtime="",
        image_registry="",
        kubeadm_api_version="",
        pause_image="",
        component_images={},
        nginx_image=settings.image,
        verify_namespace=settings.namespace,
        verify_nodeport=settings.nodeport,
        log_dir="",
        scripts={},
        stages=(),
        hardway=False,
    )
