"""libvirt, read through libvirt-python: the only module that imports it.

Vagrant knows a lab's machines; libvirt knows what really exists: domains,
networks and volumes. kubelab asks libvirt to report state and to find what a
lab left behind after `destroy`, and to delete the base-box volumes that
`vagrant box remove` leaves in the storage pool. For a class on remote hosts
(kubelab.classroom), the same over each host's qemu+ssh URI: a host's capacity,
the boot files uploaded to it, and their removal (the section at the end).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import escape

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


# --- a class's hosts (kubelab.classroom): capacity, boot files, box volumes ---------------
#
# What a classroom needs of a whole remote host, over its qemu+ssh URI: its capacity
# as libvirt reports it, the kernel and initrd a direct-boot box needs uploaded into a
# pool on the host (the box's own Vagrantfile points at files on the teacher's disk,
# which libvirtd on the host cannot open), and the removal of those files and of
# base-box volumes. Everything goes through the libvirt API on the one URI: no scp.

BOOT_POOL = "kubelab-boot"
BOOT_POOL_DIR = "/var/lib/libvirt/kubelab-boot"
BOX_VOLUME_MARK = "_vagrant_box_image_"
UPLOAD_CHUNK = 1 << 20
KIB_PER_MIB = 1024


@dataclass(frozen=True)
class HostFigures:
    """One host's figures, read from libvirt itself.

    memory_total_mib and memory_free_mib come from getMemoryStats over all NUMA cells
    (getInfo and getFreeMemory read node 0 only, and getFreeMemory leaves out page
    cache); free counts buffers and cache, which the kernel gives back. promised_*
    are the maxMem and vCPUs of every defined domain, running or not: a guest grows
    into its memory later, and a shut-off one starts again.
    """

    libvirt_version: str
    cpus: int
    memory_total_mib: int
    memory_free_mib: int
    promised_memory_mib: int
    promised_vcpus: int
    domains: int
    box_volumes: tuple[str, ...]
    pool_free_bytes: int

    @property
    def offered_memory_mib(self) -> int:
        """Memory a new lab can count on: never more than is free now, nor more than
        the total less what defined domains were promised."""
        return max(min(self.memory_free_mib, self.memory_total_mib - self.promised_memory_mib), 0)

    @property
    def offered_vcpus(self) -> int:
        return max(self.cpus - self.promised_vcpus, 0)


@contextmanager
def _host_connection(uri: str) -> Iterator[libvirt.virConnect]:
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise KubelabError(
            f"libvirt does not answer at {_shown(uri)}: {_first_line(exc)}",
            hint="is the host up, its sshd and libvirtd running, and its key pinned "
            "(`invoke class.hosts --hosts HOSTS_YAML`)?",
        ) from None
    try:
        yield conn
    finally:
        conn.close()


def read_figures(uri: str, pool: str, box_volume_prefix: str) -> HostFigures:
    with _host_connection(uri) as conn:
        try:
            version = conn.getLibVersion()
            stats = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
            cpus = int(conn.getInfo()[2])
            promised_kib = promised_vcpus = 0
            domains = conn.listAllDomains()
            for dom in domains:
                _state, max_kib, _mem, vcpus, _time = dom.info()
                promised_kib += max_kib
                promised_vcpus += vcpus
            box_volumes: list[str] = []
            pool_free = 0
            try:
                storage = conn.storagePoolLookupByName(pool)
            except libvirt.libvirtError:
                storage = None
            if storage is not None and storage.isActive():
                storage.refresh(0)
                box_volumes = [
                    v.name()
                    for v in storage.listAllVolumes()
                    if v.name().startswith(box_volume_prefix)
                ]
                pool_free = int(storage.info()[3])
        except libvirt.libvirtError as exc:
            raise KubelabError(
                f"libvirt at {_shown(uri)} failed to report its figures: {_first_line(exc)}"
            ) from None
    free_kib = stats.get("free", 0) + stats.get("buffers", 0) + stats.get("cached", 0)
    return HostFigures(
        libvirt_version=f"{version // 1_000_000}.{version // 1000 % 1000}.{version % 1000}",
        cpus=cpus,
        memory_total_mib=stats.get("total", 0) // KIB_PER_MIB,
        memory_free_mib=free_kib // KIB_PER_MIB,
        promised_memory_mib=promised_kib // KIB_PER_MIB,
        promised_vcpus=promised_vcpus,
        domains=len(domains),
        box_volumes=tuple(sorted(box_volumes)),
        pool_free_bytes=pool_free,
    )


def box_volume_prefix(box_name: str) -> str:
    """How vagrant-libvirt starts the name of a box's base volume in the pool."""
    return box_name.replace("/", "-VAGRANTSLASH-") + BOX_VOLUME_MARK


def boot_volume_name(role: str, path: Path) -> str:
    """A volume name unique to the file's content: two boxes never share one."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(UPLOAD_CHUNK), b""):
            digest.update(block)
    return f"{role}-{digest.hexdigest()[:16]}"


def stage_boot_files(uri: str, files: Mapping[str, Path]) -> dict[str, str]:
    """Upload each file (volume name -> local path) into the host's boot pool.

    Returns volume name -> path on the host. A volume already there with the file's
    size is kept (names carry the content's digest), so a rerun uploads nothing.
    """
    placed: dict[str, str] = {}
    with _host_connection(uri) as conn:
        try:
            pool = _boot_pool(conn)
            present = {v.name(): v for v in pool.listAllVolumes()}
            for name, path in files.items():
                size = path.stat().st_size
                volume = present.get(name)
                if volume is not None and volume.info()[1] == size:
                    placed[name] = volume.path()
                    continue
                if volume is not None:
                    volume.delete(0)
                volume = pool.createXML(_volume_xml(name, size), 0)
                _upload(conn, volume, path, size)
                placed[name] = volume.path()
        except libvirt.libvirtError as exc:
            raise KubelabError(
                f"could not upload the boot files to {_shown(uri)}: {_first_line(exc)}",
                hint="check the host's free disk space under /var/lib/libvirt",
            ) from None
    return placed


def remove_boot_files(uri: str) -> list[str]:
    """Delete the boot pool's volumes and the pool itself; return what was removed."""
    removed: list[str] = []
    with _host_connection(uri) as conn:
        try:
            pool = conn.storagePoolLookupByName(BOOT_POOL)
        except libvirt.libvirtError:
            return removed
        try:
            if not pool.isActive():
                pool.create(0)
            pool.refresh(0)
            for volume in pool.listAllVolumes():
                removed.append(f"volume {BOOT_POOL}/{volume.name()}")
                volume.delete(0)
            pool.destroy()
            pool.delete(0)
            pool.undefine()
            removed.append(f"pool {BOOT_POOL}")
        except libvirt.libvirtError as exc:
            raise KubelabError(
                f"could not remove the boot pool on {_shown(uri)}: {_first_line(exc)}"
            ) from None
    return removed


def remove_box_volumes(uri: str, pool: str, prefix: str) -> list[str]:
    """Delete the base-box volumes (prefix from box_volume_prefix) no domain still uses."""
    removed: list[str] = []
    with _host_connection(uri) as conn:
        try:
            storage = conn.storagePoolLookupByName(pool)
        except libvirt.libvirtError:
            return removed
        try:
            storage.refresh(0)
            for volume in storage.listAllVolumes():
                if volume.name().startswith(prefix):
                    volume.delete(0)
                    removed.append(f"volume {pool}/{volume.name()}")
        except libvirt.libvirtError as exc:
            raise KubelabError(
                f"could not delete a box volume on {_shown(uri)}: {_first_line(exc)}",
                hint="a lab may still use it: `invoke class.down --hosts HOSTS_YAML` first",
            ) from None
    return removed


def everything(uri: str) -> dict[str, list[str]]:
    """Every domain, network, pool and volume on the host, by kind: for leftover checks."""
    with _host_connection(uri) as conn:
        pools = conn.listAllStoragePools()
        volumes = []
        for pool in pools:
            if pool.isActive():
                pool.refresh(0)
                volumes += [f"{pool.name()}/{v.name()}" for v in pool.listAllVolumes()]
        return {
            "domains": sorted(d.name() for d in conn.listAllDomains()),
            "networks": sorted(n.name() for n in conn.listAllNetworks()),
            "pools": sorted(p.name() for p in pools),
            "volumes": sorted(volumes),
        }


def _boot_pool(conn: libvirt.virConnect) -> libvirt.virStoragePool:
    try:
        pool = conn.storagePoolLookupByName(BOOT_POOL)
    except libvirt.libvirtError:
        xml = (
            f"<pool type='dir'><name>{BOOT_POOL}</name><target><path>{BOOT_POOL_DIR}</path>"
            "<permissions><mode>0755</mode></permissions></target></pool>"
        )
        pool = conn.storagePoolDefineXML(xml, 0)
        pool.build(0)
    if not pool.isActive():
        pool.create(0)
    pool.refresh(0)
    return pool


def _volume_xml(name: str, size: int) -> str:
    return (
        f"<volume><name>{escape(name)}</name><capacity unit='bytes'>{size}</capacity>"
        "<target><format type='raw'/><permissions><mode>0644</mode></permissions>"
        "</target></volume>"
    )


def _upload(conn: libvirt.virConnect, volume: libvirt.virStorageVol, path: Path, size: int) -> None:
    stream = conn.newStream(0)
    volume.upload(stream, 0, size, 0)
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(UPLOAD_CHUNK), b""):
                sent = 0
                while sent < len(block):
                    sent += stream.send(block[sent:])
        stream.finish()
    except BaseException:
        stream.abort()
        raise


def _first_line(exc: libvirt.libvirtError) -> str:
    return _reason(exc).splitlines()[0]


def _shown(uri: str) -> str:
    """The URI without its query (key file and ssh command paths)."""
    return uri.split("?", 1)[0]
