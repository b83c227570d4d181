"""The StageRunner carries the pki stage's bundles to the etcd stage, as over SSH.

kubelab/provision.py copies each VM's certificate bundle from the master (base64
over the transport) before that VM's etcd stage, 0600, and the stage deletes it
after unpacking. Here the VMs are isolated roots (root_transport.py) and cfssl
is the real one.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from kubelab.progress import Reporter
from kubelab.provision import REMOTE_SCRIPT_DIR, StageRunner
from tests.provision.harness import render_lab
from tests.provision.root_transport import RootTransport

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("cfssl"), reason="golang-cfssl is not installed here"),
]

TWO_NODES = {
    "nodes": [
        {"name": "master", "role": "master", "ip": "192.168.56.10"},
        {"name": "node1", "role": "node", "ip": "192.168.56.11"},
    ],
    "provision.stages": ["prepare", "repos", "pki", "etcd"],
}


def test_each_vm_gets_its_bundle_from_the_master_and_keeps_no_copy(
    new_guest: Any, tmp_path: Path
) -> None:
    plan, files = render_lab(TWO_NODES, lab_dir=tmp_path / "lab")
    guests = {node.name: new_guest("centos7", node) for node in plan.nodes}
    transport = RootTransport(guests)
    runs = StageRunner(plan, files, transport, Reporter()).run()  # type: ignore[arg-type]
    assert [(r.node, r.stage, r.status) for r in runs if r.stage == "etcd"] == [
        ("master", "etcd", "done"),
        ("node1", "etcd", "done"),
    ]
    [etcd] = [s for s in plan.stages if s.name == "etcd"]
    [bundle] = etcd.receives
    fetched = [line for node, line in transport.commands if "base64" in line]
    assert fetched == [f"base64 -w 0 {bundle.source(n)}" for n in plan.nodes]
    assert all(node == "master" for node, line in transport.commands if "base64" in line)
    master_key = guests["master"].upper / "opt/kubelab/pki/server-key.pem"
    for node in plan.nodes:
        key = guests[node.name].upper / "opt/etcd/ssl/server-key.pem"
        assert key.read_bytes() == master_key.read_bytes()
        assert key.stat().st_mode & 0o777 == 0o600
        assert guests[node.name].path(f"{REMOTE_SCRIPT_DIR}/{bundle.to}") is None
    for log in plan.log_dir.rglob("*.log"):
        assert "PRIVATE KEY" not in log.read_text(), log
