"""Host preflight: can this machine run the lab? One line per check, with a fix.

Each check is a small function returning a `Finding`; `run_checks` runs them
all, so one failure never hides the next. Nothing here changes the host, and
nothing sends a packet anywhere: routes are read, not probed.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kubelab import kvm
from kubelab.errors import KubelabError
from kubelab.plan import Plan

if TYPE_CHECKING:  # python-vagrant is imported by the checks that ask vagrant, not here
    from kubelab.backend.vagrant_driver import VagrantDriver

# Room for the host itself beside the VMs.
HOST_MEMORY_RESERVE_MIB = 1024
# A CentOS 7 VM with kubeadm and images grows its disk to about this much.
DISK_PER_VM_GIB = 6
DEFAULT_POOL_PATH = Path("/var/lib/libvirt/images")


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def _run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


@contextmanager
def _host_vagrant() -> Iterator[VagrantDriver]:
    """Vagrant for questions about this host: no lab folder; its output goes to a
    temporary log, read back when a command fails, then deleted."""
    from kubelab.backend.vagrant_driver import VagrantDriver

    with tempfile.TemporaryDirectory(prefix="kubelab-doctor-") as scratch:
        yield VagrantDriver(Path.cwd(), Path(scratch) / "vagrant.log")


def _first(exc: KubelabError) -> str:
    """The failed command and the first line of its output, as one line."""
    lines = [line.strip() for line in exc.message.splitlines() if line.strip()]
    return " ".join(lines[:2])


def check_vagrant(plan: Plan) -> Finding:
    if not shutil.which("vagrant"):
        return Finding(
            "vagrant",
            "fail",
            "vagrant is not installed",
            "apt-get install vagrant (Debian/Ubuntu) or dnf install vagrant (Fedora)",
        )
    try:
        with _host_vagrant() as vagrant:
            version = f"Vagrant {vagrant.version()}"
    except KubelabError as exc:
        return Finding(
            "vagrant", "warn", f"vagrant is installed, its version unknown: {_first(exc)}"
        )
    return Finding("vagrant", "ok", version)


def check_vagrant_libvirt(plan: Plan) -> Finding:
    if not shutil.which("vagrant"):
        return Finding(
            "vagrant-libvirt", "fail", "no vagrant, so no plugin", "install vagrant first"
        )
    try:
        with _host_vagrant() as vagrant:
            plugins = vagrant.plugins()
    except KubelabError as exc:
        plugins = {}
        why = f": {_first(exc)}"
    else:
        why = ""
    if "vagrant-libvirt" in plugins:
        return Finding("vagrant-libvirt", "ok", f"vagrant-libvirt ({plugins['vagrant-libvirt']})")
    return Finding(
        "vagrant-libvirt",
        "fail",
        f"the vagrant-libvirt plugin is not installed{why}",
        "apt-get install vagrant-libvirt (or: vagrant plugin install vagrant-libvirt)",
    )


def check_libvirtd(plan: Plan) -> Finding:
    from kubelab.lifecycle import inspector_for

    ok, message = inspector_for(plan).can_connect()
    if ok:
        return Finding("libvirtd", "ok", f"reachable at {plan.config.libvirt.uri}: {message}")
    return Finding(
        "libvirtd",
        "fail",
        f"not reachable at {plan.config.libvirt.uri}: {message}",
        "systemctl enable --now libvirtd, and add yourself to group libvirt",
    )


def check_kvm(plan: Plan) -> Finding:
    verdict = kvm.probe()
    driver = plan.config.libvirt.driver
    if verdict.usable:
        status, fix = "ok", ""
        if driver == "qemu":
            status, fix = "warn", "KVM works here: libvirt.driver: kvm is many times faster"
        return Finding("kvm", status, verdict.detail, fix)
    if driver == "qemu":
        return Finding("kvm", "ok", f"{verdict.detail}; driver qemu (software emulation) is set")
    return Finding(
        "kvm",
        "fail",
        verdict.detail,
        "set libvirt.driver: qemu in lab.yaml (or pass --driver qemu): slower, works",
    )


def _meminfo_mib(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
    return 0


def check_memory(plan: Plan) -> Finding:
    needed = sum(n.memory for n in plan.nodes) + HOST_MEMORY_RESERVE_MIB
    available = _meminfo_mib("MemAvailable")
    detail = f"{available} MiB available, the lab needs {needed} MiB"
    if available >= needed:
        return Finding("memory", "ok", detail)
    return Finding(
        "memory", "fail", detail, "close programs, or lower nodes[].memory (master >= 2048 MiB)"
    )


def check_disk(plan: Plan) -> Finding:
    from kubelab.lifecycle import inspector_for

    path = inspector_for(plan).pool_path(plan.config.libvirt.storage_pool) or DEFAULT_POOL_PATH
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free_gib = shutil.disk_usage(probe).free / 2**30
    needed = DISK_PER_VM_GIB * len(plan.nodes)
    detail = f"{free_gib:.0f} GiB free under {path}, the lab needs about {needed} GiB"
    if free_gib >= needed:
        return Finding("disk", "ok", detail)
    return Finding(
        "disk",
        "fail",
        detail,
        "free space there, or point libvirt.storage_pool at a pool with room",
    )


def check_subnet(plan: Plan) -> Finding:
    lab = plan.spec.lab_network
    done = _run(["ip", "-4", "route", "show"])
    if done is None or done.returncode != 0:
        return Finding(
            "subnet", "warn", "could not read the host's routes (`ip route`)", "install iproute2"
        )
    clashes = []
    for line in done.stdout.splitlines():
        words = line.split()
        if not words or words[0] == "default":
            continue
        try:
            net = ipaddress.IPv4Network(words[0], strict=False)
        except ValueError:
            continue
        device = words[words.index("dev") + 1] if "dev" in words else "?"
        if net.overlaps(lab) and not _is_lab_bridge(device, plan):
            clashes.append(f"{net} via {device}")
    if clashes:
        return Finding(
            "subnet",
            "fail",
            f"{lab} collides with host routes: {', '.join(clashes)}",
            "pick another network.cidr in lab.yaml (and matching node IPs)",
        )
    return Finding("subnet", "ok", f"{lab} meets no host route")


def _is_lab_bridge(device: str, plan: Plan) -> bool:
    # libvirt names the lab network's bridge virbrN; this lab's own is no clash.
    from kubelab.lifecycle import inspector_for

    return device == inspector_for(plan).network_bridge(plan.network_name)


def check_box(plan: Plan) -> Finding:
    from kubelab.boxes import list_boxes

    box = plan.config.box
    try:
        # Looking is read-only: no lab folder; the log is a temporary one.
        with _host_vagrant() as vagrant:
            boxes = list_boxes(vagrant)
    except Exception as exc:  # noqa: BLE001 - any failure here is a finding, not a crash
        return Finding("box", "warn", f"could not list boxes: {exc}", "check vagrant")
    present = [b for b in boxes if b.name == box.name and b.provider == "libvirt"]
    if any(not box.version or b.version == box.version for b in present):
        return Finding("box", "ok", f"{box.name} {box.version} (libvirt) is present")
    return Finding(
        "box",
        "warn",
        f"{box.name} {box.version or ''} (libvirt) is not present: `invoke up` will download it "
        "from Vagrant Cloud (needs internet)",
        "offline: `invoke box.import FILE --name NAME` with a box from your teacher, "
        "or `invoke box.build` and `--box NAME`",
    )


CHECKS: list[Callable[[Plan], Finding]] = [
    check_vagrant,
    check_vagrant_libvirt,
    check_libvirtd,
    check_kvm,
    check_memory,
    check_disk,
    check_subnet,
    check_box,
]


def run_checks(plan: Plan, checks: list[Callable[[Plan], Finding]] | None = None) -> list[Finding]:
    findings = []
    for check in checks or CHECKS:
        try:
            findings.append(check(plan))
        except Exception as exc:  # noqa: BLE001 - a broken check must not hide the others
            name = check.__name__.removeprefix("check_")
            findings.append(Finding(name, "fail", f"the check itself failed: {exc}"))
    return findings
