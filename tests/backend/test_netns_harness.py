"""The namespace harness cleans up after a run that was killed before its teardown."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from kubelab import REPO_ROOT
from tests.support.libvirt_netns import (
    CAPS_CACHE,
    STATE_BASE,
    NetnsLibvirt,
    missing_requirements,
    reap_orphans,
)

# A test run that starts a harness and then dies without tearing it down.
KILLED_RUN = """
import sys, time
from pathlib import Path
from tests.support.libvirt_netns import NetnsLibvirt
lab = NetnsLibvirt(base_dir=Path(sys.argv[1]))
lab.start()
print(lab.name, lab.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.netns
@pytest.mark.integration
def test_a_killed_run_is_torn_down_by_the_next_harness() -> None:
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    # Not under tmp_path: pytest runs elsewhere on the machine may prune it meanwhile.
    base = Path(tempfile.mkdtemp(prefix="kubelab-reap-test-", dir="/var/tmp"))
    # The QEMU capabilities the harnesses keep, where there are any: without them the
    # killed run's libvirtd probes QEMU afresh (about 9 s), which is not what this tests.
    kept_caps = STATE_BASE / CAPS_CACHE
    if kept_caps.is_dir():
        subprocess.run(["cp", "-a", str(kept_caps), str(base / CAPS_CACHE)], check=True)
    try:
        run = subprocess.Popen(
            [sys.executable, "-c", KILLED_RUN, str(base)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert run.stdout is not None and run.stderr is not None
        started = run.stdout.readline().split()
        run.send_signal(signal.SIGKILL)
        run.wait()
        assert len(started) == 2, run.stderr.read()
        name, pid = started
        libvirtd = Path(f"/proc/{pid}")
        assert libvirtd.exists() and Path("/run/netns", name).exists()  # left behind

        assert reap_orphans(base) == [name]
        assert not Path("/run/netns", name).exists()
        assert not libvirtd.exists() or libvirtd.joinpath("stat").read_text().split()[2] == "Z"
        assert not (base / name).exists()
        assert reap_orphans(base) == []
    finally:
        reap_orphans(base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.netns
@pytest.mark.integration
def test_commands_run_inside_the_namespace(netns_libvirt: NetnsLibvirt, tmp_path: Path) -> None:
    host_links = set(os.listdir("/sys/class/net"))
    inside = netns_libvirt.run(["ls", "/sys/class/net"]).stdout.split()
    assert "lo" in inside
    assert not (set(inside) - {"lo"}) & (host_links - {"lo"})  # none of the machine's links
    # libvirt's state there is the harness's copy, not the machine's.
    assert netns_libvirt.run(["cat", "/run/libvirt/libvirtd.pid"]).stdout.strip() == str(
        netns_libvirt.pid
    )

    log = tmp_path / "run.log"
    log.write_text("earlier\n")
    result = netns_libvirt.run(["sh", "-c", "echo out; echo err >&2; exit 3"], log=log, check=False)
    assert result.returncode == 3
    assert sorted(result.stdout.split()) == ["err", "out"]
    assert log.read_text().startswith("earlier\n")
