"""Lab config: load, merge defaults + file + flags, validate fully.

Everything below this module takes only a validated `LabConfig`. Validation runs
in two passes and reports every problem it finds, one line each:

1. shape (pydantic): unknown keys, wrong types, values outside their range;
2. meaning (here): addresses, subnets, names, and values the catalog knows.

A config that fails raises `ConfigError` (exit code 2); nothing is written.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Mapping, Sequence, Set
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kubelab import safeio
from kubelab.catalog import catalog, mirror_profiles
from kubelab.config_cache import MAX_CONFIG_BYTES as MAX_CONFIG_BYTES
from kubelab.config_cache import config_as_dict as config_as_dict
from kubelab.config_cache import config_file, read_config_text
from kubelab.errors import ConfigError
from kubelab.names import hostname_for, is_student_id

# kubeadm's own preflight limits for a control-plane node (NumCPU, Mem).
MASTER_MIN_CPUS = 2
# kubeadm's Mem check wants MemTotal >= 1700 MiB, but MemTotal is what the kernel
# leaves of the VM's memory: 2 GiB VMs in the captured clusters report 1868 to 1994
# MiB, so a 1700 MiB VM always fails. 2048 is the smallest size seen to pass.
KUBEADM_MIN_MEMTOTAL_MIB = 1700
MASTER_MIN_MEMORY_MIB = 2048

_RFC1123_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# Box names as Vagrant Cloud spells them (owner/name) or a local name.
_BOX_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_BOX_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+-]{0,40}$")
_POOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_LIBVIRT_URI = re.compile(r"^[a-z][a-z0-9+]*://[A-Za-z0-9@._:/?=&%+-]*$")
_HOST_PATH = re.compile(r"^/[A-Za-z0-9._/-]{0,250}$")
_URL = re.compile(r"^(https?|file)://[A-Za-z0-9@._:/?=&%+{}~-]+$")
# host[:port][/path...][:tag]: an image reference, never a URL (no scheme).
_REGISTRY = re.compile(
    r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9][a-z0-9._-]*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeConfig(_Strict):
    name: str
    role: Literal["master", "node"]
    ip: str
    cpus: int = Field(default=2, ge=1, le=64)
    memory: int = Field(default=2048, ge=512, le=262144, description="MiB")


class BoxConfig(_Strict):
    name: str = "centos/7"
    # The last centos/7 box published for libvirt: CentOS 7.8.2003 (kernel 3.10.0-1127,
    # a 2020 CA bundle); the repos stage brings its packages to 7.9.2009 from the vault.
    version: str = "2004.01"
    guest: Literal["centos7", "debian12", "ubuntu2204"] = "centos7"


class LibvirtConfig(_Strict):
    driver: Literal["kvm", "qemu"] = "kvm"
    uri: str = "qemu:///system"
    storage_pool: str = "default"
    boot_timeout: int = Field(default=600, ge=5, le=7200, description="seconds")
    # A lab on another machine's libvirtd (a class on the school's hosts, see
    # kubelab.classroom): the box's kernel and initrd as paths on that host, the folder
    # on that host for serial logs, and the ssh command vagrant reaches the VMs through.
    # Empty: the lab runs here and the box's own settings hold.
    kernel: str = ""
    initrd: str = ""
    serial_log_dir: str = ""
    proxy_command: str = ""


class NetworkConfig(_Strict):
    cidr: str = "192.168.56.0/24"


class KubernetesConfig(_Strict):
    version: str = ""  # empty: the catalog's default
    pod_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    runtime: str = "containerd"
    cni: str = "flannel"
    proxy_mode: Literal["iptables", "ipvs"] = "iptables"
    firewall: Literal["open-ports", "disabled"] = "disabled"


class MirrorConfig(_Strict):
    profile: str = "official"
    custom: dict[str, str] = Field(default_factory=dict)
    # A folder on the host with packages (a yum or apt repository) shipped into
    # the VMs and used instead of remote repositories.
    local_repo: str = ""


class SSHSettings(_Strict):
    # false: every VM keeps Vagrant's well-known insecure key (fast under emulation).
    # true: Vagrant swaps in a key of this lab's own at first boot (about 25 s a VM
    # under emulation), for hosts that others can log in to.
    insert_key: bool = False


class ProvisionConfig(_Strict):
    # Not given: the catalog's default build (every non-optional stage);
    # an empty list: boot the VMs and run no stage.
    stages: list[str] | None = None


def _default_nodes() -> list[NodeConfig]:
    return [
        NodeConfig(name="master", role="master", ip="192.168.56.10"),
        NodeConfig(name="node1", role="node", ip="192.168.56.11"),
        NodeConfig(name="node2", role="node", ip="192.168.56.12"),
    ]


class LabConfig(_Strict):
    name: str = "kubelab"
    student_id: str = ""
    box: BoxConfig = Field(default_factory=BoxConfig)
    libvirt: LibvirtConfig = Field(default_factory=LibvirtConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    mirror: MirrorConfig = Field(default_factory=MirrorConfig)
    provision: ProvisionConfig = Field(default_factory=ProvisionConfig)
    ssh: SSHSettings = Field(default_factory=SSHSettings)
    nodes: list[NodeConfig] = Field(default_factory=_default_nodes)


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    search_dir: Path | None = None,
) -> LabConfig:
    """Defaults, then the file (if any), then dotted `overrides` from flags.

    With no `path`, `lab.yaml` in `search_dir` is used when it exists.
    """
    path = config_file(path, search_dir)
    return config_from_text(None if path is None else read_config_text(path), path, overrides)


def config_from_text(
    text: str | None, path: Path | None, overrides: Mapping[str, Any] | None = None
) -> LabConfig:
    """load_config once the file is read: `text` is `path`'s (None: no file, the defaults)."""
    source = "defaults"
    raw: dict[str, Any] = {}
    if path is not None and text is not None:
        source = str(path)
        raw = _parse_yaml(text, path)
    flags = set()
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(raw, dotted, value)
            flags.add(dotted)
    return validate_config(raw, source=source, from_flags=flags)


# Who a problem is blamed on when its key was given by a flag, not by the file.
FLAG_SOURCE = "command-line flag"


def validate_config(
    raw: Mapping[str, Any], *, source: str = "config", from_flags: Set[str] = frozenset()
) -> LabConfig:
    """`from_flags`: the dotted keys a flag set; their problems are blamed on the flag."""

    def blamed(problem: str) -> str:
        named = re.split(r"[:\[]", problem, maxsplit=1)[0]
        by_flag = any(named == k or named.startswith(k + ".") for k in from_flags)
        return f"{FLAG_SOURCE if by_flag else source}: {_capped(problem)}"

    try:
        config = LabConfig.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        problems = [_format_pydantic(e) for e in errors]
        # One wrong type must not hide a wrong value elsewhere: check the meaning of
        # the sections that have the right shape (the others take their defaults,
        # and every check that reads them is skipped).
        bad = {str(e["loc"][0]) for e in errors if e["loc"]}
        rest = {k: v for k, v in raw.items() if str(k) not in bad}
        # Nor does one badly shaped node hide the problems of the other nodes.
        kept_nodes = _well_shaped_nodes(raw.get("nodes"), errors)
        if kept_nodes is not None:
            rest["nodes"] = [node for _, node in kept_nodes]
            bad.discard("nodes")
        with contextlib.suppress(ValidationError):  # the rest may still be wrong as a whole
            more = semantic_problems(LabConfig.model_validate(rest), skip=bad)
            if kept_nodes is not None:
                more = _renumbered(more, [index for index, _ in kept_nodes])
            problems += more
        raise ConfigError([blamed(p) for p in problems]) from None
    problems = [blamed(p) for p in semantic_problems(config)]
    if problems:
        raise ConfigError(problems)
    if not config.kubernetes.version:
        config = config.model_copy(
            update={
                "kubernetes": config.kubernetes.model_copy(
                    update={"version": catalog()["default_kubernetes"]}
                )
            }
        )
    return config


def _well_shaped_nodes(
    nodes: Any, errors: Sequence[Mapping[str, Any]]
) -> list[tuple[int, Any]] | None:
    """(index, node) of each node without a shape error, when only single nodes have them."""
    node_errors = [e["loc"] for e in errors if e["loc"] and e["loc"][0] == "nodes"]
    if not isinstance(nodes, list) or not node_errors:
        return None
    if any(len(loc) < 2 or not isinstance(loc[1], int) for loc in node_errors):
        return None  # the list itself is wrong
    broken = {loc[1] for loc in node_errors}
    return [(i, node) for i, node in enumerate(nodes) if i not in broken]


def _renumbered(problems: list[str], indexes: list[int]) -> list[str]:
    """Problems about a list of the kept nodes, with each node's place in the file.

    A problem about the list as a whole ("exactly one master") is dropped: the node
    left out for its shape may be the one it is about.
    """
    kept = []
    for problem in problems:
        if problem.startswith("nodes:"):
            continue
        kept.append(re.sub(r"nodes\[(\d+)\]", lambda m: f"nodes[{indexes[int(m[1])]}]", problem))
    return kept


# A lab config is a page of YAML (at most MAX_CONFIG_BYTES): these bound what one may cost
# to read.
MAX_YAML_DEPTH = 32
MAX_YAML_NODES = 100_000  # counted with every alias expanded (a "billion laughs" is refused)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML requires
    unique keys; PyYAML would silently keep the last value)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: construct_mapping reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"found duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> dict[str, Any]:
    return _parse_yaml(read_config_text(path), path)


def _parse_yaml(text: str, path: Path) -> dict[str, Any]:
    try:
        data = bounded_yaml(text, path, _UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(
            [f"{path}: not valid YAML{where}: {reason} (fix the syntax; see README config)"]
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            [
                f"{path}: the top level must be a mapping of keys (name:, nodes:, ...), "
                f"not a {type(data).__name__}"
            ]
        )
    return data


def bounded_yaml(
    text: str, path: Path, loader_class: type[yaml.SafeLoader] = yaml.SafeLoader
) -> Any:
    """YAML text as data, refused (ConfigError, one line) before any value is built when
    it holds a NUL byte, nests deeper than MAX_YAML_DEPTH or expands past MAX_YAML_NODES
    values through aliases. Syntax errors stay yaml.YAMLError, for the caller to word."""
    if "\0" in text:
        raise ConfigError([f"{path}: holds a NUL byte (YAML files are UTF-8 text)"])
    loader = loader_class(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise ConfigError([f"{path}: nested more than {MAX_YAML_DEPTH} levels deep"]) from None
        if node is None:
            return None
        _check_size(path, node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_size(path: Path, root: yaml.Node) -> None:
    """Refuse a document nested too deep, or too large once its aliases are expanded."""
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_YAML_NODES:
            raise ConfigError(
                [
                    f"{path}: expands to more than {MAX_YAML_NODES} values (aliases repeated "
                    "inside aliases?)"
                ]
            )
        if depth > MAX_YAML_DEPTH:
            raise ConfigError([f"{path}: nested more than {MAX_YAML_DEPTH} levels deep"])
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend(((key, depth + 1), (value, depth + 1)))


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[leaf] = value


def validation_problems(exc: ValidationError, source: str) -> list[str]:
    """A data file's validation errors, one capped line each, naming the file and key
    (rubrics, exercises and other data files are validated the way the config is)."""
    return [f"{source}: {_capped(_format_pydantic(e, unknown='remove it'))}" for e in exc.errors()]


def _format_pydantic(
    error: Mapping[str, Any], unknown: str = "remove it; the README lists every key"
) -> str:
    loc = _format_loc(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{loc}: unknown key ({unknown})"
    if kind == "missing":
        return f"{loc}: required key is missing"
    given = _echo(error.get("input"))
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"{loc}: {given} is not allowed (use {expected})"
    if kind == "string_type":
        return f"{loc}: must be text (quote it in YAML), got {given}"
    if kind in ("model_type", "dict_type"):
        return f"{loc}: must be a mapping of keys (got {given})"
    if kind == "value_error":  # a validator's own sentence: it says what is wrong
        return f"{loc}: {error['ctx']['error']} (got {given})"
    msg = error["msg"]
    return f"{loc}: {msg[:1].lower()}{msg[1:]} (got {given})"


# The longest problem line: a value echoed from the file is cut in the middle, so the
# line keeps both the key it is about and the advice at its end.
PROBLEM_CHARS = 300


def _capped(problem: str) -> str:
    problem = safeio.shown(problem, len(problem) + 1)  # control characters out
    if len(problem) <= PROBLEM_CHARS:
        return problem
    half = PROBLEM_CHARS // 2 - 2
    return f"{problem[:half]} ... {problem[-half:]}"


def _echo(value: Any) -> str:
    """A value from the file as an error message shows it: its repr, at most 80 characters."""
    return safeio.shown(repr(value), 80)


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "config"


# The sections a check reads, by the section its problem names (default: its own).
_READS = {
    "network": {"network", "kubernetes"},
    "kubernetes": {"kubernetes", "network"},
    "nodes": {"nodes", "network", "student_id"},
}


def semantic_problems(config: LabConfig, skip: Set[str] = frozenset()) -> list[str]:
    """Every problem shape validation cannot see, one line each.

    `skip`: sections that had shape errors; problems from checks reading them are dropped.
    """
    problems = _semantic_problems(config)
    if not skip:
        return problems
    kept = []
    for problem in problems:
        section = re.split(r"[.\[:]", problem, maxsplit=1)[0]
        if not (_READS.get(section, {section}) & skip):
            kept.append(problem)
    return kept


def _semantic_problems(config: LabConfig) -> list[str]:
    problems: list[str] = []
    cat = catalog()

    if not _RFC1123_LABEL.fullmatch(config.name):
        problems.append(
            f"name: {config.name!r} is not a valid lab name "
            "(lowercase letters, digits and '-', at most 63, e.g. kubelab)"
        )
    if config.student_id and not is_student_id(config.student_id):
        problems.append(
            f"student_id: {config.student_id!r} may hold only A-Z, a-z, 0-9 and '-', "
            "not at either end (it ends every hostname; at most 32 characters)"
        )

    if not _BOX_NAME.fullmatch(config.box.name):
        problems.append(f"box.name: {config.box.name!r} is not a box name (e.g. centos/7)")
    if config.box.version and not _BOX_VERSION.fullmatch(config.box.version):
        problems.append(f"box.version: {config.box.version!r} is not a version (e.g. 2004.01)")
    if not _LIBVIRT_URI.fullmatch(config.libvirt.uri):
        problems.append(
            f"libvirt.uri: {config.libvirt.uri!r} is not a libvirt URI (e.g. qemu:///system)"
        )
    for key in ("kernel", "initrd", "serial_log_dir"):
        value = getattr(config.libvirt, key)
        if value and not _HOST_PATH.fullmatch(value):
            problems.append(
                f"libvirt.{key}: {value!r} is not an absolute path on the libvirt host "
                "(letters, digits, '/', '.', '_', '-')"
            )
    if config.libvirt.proxy_command and not config.libvirt.proxy_command.isprintable():
        problems.append("libvirt.proxy_command: must be one line of printable text")
    if not _POOL_NAME.fullmatch(config.libvirt.storage_pool):
        problems.append(
            f"libvirt.storage_pool: {config.libvirt.storage_pool!r} is not a pool name "
            "(e.g. default)"
        )

    k8s = config.kubernetes
    if k8s.version and k8s.version not in cat["kubernetes"]:
        problems.append(
            f"kubernetes.version: {k8s.version!r} is not one kubelab installs "
            f"(use one of {', '.join(cat['kubernetes'])})"
        )
    if k8s.runtime not in cat["runtimes"]:
        problems.append(
            f"kubernetes.runtime: {k8s.runtime!r} is unknown (use one of "
            f"{', '.join(cat['runtimes'])})"
        )
    if k8s.cni not in cat["cnis"]:
        problems.append(
            f"kubernetes.cni: {k8s.cni!r} is unknown (use one of {', '.join(cat['cnis'])})"
        )
    problems += _mirror_problems(config.mirror)
    known_stages = [s["name"] for s in cat["stages"]]
    for i, stage in enumerate(config.provision.stages or []):
        if stage not in known_stages:
            problems.append(
                f"provision.stages[{i}]: {stage!r} is not a stage (use any of "
                f"{', '.join(known_stages)})"
            )
    problems += _network_problems(config)
    problems += _node_problems(config)
    return problems


def _mirror_problems(mirror: MirrorConfig) -> list[str]:
    profiles = mirror_profiles()
    problems = []
    if mirror.profile not in profiles:
        problems.append(
            f"mirror.profile: {mirror.profile!r} is unknown (use one of {', '.join(profiles)})"
        )
    if mirror.custom and mirror.profile != "custom":
        problems.append("mirror.custom: only used with mirror.profile: custom (set it or remove)")
    known_keys = profiles.get("official", {})
    for key, value in mirror.custom.items():
        if key not in known_keys:
            problems.append(
                f"mirror.custom.{key}: unknown key (use any of {', '.join(known_keys)})"
            )
        elif key.endswith(("registry", "_image")):
            if not _REGISTRY.fullmatch(value):
                problems.append(f"mirror.custom.{key}: {value!r} is not a registry path")
        elif not _URL.fullmatch(value) or (
            value.startswith("http") and not urlsplit(value).hostname
        ):
            problems.append(f"mirror.custom.{key}: {value!r} is not an http(s) or file URL")
    if mirror.local_repo and not Path(mirror.local_repo).is_dir():
        problems.append(
            f"mirror.local_repo: {mirror.local_repo!r} is not a folder on this host "
            "(give the folder that holds the packages)"
        )
    return problems


def _parse_net(value: str, field: str, problems: list[str]) -> ipaddress.IPv4Network | None:
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        problems.append(f"{field}: {value!r} is not an IPv4 network ({exc}; e.g. 10.244.0.0/16)")
        return None


def _network_problems(config: LabConfig) -> list[str]:
    problems: list[str] = []
    lab = _parse_net(config.network.cidr, "network.cidr", problems)
    pod = _parse_net(config.kubernetes.pod_cidr, "kubernetes.pod_cidr", problems)
    svc = _parse_net(config.kubernetes.service_cidr, "kubernetes.service_cidr", problems)
    if lab and lab.prefixlen > 29:
        problems.append(f"network.cidr: {lab} is too small for a lab (use /24 or larger)")
    pairs = [
        ("network.cidr", lab, "kubernetes.pod_cidr", pod),
        ("network.cidr", lab, "kubernetes.service_cidr", svc),
        ("kubernetes.pod_cidr", pod, "kubernetes.service_cidr", svc),
    ]
    for name_a, a, name_b, b in pairs:
        if a and b and a.overlaps(b):
            problems.append(f"{name_a}: {a} overlaps {name_b} {b} (pick ranges that do not meet)")
    return problems


def _node_problems(config: LabConfig) -> list[str]:
    problems: list[str] = []
    lab = None
    with contextlib.suppress(ValueError):  # a bad CIDR is reported by _network_problems
        lab = ipaddress.IPv4Network(config.network.cidr, strict=True)
    masters = [n for n in config.nodes if n.role == "master"]
    if len(masters) != 1:
        problems.append(f"nodes: exactly one node must have role master (found {len(masters)})")
    seen_names: dict[str, int] = {}
    seen_ips: dict[str, int] = {}
    for i, node in enumerate(config.nodes):
        where = f"nodes[{i}]"
        if not _RFC1123_LABEL.fullmatch(node.name):
            problems.append(
                f"{where}.name: {node.name!r} is not a valid hostname (RFC 1123: lowercase "
                "letters, digits and '-', not starting or ending with '-', at most 63)"
            )
        elif config.student_id and len(hostname_for(node.name, config.student_id)) > 63:
            problems.append(
                f"{where}.name: {node.name!r} plus the student ID is over 63 characters"
            )
        if node.name in seen_names:
            problems.append(
                f"{where}.name: {node.name!r} is already used by nodes[{seen_names[node.name]}]"
            )
        seen_names.setdefault(node.name, i)
        try:
            ip = ipaddress.IPv4Address(node.ip)
        except ValueError:
            problems.append(
                f"{where}.ip: {node.ip!r} is not a valid IPv4 address (e.g. 192.168.56.11)"
            )
        else:
            if node.ip in seen_ips:
                problems.append(
                    f"{where}.ip: {node.ip} is already used by nodes[{seen_ips[node.ip]}]"
                )
            seen_ips.setdefault(node.ip, i)
            if lab is not None:
                if ip not in lab:
                    problems.append(f"{where}.ip: {ip} is outside network.cidr {lab}")
                elif ip in (lab.network_address, lab.broadcast_address) or ip == next(lab.hosts()):
                    # .1 is the libvirt bridge (the host side of the lab network).
                    problems.append(
                        f"{where}.ip: {ip} is reserved in {lab} (network, broadcast or the "
                        "host bridge .1); pick another address"
                    )
        if node.role == "master":
            if node.cpus < MASTER_MIN_CPUS:
                problems.append(
                    f"{where}.cpus: the master needs at least {MASTER_MIN_CPUS} vCPUs "
                    f"(kubeadm preflight NumCPU), got {node.cpus}"
                )
            if node.memory < MASTER_MIN_MEMORY_MIB:
                problems.append(
                    f"{where}.memory: the master needs at least {MASTER_MIN_MEMORY_MIB} MiB, "
                    f"got {node.memory} (kubeadm's preflight wants {KUBEADM_MIN_MEMTOTAL_MIB} "
                    "MiB of MemTotal, and the guest kernel keeps 50-200 MiB for itself)"
                )
    return problems
