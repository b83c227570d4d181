"""verify's SSH and curl parts against the three real VMs.

nginx-light (from the local Debian package folder) serves its welcome page on every
VM. verify's collector, over kubelab's Transport (one persistent connection per
node), curls every VM's private address from every VM with verify's own curl command
and writes the evidence; verify's own verdict (`curl_problem`) reads it back. Then
the benchmark runs the same commands through the Transport and through one
`vagrant ssh -c` per command and prints both (tests/e2e/bench_verify.py).

The Kubernetes parts of verify (kubectl, the nginx Deployment) need a cluster, which
needs packages no registry here carries; tests/verify covers them over real sshd
hosts with recorded kubectl outputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kubelab.transport import Transport
from kubelab.verify.checks import curl_problem
from kubelab.verify.collect import DEFAULT_KUBECTL, _Collector
from kubelab.verify.evidence import COMMANDS, Evidence, EvidenceWriter, http_url
from kubelab.verify.lab import expected_from_plan
from tests.e2e.bench_verify import install_nginx, measure
from tests.e2e.lab import FIGURES, NODES, E2ELab

pytestmark = [pytest.mark.e2e, pytest.mark.netns, pytest.mark.incremental]

# A check name of this test's own: the targets are the VMs' private addresses.
CHECK = "private-ips"


@pytest.fixture(scope="module")
def nginx_lab(e2e_lab: E2ELab, local_repo: Path) -> E2ELab:
    """The lab up with stage 1 (apt pointed at the local folder) and nginx on every VM."""
    up = e2e_lab.up(e2e_lab.config("prepare"))
    assert up.rc == 0, up
    installed = install_nginx(e2e_lab)
    for node, result in installed.items():
        assert result.ok and result.stdout.strip().endswith("active"), (node, result.tail(20))
    return e2e_lab


def test_every_vm_gets_the_welcome_page_from_every_private_address(nginx_lab: E2ELab) -> None:
    plan = nginx_lab.plan(nginx_lab.config("prepare"))
    expected = expected_from_plan(plan)
    folder = nginx_lab.netns.state / "evidence"

    def curl_all(transport: Transport) -> int:
        collector = _Collector(transport, expected, EvidenceWriter(folder), DEFAULT_KUBECTL)
        for source in expected.nodes:
            for target in expected.nodes:
                collector.curl(CHECK, source, target.private_ip, http_url(target.private_ip, 80))
        return transport.connections_opened

    connections = nginx_lab.on_vms(curl_all)

    evidence = Evidence(folder)
    problems = {
        (source.name, target.private_ip): curl_problem(
            evidence, CHECK, source.name, target.private_ip, http_url(target.private_ip, 80)
        )
        for source in expected.nodes
        for target in expected.nodes
    }
    assert problems == dict.fromkeys(problems), problems
    assert len(problems) == len(NODES) ** 2
    # Nine commands, three SSH connections: one per node, reused.
    assert connections == len(NODES)
    assert len((folder / COMMANDS).read_text().splitlines()) == len(NODES) ** 2


def test_benchmark_transport_against_vagrant_ssh(nginx_lab: E2ELab) -> None:
    figures = measure(nginx_lab, nginx_lab.plan(nginx_lab.config("prepare")))
    FIGURES.update(figures)
    print("\n".join(f"{k}: {v}" for k, v in figures.items()))
    # Both ways ran the same commands and reached the same pages: the figures compare alike.
    ours, theirs = (v for k, v in figures.items() if k.startswith("verify commands ("))
    pages = f"{len(NODES) ** 2} welcome pages"
    assert ours.endswith(pages) and theirs.endswith(pages), figures
