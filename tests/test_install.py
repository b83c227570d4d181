"""`./install.sh` without --test installs every program kubelab itself runs on the host.

A green test suite can hide a missing runtime package, because `--test` installs
more. The programs are named where the code names them; `dpkg -S` says which Debian
package ships each, and that package must be in install.sh's run_packages.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kubelab.verify.evidence import curl_argv

INSTALL = Path(__file__).resolve().parents[1] / "install.sh"
# The host side of `invoke verify` (NodePort from this machine), `invoke doctor`
# (vagrant, ip) and the KVM probe (qemu-system-x86_64), `invoke ssh` (vagrant).
HOST_PROGRAMS = [curl_argv("http://192.0.2.1/", 1)[0], "vagrant", "ip", "qemu-system-x86_64"]


def packages(array: str) -> set[str]:
    found = re.search(rf"^{array}=\(([^)]*)\)", INSTALL.read_text(), re.M)
    assert found, f"install.sh has no {array}"
    return set(found.group(1).split())


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg (Debian/Ubuntu)")
@pytest.mark.parametrize("program", HOST_PROGRAMS)
def test_every_host_program_comes_from_a_run_package(program: str) -> None:
    path = shutil.which(program)
    assert path, f"{program} is not installed here; install.sh should have installed it"
    # dpkg knows a file by the path its package ships it at, which merged-/usr
    # symlinks and alternatives may hide: ask for each name it may go by.
    candidates = [str(Path(path).resolve()), path] + [f"{d}/{program}" for d in ("/bin", "/sbin")]
    owners = [
        subprocess.run(["dpkg", "-S", c], capture_output=True, text=True, check=False)
        for c in candidates
    ]
    owner = next((o for o in owners if o.returncode == 0), owners[0])
    assert owner.returncode == 0, owner.stderr
    package = owner.stdout.split(":")[0].strip()
    assert package in packages("run_packages"), f"{program} comes from {package}"
