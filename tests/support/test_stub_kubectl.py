"""The fake hosts' kubectl (stubs/kubectl) matches its replies as fnmatch does.

It matches `*` globs itself so that each of its hundreds of runs in a live-graded class
starts without fnmatch; these cases hold it to fnmatch.fnmatchcase.
"""

from __future__ import annotations

import fnmatch
import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

STUB = Path(__file__).parent / "stubs" / "kubectl"


def _stub() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("stub_kubectl", str(STUB))
    spec = importlib.util.spec_from_loader("stub_kubectl", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBELAB_FAKE_HOST", "/nonexistent")
        loader.exec_module(module)
    return module


TEXTS = [
    "",
    "get nodes -o json",
    "--kubeconfig /etc/kubernetes/admin.conf get nodes -o json",
    "--kubeconfig /etc/kubernetes/admin.conf -n kubelab-verify get pods -l app=nginx -o json",
    "apply -f -",
    "-n ns rollout status deployment/nginx --timeout=120s",
    "aaa",
    "abab",
    "get pods -A -o json",
]
PATTERNS = [
    "",
    "*",
    "**",
    "get nodes -o json",
    "*get nodes -o json",
    "*get nodes*",
    "*-n * get pods -l *",
    "*apply -f -",
    "*-n ns rollout status deployment/nginx *",
    "a*a",
    "a*b*b",
    "ab*ab",
    "*a*a*",
    "get*json",
    "?et nodes -o json",
    "*[gh]et *",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_matches_as_fnmatch_does(pattern: str) -> None:
    matches = _stub().matches
    for text in TEXTS:
        assert matches(text, pattern) == fnmatch.fnmatchcase(text, pattern), (text, pattern)


def test_the_stub_starts_without_site_or_fnmatch() -> None:
    assert STUB.read_text().splitlines()[0] == "#!/usr/bin/python3 -IS"
    assert "fnmatch" not in _stub().__dict__
