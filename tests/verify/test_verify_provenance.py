"""Provenance: the stage markers verify copies from each VM, read back for a grade."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from kubelab import provision
from kubelab.verify import provenance
from kubelab.verify.evidence import Evidence
from kubelab.verify.provenance import Applied, parse_markers


def test_the_marker_folder_is_the_one_provisioning_writes() -> None:
    assert provenance.MARKER_DIR == provision.MARKER_DIR


def marker_listing(tmp_path: Path, markers: dict[str, str]) -> str:
    """What MARKERS_SCRIPT prints over a marker folder holding these files (real sh)."""
    folder = tmp_path / "stages"
    folder.mkdir()
    for name, text in markers.items():
        (folder / name).write_text(text)
    script = provenance.MARKERS_SCRIPT.replace(provenance.MARKER_DIR, str(folder))
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout


def test_records_say_what_applied_each_stage(tmp_path: Path) -> None:
    record = {"stage": "prepare", "digest": "ab", "applied_at": "2026-12-01T10:00:00Z"}
    listing = marker_listing(
        tmp_path,
        {
            "prepare.sha256": "ab\n",
            "prepare.json": json.dumps({**record, "applied_by": "solve"}) + "\n",
            "repos.sha256": "cd\n",  # applied before markers carried a record
        },
    )
    assert parse_markers("master", listing) == [
        Applied("master", "prepare", "solve", "2026-12-01T10:00:00Z"),
        Applied("master", "repos", "unknown"),
    ]


def test_hostile_markers_are_bounded(tmp_path: Path) -> None:
    listing = "BAD NAME.sha256\tx\nprepare.json\t{not json\n" + "z.sha256\tx\n" * 5000
    applied = parse_markers("node1", listing)
    assert Applied("node1", "prepare", "unknown") in applied
    assert len(applied) <= 200
    assert all(" " not in a.stage for a in applied)


def test_a_folder_without_provenance_reads_as_none(tmp_path: Path) -> None:
    assert provenance.read(Evidence(tmp_path), ["master", "node1"]) == []
