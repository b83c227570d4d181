"""The hard way, part 1 (exercise 4) for real on the three VMs, through `invoke`.

cfssl (golang-cfssl) and etcd (etcd-server, etcd-client, 3.4) come from the local
folder of Debian packages. `invoke up` runs the pki stage on the master, then the
etcd stage on every VM, the host handing each its certificate bundle; then
`invoke verify --exercise 4` collects the evidence and the host's real openssl
reads the certificates in it. Then the faults: one member stopped (the quorum of
2 holds, the check names it), a second (the check fails naming both), both
started again (it heals). Last, one rerun of every stage of the config (prepare,
repos, pki, etcd: their markers taken away) changes no file and restarts nothing;
this is also the provisioning module's proof that stage 1 is idempotent.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from kubelab.transport import CommandResult, Transport
from tests.e2e.lab import FIGURES, NODES, E2ELab, TaskRun

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.netns,
    pytest.mark.incremental,
]

MARKERS = "/var/lib/kubelab/stages"
ETCDCTL = "/opt/etcd/bin/my_etcdctl"
# What the config's stages write (prepare and repos, then pki and etcd); a second run
# must leave every file as it was.
WRITTEN_FILES = (
    "/etc/hosts", "/etc/fstab", "/etc/sysctl.d", "/etc/modules-load.d", "/etc/apt/sources.list.d",
    "/opt/kubelab/pki", "/opt/etcd", "/etc/systemd/system/etcd.service",
)  # fmt: skip
# Content digest, inode, size, mtime, mode and owner of every file: a file written
# again, even with the same bytes, gets a new inode or mtime.
FINGERPRINT = (
    'find "$@" -type f -exec stat -c "%n %i %s %Y %a %U:%G" {} + 2>/dev/null | sort; '
    'find "$@" -type f -exec sha256sum {} + 2>/dev/null | sort'
)
# What a stage's log says when it changed something (provision/lib/common.sh.j2 and the
# stages' own lines); a rerun's logs must have none.
CHANGED = re.compile(r"\] (wrote|created|made|disabled|installing|restarting)\b")
FLANNEL_KEY = "/coreos.com/network/config"
# `invoke up` prints each stage's end as "[HH:MM:SS] <node>: done | <stage> (<seconds> s)".
STAGE_DONE = re.compile(r"^(?:\d\d:\d\d:\d\d)?\s*(\S+): done \| (pki|etcd) \((\d+) s\)", re.M)


@pytest.fixture(scope="module", autouse=True)
def module_clock(e2e_lab: E2ELab) -> Iterator[None]:
    """The module's wall time: on the shared lab in CI; run alone, the VMs' boot too."""
    started = time.monotonic()
    yield
    FIGURES["the hard way module (wall)"] = f"{time.monotonic() - started:.0f} s"


@pytest.fixture(scope="module")
def hardway_config(e2e_lab: E2ELab, local_repo: Path) -> Path:
    return e2e_lab.config("hardway")


def verify(lab: E2ELab, config: Path, out: Path) -> tuple[TaskRun, dict[str, dict[str, object]]]:
    """`invoke verify --exercise 4` into `out`; (the run, check id -> its JSON result)."""
    report = out.with_suffix(".json")
    run = lab.invoke(
        "verify", "--exercise", "4", "--student", "e2e", "--evidence-out", str(out),
        "--json", str(report), config=config, timeout=900,
    )  # fmt: skip
    data = json.loads(report.read_text()) if report.is_file() else {"results": []}
    return run, {r["id"]: r for r in data["results"]}


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True).stdout


def wait_healthy(
    lab: E2ELab, config: Path, members: Sequence[str] = NODES, deadline: float = 300
) -> None:
    """Until `members` answer healthy: etcd restarts members, and the members left after
    one stops elect a leader, at their own pace (slowly, under emulation)."""
    plan = lab.plan(config)
    urls = ",".join(plan.spec.etcd_client_url(n) for n in plan.nodes if n.name in members)
    script = (
        f"end=$((SECONDS+{int(deadline)})); "
        f"until {ETCDCTL} --endpoints={urls} endpoint health; do "
        "(( SECONDS < end )) || exit 1; sleep 5; done"
    )
    result = lab.run_on(["master"], "bash", "-c", script, sudo=True, timeout=deadline + 60)
    assert result["master"].rc == 0, result["master"].tail()


@pytest.mark.timeout(2700)  # run alone it boots the VMs too (7 min on a busy machine)
def test_pki_and_etcd_stages_build_the_cluster(e2e_lab: E2ELab, hardway_config: Path) -> None:
    up = e2e_lab.up(hardway_config)
    assert up.rc == 0, up
    FIGURES["invoke up, pki + etcd on 3 VMs (wall)"] = f"{up.seconds:.0f} s"
    FIGURES["the hard way's stage times"] = ", ".join(
        f"{node} {stage} {seconds} s" for node, stage, seconds in STAGE_DONE.findall(up.output)
    )
    wait_healthy(e2e_lab, hardway_config)


def test_verify_passes_and_the_certificates_hold_under_openssl(
    e2e_lab: E2ELab, hardway_config: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    plan = e2e_lab.plan(hardway_config)
    out = tmp_path_factory.mktemp("hardway") / "evidence"
    run, results = verify(e2e_lab, hardway_config, out)
    FIGURES["invoke verify --exercise 4 (3 VMs)"] = f"{run.seconds:.0f} s"
    assert run.rc == 0, {check: r["detail"] for check, r in results.items()} or run
    assert results["etcd-cluster"]["passed"], results["etcd-cluster"]
    assert "3 of 3 members healthy" in str(results["etcd-cluster"]["detail"])
    assert results["pki"]["passed"], results["pki"]
    members = sorted([n.ip for n in plan.nodes] + [n.hostname for n in plan.nodes])
    # The evidence names each VM as verify does (`--student e2e`: master-e2e, ...).
    held = sorted(p for p in (out / "hardway" / "pki").iterdir() if p.is_dir())
    assert len(held) == len(plan.nodes), held
    for pki in held:
        ca, server = pki / "ca.pem", pki / "server.pem"
        assert openssl("verify", "-CAfile", str(ca), str(server)).strip().endswith(": OK")
        text = openssl("x509", "-in", str(server), "-noout", "-text")
        found = re.search(r"X509v3 Subject Alternative Name:.*?\n\s*(.+)", text)
        assert found, text
        assert sorted(s.split(":", 1)[1] for s in found.group(1).split(", ")) == members
        assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
        assert (
            subprocess.run(
                ["openssl", "x509", "-in", str(server), "-noout", "-checkend", str(9 * 365 * 86400)]
            ).returncode
            == 0
        )  # the manual's 87600h
        for line in (pki / "keys.txt").read_text().splitlines():
            assert line.split()[1] == "600", line
    for path in out.rglob("*"):
        if path.is_file():
            assert b"PRIVATE KEY" not in path.read_bytes(), path
    # A client without a certificate is refused (the TLS handshake fails).
    no_cert = json.loads(next((out / "hardway/etcd/no-cert").glob("master*.json")).read_text())
    assert no_cert["http_status"] in (0, None) and no_cert["rc"] != 0, no_cert


def test_the_flannel_config_key_is_written_and_read_back_over_tls(
    e2e_lab: E2ELab, hardway_config: Path
) -> None:
    plan = e2e_lab.plan(hardway_config)
    value = json.dumps({"Network": plan.kubernetes["pod_cidr"], "Backend": {"Type": "vxlan"}})

    def put_get(t: Transport) -> tuple[CommandResult, CommandResult]:
        put = t.run("master", ETCDCTL, "put", FLANNEL_KEY, value, sudo=True, timeout=60)
        get = t.run("node2", ETCDCTL, "get", FLANNEL_KEY, "--print-value-only", sudo=True)
        return put, get

    put, get = e2e_lab.on_vms(put_get, ["master", "node2"])
    assert put.rc == 0 and put.stdout.strip() == "OK", put
    assert get.rc == 0 and json.loads(get.stdout) == json.loads(value), get


def test_one_member_down_keeps_the_quorum_and_the_check_names_it(
    e2e_lab: E2ELab, hardway_config: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    stopped = e2e_lab.run_on(["node2"], "systemctl", "stop", "etcd", sudo=True)
    assert stopped["node2"].rc == 0, stopped
    wait_healthy(e2e_lab, hardway_config, ["master", "node1"])  # the two left have a leader
    run, results = verify(e2e_lab, hardway_config, tmp_path_factory.mktemp("one") / "ev")
    cluster = results["etcd-cluster"]
    assert cluster["passed"], cluster
    assert "2 of 3 members healthy" in str(cluster["detail"])
    assert "down: node2" in str(cluster["detail"])


@pytest.mark.timeout(1800)
def test_two_members_down_fail_naming_both_then_they_heal(
    e2e_lab: E2ELab, hardway_config: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    stopped = e2e_lab.run_on(["node1"], "systemctl", "stop", "etcd", sudo=True)
    assert stopped["node1"].rc == 0, stopped
    run, results = verify(e2e_lab, hardway_config, tmp_path_factory.mktemp("two") / "ev")
    cluster = results["etcd-cluster"]
    assert run.rc != 0 and not cluster["passed"], cluster
    detail = str(cluster["detail"])
    assert "no quorum" in detail and "node1" in detail and "node2" in detail, detail
    started = e2e_lab.run_on(["node1", "node2"], "systemctl", "start", "--no-block", "etcd",
                             sudo=True)  # fmt: skip
    assert all(r.rc == 0 for r in started.values()), started
    # It heals: every member healthy again. (No third verify: each costs about 2 min
    # of the CI budget, and a healthy cluster's verdict is the first test's.)
    wait_healthy(e2e_lab, hardway_config)


@pytest.mark.timeout(1800)
def test_a_second_run_of_every_stage_changes_nothing(e2e_lab: E2ELab, hardway_config: Path) -> None:
    def fingerprint() -> dict[str, str]:
        found = e2e_lab.run_on(NODES, "sh", "-c", FINGERPRINT, "fp", *WRITTEN_FILES, sudo=True)
        return {n: r.stdout for n, r in found.items()}

    stages = [stage.name for stage in e2e_lab.plan(hardway_config).stages]
    before = fingerprint()
    # Make kubelab really run every script again: take away its "done" markers.
    cleared = e2e_lab.run_on(
        NODES, "rm", "-f", *(f"{MARKERS}/{stage}.sha256" for stage in stages), sudo=True
    )
    assert all(r.rc == 0 for r in cleared.values()), cleared
    rerun = e2e_lab.up(hardway_config)
    assert rerun.rc == 0, rerun
    FIGURES["every stage again (prepare, repos, pki, etcd), nothing to change (wall)"] = (
        f"{rerun.seconds:.0f} s"
    )
    for node in NODES:
        logs = {
            log.stem.split("-", 1)[1]: log.read_text()
            for log in (e2e_lab.lab_dir / "logs" / node).glob("[0-9]*-*.log")
        }
        for stage, text in logs.items():
            if stage in stages:
                assert not CHANGED.search(text), (node, stage, text[-2000:])
        assert "unchanged: /etc/hosts" in logs["prepare"], (node, logs["prepare"][-2000:])
        assert "unchanged: /etc/fstab" in logs["prepare"], node
        assert "already running: etcd" in logs["etcd"], (node, logs["etcd"][-2000:])
    assert fingerprint() == before
