"""The real cluster captures in ../shared/fixtures, read the same way by every test.

SOURCES.md beside the captures says where each comes from. The verify tests build
evidence folders from them, the grading tests a synthetic class, the sshd hosts
their stub kubectl's replies: all three find a capture with `fixture` and split a
`kubectl cluster-info dump` with `dump_documents`, here and nowhere else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kubelab.verify.evidence import CURL_WRITE_OUT

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("KUBELAB_FIXTURES") or REPO_ROOT.parent / "shared" / "fixtures")


def fixture(name: str) -> Path:
    """A recorded cluster output from the shared fixtures folder."""
    path = FIXTURES / name
    if not path.is_file():
        raise FileNotFoundError(f"no fixture {path} (set KUBELAB_FIXTURES to the folder)")
    return path


def read_json(name: str) -> Any:
    return json.loads(fixture(name).read_text())


def dump_documents(name: str) -> dict[str, tuple[dict[str, Any], str]]:
    """The JSON documents at the start of a `kubectl cluster-info dump` capture, by kind,
    each with its text as the dump printed it."""
    text = fixture(name).read_text()
    decoder = json.JSONDecoder()
    docs: dict[str, tuple[dict[str, Any], str]] = {}
    index = text.find("{\n")
    while 0 <= index < len(text) and text[index] == "{":
        doc, end = decoder.raw_decode(text, index)
        docs[doc["kind"]] = (doc, text[index:end] + "\n")
        index = end
        while index < len(text) and text[index].isspace():
            index += 1
    return docs


def curl_stdout(body: str, status: int) -> str:
    """What curl prints for verify's -w format: the body, then the status line (the
    real-curl test, tests/verify/test_verify_curl_real.py, proves this matches)."""
    trailer = CURL_WRITE_OUT.replace("\\n", "\n").replace("%{http_code}", f"{status:03d}")
    return body + trailer
