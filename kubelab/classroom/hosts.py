"""hosts.yaml: the school's libvirt hosts, validated fully (every problem at once).

    hosts:
      - name: lab-a                  # how kubelab names the host (tables, folders)
        address: 10.77.0.11          # what ssh connects to
        user: root                   # default root (libvirt's system URI)
        port: 22
        key_file: keys/teacher       # a path to the private key, never the key itself
        reserve_memory_mib: 2048     # kept free for the host itself
        reserve_vcpus: 1
        pool: default                # the storage pool vagrant-libvirt uses

A relative key_file is read from the folder of hosts.yaml. The one connection story
per host is its qemu+ssh URI (`libvirt_uri`): vagrant-libvirt, libvirt-python and the
kernel/initrd uploads all use it, through `ssh_command`, an ssh wrapper kubelab writes
that checks the host key against the known_hosts file kubelab keeps (pinned at first
contact) and gives up after a connect timeout.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kubelab.config import _format_pydantic, _read_yaml
from kubelab.errors import ConfigError
from kubelab.names import SECRET_KEYS

_HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_POOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class HostSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    address: str
    user: str = "root"
    port: int = Field(default=22, ge=1, le=65535)
    key_file: str
    reserve_memory_mib: int = Field(default=2048, ge=0, le=4_194_304)
    reserve_vcpus: int = Field(default=1, ge=0, le=1024)
    pool: str = "default"

    def key_path(self, base_dir: Path) -> Path:
        path = Path(self.key_file).expanduser()
        return path if path.is_absolute() else (base_dir / path).resolve()

    @property
    def known_hosts_name(self) -> str:
        """How the host appears in known_hosts (OpenSSH's [addr]:port for another port)."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


class HostsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hosts: list[HostSpec] = Field(min_length=1)


def load_hosts(path: Path) -> tuple[list[HostSpec], Path]:
    """The hosts of a hosts.yaml and the folder relative key files are read from."""
    raw = _read_yaml(path)
    return validate_hosts(
        raw, source=str(path), base_dir=path.resolve().parent
    ), path.resolve().parent


def validate_hosts(raw: Any, *, source: str, base_dir: Path) -> list[HostSpec]:
    problems: list[str] = []
    # A secret in the file is named before anything else reads it.
    for i, entry in enumerate(raw.get("hosts") or [] if isinstance(raw, dict) else []):
        if isinstance(entry, dict):
            for key in entry:
                if key in SECRET_KEYS:
                    problems.append(
                        f"hosts[{i}].{key}: puts a secret in hosts.yaml; give key_file "
                        "(the path of the private key) instead"
                    )
    cleaned = raw
    if problems and isinstance(raw, dict) and isinstance(raw.get("hosts"), list):
        cleaned = {
            **raw,
            "hosts": [
                {k: v for k, v in e.items() if k not in SECRET_KEYS} if isinstance(e, dict) else e
                for e in raw["hosts"]
            ],
        }
    try:
        parsed = HostsFile.model_validate(cleaned)
    except ValidationError as exc:
        problems += [_format_pydantic(e) for e in exc.errors()]
        raise ConfigError([f"{source}: {p}" for p in problems]) from None
    problems += host_problems(parsed.hosts, base_dir)
    if problems:
        raise ConfigError([f"{source}: {p}" for p in problems])
    return parsed.hosts


def host_problems(hosts: list[HostSpec], base_dir: Path) -> list[str]:
    problems: list[str] = []
    names: dict[str, int] = {}
    places: dict[tuple[str, int], int] = {}
    for i, host in enumerate(hosts):
        where = f"hosts[{i}]"
        if not _HOST_NAME.fullmatch(host.name):
            problems.append(
                f"{where}.name: {host.name!r} is not a host name for kubelab (lowercase "
                "letters, digits and '-', at most 32)"
            )
        if host.name in names:
            problems.append(
                f"{where}.name: {host.name!r} is already used by hosts[{names[host.name]}]"
            )
        names.setdefault(host.name, i)
        if not _address_ok(host.address):
            problems.append(
                f"{where}.address: {host.address!r} is not an IPv4 address or a DNS name"
            )
        place = (host.address.lower(), host.port)
        if place in places:
            problems.append(
                f"{where}.address: {host.address}:{host.port} is already hosts[{places[place]}]"
            )
        places.setdefault(place, i)
        if not _USER.fullmatch(host.user):
            problems.append(f"{where}.user: {host.user!r} is not a user name")
        if not _POOL.fullmatch(host.pool):
            problems.append(f"{where}.pool: {host.pool!r} is not a storage pool name")
        key = host.key_path(base_dir)
        if not key.is_file():
            problems.append(
                f"{where}.key_file: {key} is not a file (give the path of the teacher's "
                "private key for this host)"
            )
    return problems


def _address_ok(address: str) -> bool:
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        return bool(_DNS_NAME.fullmatch(address)) and not address.replace(".", "").isdigit()
    return True


def libvirt_uri(host: HostSpec, key: Path, ssh_command: Path) -> str:
    """The host's qemu+ssh URI: the one way kubelab and vagrant-libvirt reach libvirtd."""
    port = "" if host.port == 22 else f":{host.port}"
    query = f"keyfile={quote(str(key), safe='/')}&command={quote(str(ssh_command), safe='/')}"
    return f"qemu+ssh://{host.user}@{host.address}{port}/system?{query}"


def dump_hosts(hosts: list[HostSpec]) -> str:
    return yaml.safe_dump({"hosts": [h.model_dump() for h in hosts]}, sort_keys=False)
