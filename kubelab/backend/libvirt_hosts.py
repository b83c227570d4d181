"""A remote libvirt host, read and tidied through libvirt-python over its qemu+ssh URI.

Beside libvirt_inspect.py (one lab's domains, networks and volumes), this module
holds what a classroom needs of a whole host: its capacity as libvirt reports it,
the kernel and initrd a direct-boot box needs uploaded into a pool on the host
(the box's own Vagrantfile points at files on the teacher's disk, which libvirtd on
the host cannot open), and the removal of those files and of base-box volumes.
Everything goes through the libvirt API on the one URI: no scp, no second channel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import libvirt

from kubelab.errors import KubelabError

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

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
def _connection(uri: str) -> Iterator[libvirt.virConnect]:
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise KubelabError(
            f"libvirt does not answer at {_shown(uri)}: {_reason(exc)}",
            hint="is the host up, its sshd and libvirtd running, and its key pinned "
            "(`invoke class.hosts`)?",
        ) from None
    try:
        yield conn
    finally:
        conn.close()


def read_figures(uri: str, pool: str, box_volume_prefix: str) -> HostFigures:
    with _connection(uri) as conn:
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
                f"libvirt at {_shown(uri)} failed to report its figures: {_reason(exc)}"
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
    with _connection(uri) as conn:
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
                f"could not upload the boot files to {_shown(uri)}: {_reason(exc)}",
                hint="check the host's free disk space under /var/lib/libvirt",
            ) from None
    return placed


def remove_boot_files(uri: str) -> list[str]:
    """Delete the boot pool's volumes and the pool itself; return what was removed."""
    removed: list[str] = []
    with _connection(uri) as conn:
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
                f"could not remove the boot pool on {_shown(uri)}: {_reason(exc)}"
            ) from None
    return removed


def remove_box_volumes(uri: str, pool: str, prefix: str) -> list[str]:
    """Delete the base-box volumes (prefix from box_volume_prefix) no domain still uses."""
    removed: list[str] = []
    with _connection(uri) as conn:
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
                f"could not delete a box volume on {_shown(uri)}: {_reason(exc)}",
                hint="a lab may still use it: `invoke class.down` first",
            ) from None
    return removed


def everything(uri: str) -> dict[str, list[str]]:
    """Every domain, network, pool and volume on the host, by kind: for leftover checks."""
    with _connection(uri) as conn:
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


def _reason(exc: libvirt.libvirtError) -> str:
    return (exc.get_error_message() or str(exc)).strip().splitlines()[0]


def _shown(uri: str) -> str:
    """The URI without its query (key file and ssh command paths)."""
    return uri.split("?", 1)[0]
