"""A local folder of Debian packages for the test VMs, which have no internet.

kubelab ships `mirror.local_repo` into every VM and points apt at it (the prepare
and repos stages). This module makes such a folder on the host: exactly the
packages the stages and the tests install (chrony for stage 1, containerd and runc
for stage 3, nginx-light for verify, golang-cfssl and etcd for the hard way) plus
whatever of their dependencies the test box lacks, as a flat apt repository (a
Packages index beside the .deb files).

Which packages the box lacks is apt's own answer: `apt-get --simulate install`
against the box's dpkg status, read out of the box image with debugfs, and this
host's package lists (Debian 12, like the box). Recommends are left out: the VMs'
apt skips a recommended package its sources lack, and criu (with python3) for
containerd would only slow the test down. Downloads come from the Debian mirror in
the machine's own namespace; the folder is cached under CACHE by a digest of the
package list, so a rerun downloads nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from tests.support.tar_members import copy_member

CACHE = Path(os.environ.get("KUBELAB_E2E_DIR", "/var/tmp/kubelab-e2e")) / "debs"
# What the tests install: stage 1, stage 3, verify's web server, and the hard way's
# cfssl (pki stage) and etcd (etcd stage).
PACKAGES = ("chrony", "containerd", "runc", "nginx-light", "golang-cfssl", "etcd-server",
            "etcd-client")  # fmt: skip
TOOLS = {"apt-get": "apt", "dpkg-scanpackages": "dpkg-dev", "debugfs": "e2fsprogs",
         "qemu-img": "qemu-utils"}  # fmt: skip
DPKG_STATUS = "/var/lib/dpkg/status"
_INST = re.compile(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) ", re.M)


def missing_tools() -> str | None:
    """Why the folder cannot be built here, or None when it can."""
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    return f"needs {', '.join(missing)} (apt-get install {' '.join(missing)})" if missing else None


def box_dpkg_status(box_file: Path, cache: Path = CACHE) -> Path:
    """The test box's /var/lib/dpkg/status, read from its disk image (cached per box file)."""
    out = cache / f"{box_file.stem}.dpkg-status"
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".status-") as tmp:
        work = Path(tmp)
        with tarfile.open(box_file) as box:
            copy_member(box, "box.img", work)
        # debugfs reads an ext4 file system from a raw image only.
        _run(["qemu-img", "convert", "-O", "raw", str(work / "box.img"), str(work / "root.raw")])
        _run(["debugfs", "-R", f"dump -p {DPKG_STATUS} {work / 'status'}", str(work / "root.raw")])
        if not (work / "status").is_file():
            raise RuntimeError(f"{box_file}: no {DPKG_STATUS} in the box image")
        (work / "status").replace(out)
    return out


def packages_to_fetch(status: Path, packages: tuple[str, ...] = PACKAGES) -> list[tuple[str, str]]:
    """(name, version) of every package apt would install on the box for `packages`."""
    with tempfile.NamedTemporaryFile(prefix="kubelab-extended-states-") as states:
        result = _run([
            "apt-get", "--simulate", "-q",
            "-o", f"Dir::State::status={status}",
            "-o", f"Dir::State::extended_states={states.name}",
            "-o", "Debug::NoLocking=1",
            "-o", "APT::Install-Recommends=false",
            "install", *packages,
        ])  # fmt: skip
    found = _INST.findall(result.stdout)
    names = {name.split(":")[0] for name, _ in found}
    missing = [p for p in packages if p not in names]
    if missing:
        raise RuntimeError(f"apt would not install {', '.join(missing)}:\n{result.stdout[-2000:]}")
    return sorted((name.split(":")[0], version) for name, version in found)


def build_local_repo(
    box_file: Path, packages: tuple[str, ...] = PACKAGES, cache: Path = CACHE
) -> Path:
    """The flat apt repository folder for `packages` on the box (built once, then cached)."""
    reason = missing_tools()
    if reason:
        raise RuntimeError(f"a local Debian package folder {reason}")
    status = box_dpkg_status(box_file, cache)
    try:
        wanted = packages_to_fetch(status, packages)
        return _repo_for(wanted, cache)
    except RuntimeError:
        # This host's package lists may be older than the mirror (a version gone).
        _run(["apt-get", "update", "-q"])
        return _repo_for(packages_to_fetch(status, packages), cache)


def _repo_for(wanted: list[tuple[str, str]], cache: Path) -> Path:
    key = hashlib.sha256("\n".join(f"{n}={v}" for n, v in wanted).encode()).hexdigest()[:12]
    repo = cache / f"repo-{key}"
    if (repo / "Packages.gz").is_file():
        return repo
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=cache, prefix=".repo-"))
    try:
        work.chmod(0o755)  # apt downloads as its _apt user where it can
        _run(["apt-get", "download", "-q", *(f"{n}={v}" for n, v in wanted)], cwd=work)
        index = _run(["dpkg-scanpackages", "--multiversion", "."], cwd=work).stdout
        (work / "Packages").write_text(index)
        (work / "Packages.gz").write_bytes(gzip.compress(index.encode(), mtime=0))
        try:
            work.rename(repo)
        except OSError:  # another run made the same folder meanwhile
            shutil.rmtree(work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return repo


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(argv)}` exited {result.returncode}:\n"
            f"{(result.stdout + result.stderr)[-2000:]}"
        )
    return result
