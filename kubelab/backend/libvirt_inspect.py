"""libvirt, read through libvirt-python: the only module that imports it.

Vagrant knows a lab's machines; libvirt knows what really exists: domains,
networks and volumes. kubelab asks libvirt to report state and to find what a
lab left behind after `destroy`, and to delete the base-box volumes that
`vagrant box remove` leaves in the storage pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import libvirt

from kubelab.errors import KubelabError

# libvirt-python prints every error to stderr by default, even the ones handled
# here (a missing pool, a domain gone meanwhile); errors reach the user as
# KubelabError instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_DOMAIN_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}


@dataclass(frozen=True)
class Domain:
    name: str
    state: str  # libvirt's word: running, shutoff, paused, ...


@dataclass(frozen=True)
class Network:
    name: str
    active: bool


class LibvirtInspector:
    """Read-mostly access to one libvirt URI; a connection is opened per call and closed."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def can_connect(self) -> tuple[bool, str]:
        """Whether libvirtd answers at the URI, and a line saying so (for `doctor`)."""
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            return False, f"cannot connect to {self.uri}: {_reason(exc)}"
        try:
            version = conn.getLibVersion()
        finally:
            conn.close()
        major, minor = version // 1_000_000, version // 1000 % 1000
        return True, f"libvirt {major}.{minor} answers at {self.uri}"

    def domains(self, prefix: str = "") -> list[Domain]:
        """Domains whose names start with prefix, sorted by name."""
        with self._connection() as conn:
            found = []
            for dom in conn.listAllDomains():
                if dom.name().startswith(prefix):
                    state = dom.state()[0]
                    found.append(Domain(dom.name(), _DOMAIN_STATES.get(state, str(state))))
        return sorted(found, key=lambda d: d.name)

    def networks(self) -> list[Network]:
        with self._connection() as conn:
            found = [Network(n.name(), bool(n.isActive())) for n in conn.listAllNetworks()]
        return sorted(found, key=lambda n: n.name)

    def volumes(self, pool: str, prefix: str = "") -> list[str]:
        """Names of the volumes in a pool that start with prefix; none if the pool is absent."""
        with self._connection() as conn:
            storage = _pool(conn, pool)
            if storage is None:
                return []
            names = [v.name() for v in storage.listAllVolumes()]
        return sorted(n for n in names if n.startswith(prefix))

    def leftovers(self, prefix: str, network_names: list[str], pool: str) -> list[str]:
        """What a lab left behind: its domains, networks and volumes, one line each.

        prefix is the lab's vagrant-libvirt default_prefix, which starts the name of
        each of its domains and volumes. Empty when the lab is gone.
        """
        left = [f"domain {d.name} ({d.state})" for d in self.domains(prefix)]
        wanted = set(network_names)
        left += [f"network {n.name}" for n in self.networks() if n.name in wanted]
        left += [f"volume {pool}/{v}" for v in self.volumes(pool, prefix)]
        return left

    def volumes_backed_by(self, pool: str, bases: list[str]) -> list[str]:
        """Volumes of a pool whose backing file is one of the named volumes.

        A VM made from a box has an overlay volume over the box's image, running
        or not; deleting the image would break the VM.
        """
        if not bases:
            return []
        with self._connection() as conn:
            storage = _pool(conn, pool)
            if storage is None:
                return []
            volumes = storage.listAllVolumes()
            paths = {v.path() for v in volumes if v.name() in set(bases)}
            users = [v.name() for v in volumes if _backing_path(v.XMLDesc(0)) in paths]
        return sorted(users)

    def pool_path(self, pool: str) -> Path | None:
        """Where a storage pool keeps its volumes (for the disk-space check); None if unknown."""
        try:
            with self._connection() as conn:
                storage = _pool(conn, pool)
                if storage is None:
                    return None
                path = ElementTree.fromstring(storage.XMLDesc(0)).find("target/path")
                return Path(path.text) if path is not None and path.text else None
        except KubelabError:
            return None

    def network_bridge(self, name: str) -> str | None:
        """The host bridge of a libvirt network (virbrN), or None when there is none."""
        try:
            with self._connection() as conn:
                return str(conn.networkLookupByName(name).bridgeName())
        except (KubelabError, libvirt.libvirtError):
            return None

    def delete_volume(self, pool: str, name: str) -> None:
        with self._connection() as conn:
            storage = _pool(conn, pool)
            if storage is None:
                raise KubelabError(
                    f"libvirt storage pool {pool!r} not found or not active at {self.uri}",
                    hint="list pools with `virsh pool-list --all`",
                )
            try:
                storage.storageVolLookupByName(name).delete(0)
            except libvirt.libvirtError as exc:
                raise KubelabError(
                    f"cannot delete volume {pool}/{name}: {_reason(exc)}",
                    hint=f"try `virsh -c {self.uri} vol-delete --pool {pool} {name}`",
                ) from None

    # -- snapshots: an exercise's start state, and `invoke lab --reset` back to it --------

    def snapshot(self, domain: str, name: str, description: str = "") -> None:
        """Take an internal snapshot `name` of a domain (disk, and memory when running),
        replacing an older one of the same name."""
        xml = ElementTree.Element("domainsnapshot")
        ElementTree.SubElement(xml, "name").text = name
        ElementTree.SubElement(xml, "description").text = description
        with self._connection() as conn:
            dom = conn.lookupByName(domain)
            with suppress(libvirt.libvirtError):
                dom.snapshotLookupByName(name).delete()
            dom.snapshotCreateXML(ElementTree.tostring(xml, encoding="unicode"), 0)

    def snapshots(self, domain: str) -> list[str]:
        with self._connection() as conn:
            return sorted(conn.lookupByName(domain).snapshotListNames())

    def delete_snapshots(self, prefix: str) -> list[str]:
        """Delete every snapshot of the domains starting with `prefix` (before they are
        undefined: libvirt refuses to undefine a domain that has snapshots)."""
        deleted = []
        with self._connection() as conn:
            for dom in conn.listAllDomains():
                if dom.name().startswith(prefix):
                    for snap in dom.listAllSnapshots():
                        deleted.append(f"{dom.name()}/{snap.getName()}")
                        snap.delete()
        return deleted

    def revert(self, domain: str, name: str) -> None:
        """Bring a domain back to snapshot `name`, running (as it was taken)."""
        with self._connection() as conn:
            dom = conn.lookupByName(domain)
            try:
                snap = dom.snapshotLookupByName(name)
            except libvirt.libvirtError:
                raise KubelabError(
                    f"{domain} has no snapshot {name!r}",
                    hint="the start state was not recorded: start the exercise again "
                    "(invoke destroy --yes, then invoke lab --exercise N --student ID)",
                ) from None
            dom.revertToSnapshot(snap, libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING)

    @contextmanager
    def _connection(self) -> Iterator[libvirt.virConnect]:
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise KubelabError(
                f"cannot connect to libvirt at {self.uri}: {_reason(exc)}",
                hint="is libvirtd running and may this user use it? `invoke doctor` checks",
            ) from None
        try:
            yield conn
        except libvirt.libvirtError as exc:
            raise KubelabError(f"libvirt at {self.uri}: {_reason(exc)}") from None
        finally:
            conn.close()


def _pool(conn: libvirt.virConnect, name: str) -> libvirt.virStoragePool | None:
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            return None
        raise
    if not pool.isActive():
        return None
    # Volumes made by other means than this libvirtd show after a refresh; it
    # fails harmlessly while another client is creating a volume.
    with suppress(libvirt.libvirtError):
        pool.refresh(0)
    return pool


def _backing_path(volume_xml: str) -> str | None:
    path = ElementTree.fromstring(volume_xml).find("backingStore/path")
    return path.text if path is not None else None


def _reason(exc: libvirt.libvirtError) -> str:
    return (exc.get_error_message() or str(exc)).strip()
