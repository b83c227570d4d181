"""Provenance: what kubelab itself applied on each VM, as the evidence records it.

Every provisioning stage leaves a marker on the VM (kubelab/provision.py): its
digest, and from evidence format 2 on a JSON line with when it ran and what
applied it (`up`, `exercise-N-start`, `solve`). verify copies the markers of each
VM into provenance/<machine>.txt; the snapshot restores of the lab (`invoke lab
--reset`) are listed in meta.json. A grade reads them here, never from the VM.

A folder older than format 2 has no provenance: `read` returns an empty one, and
nothing is voided for lack of a record.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from kubelab import defaults
from kubelab.verify.evidence import BadEvidence, Evidence, MissingEvidence

PROVENANCE_DIR = "provenance"
MARKER_DIR = defaults.GUEST_PATHS["markers_dir"]  # where the stage runner writes them
# What applied a stage, as the markers say it.
UP, SOLVE = "up", "solve"
_MARKERS_MAX = 200  # lines read of one VM's markers
_STAGE = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")
# Prints each marker as "<file><TAB><first 2000 bytes, one line>"; run with sudo sh -c.
MARKERS_SCRIPT = (
    f'for f in {MARKER_DIR}/*; do [ -f "$f" ] || continue; '
    'printf "%s\\t%s\\n" "${f##*/}" "$(head -c 2000 "$f" | tr -d "\\n\\t")"; done; true'
)


def start_label(exercise: int | str) -> str:
    """What applied a stage of exercise N's start state."""
    return f"exercise-{exercise}-start"


def markers_path(machine: str) -> str:
    return f"{PROVENANCE_DIR}/{re.sub(r'[^A-Za-z0-9.-]+', '-', machine)[:60] or 'x'}.txt"


@dataclass(frozen=True)
class Applied:
    """One stage kubelab applied on one VM."""

    node: str
    stage: str
    applied_by: str  # up | exercise-N-start | solve | unknown (a marker older than records)
    applied_at: str = ""

    def __str__(self) -> str:
        when = f" at {self.applied_at}" if self.applied_at else ""
        return f"{self.stage} on {self.node}, applied by {self.applied_by}{when}"


def parse_markers(node: str, text: str) -> list[Applied]:
    """The stages one VM's marker listing says kubelab applied."""
    digests: set[str] = set()
    records: dict[str, Applied] = {}
    for line in text.splitlines()[:_MARKERS_MAX]:
        name, _, content = line.partition("\t")
        stage, dot, kind = name.rpartition(".")
        if not dot or not _STAGE.match(stage):
            continue
        if kind == "sha256":
            digests.add(stage)
        elif kind == "json":
            try:
                data = json.loads(content)
            except ValueError:
                data = {}
            if not isinstance(data, dict):
                data = {}
            records[stage] = Applied(
                node,
                stage,
                str(data.get("applied_by") or "unknown")[:40],
                str(data.get("applied_at") or "")[:40],
            )
    # A digest without its record is a stage applied before records were kept.
    return [records.get(s, Applied(node, s, "unknown")) for s in sorted(digests | set(records))]


def read(evidence: Evidence, machines: list[str]) -> list[Applied]:
    """Every stage marker the evidence holds, VM by VM; none for a folder without them."""
    applied: list[Applied] = []
    for machine in machines:
        try:
            applied += parse_markers(machine, evidence.text(markers_path(machine)))
        except (MissingEvidence, BadEvidence):
            continue
    return applied


def restores(meta: dict[str, Any]) -> list[str]:
    """The snapshot restores meta.json lists, as one line each."""
    found = meta.get("restores") if isinstance(meta, dict) else None
    if not isinstance(found, list):
        return []
    return [
        f"restored {r.get('snapshot', '?')} at {r.get('restored_at', '?')}"
        for r in found[:50]
        if isinstance(r, dict)
    ]
