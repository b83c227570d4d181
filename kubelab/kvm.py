"""Can /dev/kvm run a guest? Ask it to.

A /dev/kvm that opens is not enough: on some hosts (nested setups, ours) every
ordinary guest stalls ("KVM internal error ... emulation failure", or no output
at all) and Vagrant waits forever for an address. Two probes, cheapest first:

1. the smallest guest there is (one page holding a HLT instruction, one vCPU in
   real mode), run through the KVM ioctls; it must exit because it halted;
2. the host's own kernel booted by QEMU with `-accel kvm`: within a few
   seconds it must print "Linux version" on its serial port. On our machines
   probe 1 passes and probe 2 does not, which is why both exist.
"""

from __future__ import annotations

import ctypes
import fcntl
import glob
import mmap
import os
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass

# ioctl numbers from <linux/kvm.h> (type 0xAE); sizes are of the x86-64 structs.
KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_CREATE_VCPU = 0xAE41
KVM_SET_USER_MEMORY_REGION = 0x4020AE46  # struct kvm_userspace_memory_region, 32 bytes
KVM_RUN = 0xAE80
KVM_GET_REGS = 0x8090AE81  # struct kvm_regs, 144 bytes
KVM_SET_REGS = 0x4090AE82
KVM_GET_SREGS = 0x8138AE83  # struct kvm_sregs, 312 bytes
KVM_SET_SREGS = 0x4138AE84

KVM_EXIT_HLT = 5
EXIT_NAMES = {0: "unknown", 2: "io", 5: "hlt", 8: "shutdown", 9: "fail_entry", 17: "internal_error"}
GUEST_ADDRESS = 0x1000
HLT = b"\xf4"


@dataclass(frozen=True)
class KvmVerdict:
    usable: bool
    detail: str


def probe(device: str = "/dev/kvm", boot_seconds: float = 15.0) -> KvmVerdict:
    """Both probes; the verdict of the first that fails, else a pass."""
    tiny = probe_ioctl(device)
    if not tiny.usable:
        return tiny
    return probe_kernel_boot(boot_seconds)


def probe_kernel_boot(seconds: float = 15.0) -> KvmVerdict:
    qemu = shutil.which("qemu-system-x86_64")
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    if not qemu or not kernels:
        return KvmVerdict(
            True, "KVM ran a tiny test guest (no QEMU or host kernel to boot a real one)"
        )
    with tempfile.TemporaryDirectory(prefix="kubelab-kvm-") as tmp:
        serial = os.path.join(tmp, "serial.log")
        proc = subprocess.Popen(
            [
                qemu,
                "-accel",
                "kvm",
                "-m",
                "256",
                "-kernel",
                kernels[-1],
                "-append",
                "console=ttyS0 panic=-1",
                "-display",
                "none",
                "-monitor",
                "none",
                "-no-reboot",
                "-nodefaults",
                "-serial",
                f"file:{serial}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + seconds
        booted = False
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                if os.path.exists(serial):
                    with open(serial, "rb") as handle:
                        if b"Linux version" in handle.read():
                            booted = True
                            break
                time.sleep(0.2)
        finally:
            proc.kill()
            _, stderr = proc.communicate()
    if booted:
        return KvmVerdict(True, "KVM booted the host's kernel in a test guest")
    errors = [
        line for line in stderr.decode(errors="replace").splitlines() if "error" in line.lower()
    ]
    why = f" ({errors[-1][:120]})" if errors else ""
    return KvmVerdict(
        False,
        f"a test guest on KVM printed nothing in {seconds:.0f} s{why}: KVM cannot run guests here",
    )


def probe_ioctl(device: str = "/dev/kvm") -> KvmVerdict:
    if not os.path.exists(device):
        return KvmVerdict(False, f"{device} does not exist (no hardware virtualisation here)")
    try:
        kvm = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return KvmVerdict(False, f"cannot open {device}: {exc.strerror}")
    try:
        return _run_hlt_guest(kvm)
    except OSError as exc:
        return KvmVerdict(False, f"KVM refused a tiny guest: {exc.strerror or exc}")
    finally:
        os.close(kvm)


def _run_hlt_guest(kvm: int) -> KvmVerdict:
    version = fcntl.ioctl(kvm, KVM_GET_API_VERSION)
    if version != 12:
        return KvmVerdict(False, f"unexpected KVM API version {version}")
    vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
    memory = mmap.mmap(-1, 0x1000, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        memory.write(HLT)
        address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
        region = struct.pack("IIQQQ", 0, 0, GUEST_ADDRESS, 0x1000, address)
        fcntl.ioctl(vm, KVM_SET_USER_MEMORY_REGION, region)
        vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
        run_size = fcntl.ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE)
        run = mmap.mmap(vcpu, run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            # Real mode with code segment base 0: execution starts at GUEST_ADDRESS.
            sregs = bytearray(312)
            fcntl.ioctl(vcpu, KVM_GET_SREGS, sregs)
            struct.pack_into("QIH", sregs, 0, 0, 0xFFFF, 0)  # cs: base, limit, selector
            fcntl.ioctl(vcpu, KVM_SET_SREGS, bytes(sregs))
            regs = bytearray(144)
            fcntl.ioctl(vcpu, KVM_GET_REGS, regs)
            struct.pack_into("QQ", regs, 16 * 8, GUEST_ADDRESS, 0x2)  # rip, rflags
            fcntl.ioctl(vcpu, KVM_SET_REGS, bytes(regs))
            fcntl.ioctl(vcpu, KVM_RUN, 0)
            reason = struct.unpack_from("I", run, 8)[0]
        finally:
            run.close()
            os.close(vcpu)
    finally:
        del address
        memory.close()
        os.close(vm)
    if reason == KVM_EXIT_HLT:
        return KvmVerdict(True, "KVM ran a test guest to its HLT instruction")
    return KvmVerdict(
        False,
        f"a test guest stopped with exit {EXIT_NAMES.get(reason, reason)} "
        "instead of halting: KVM cannot run guests here",
    )
