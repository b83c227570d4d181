"""The evidence folder: its layout, a reader for the checks and a writer for collect.

A run of verify leaves one folder that a grader can re-check with no cluster:

    meta.json                     kubelab version, lab config, student, exercise, times,
                                  cluster identity (kube-system UID, node machine/boot IDs)
    commands.jsonl                every command verify ran: check, node, argv, rc, times,
                                  and where its stdout and stderr were saved
    version.json                  kubectl get --raw /version
    nodes.json                    kubectl get nodes -o json            (exactly as printed)
    pods.json                     kubectl get pods -A -o json          (exactly as printed)
    kube-system-namespace.json    kubectl get namespace kube-system -o json
    nginx/manifest.yaml           what verify applied
    nginx/deployment.json         kubectl -n NS get deployment nginx -o json
    nginx/pods.json               kubectl -n NS get pods -l ... -o json
    nginx/service.json            kubectl -n NS get service nginx -o json
    nginx/endpoints.json          kubectl -n NS get endpoints nginx -o json
    curl/<check>/<from>__<target>.json   one record per request (see curl_record)
    curl/<check>/<from>__<target>.out    curl's raw stdout: the body, then a status line
    dns.json                      only with --dns
    own/deployments.json          exercise 2: kubectl get deployments -A -o json
    own/services.json             exercise 2: kubectl get services -A -o json
    node-prep/<node>.txt          exercise 1: labs/probes/node-prep.sh's key=value lines
    provenance/<node>.txt         each VM's stage markers: what kubelab applied, when, by
                                  what (verify/provenance.py; format 2 on)
    cleanup.json                  the namespace delete and the look that confirms it
    raw/NNN-<what>.stdout|.stderr output of commands that has no file of its own above

A file is written only when its command succeeded, so a failed command leaves
a gap that the checks report as "no evidence", with the command's exit code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubelab import __version__, safeio
from kubelab.errors import KubelabError

if TYPE_CHECKING:
    from kubelab.verify.expect import Expected

# 2: commands carry their phase; node-prep/, provenance/, meta.json restores. 1 still loads.
FORMAT = 2
# The exit code of a command stopped at its deadline (coreutils timeout, the transport).
TIMEOUT_RC = 124

META = "meta.json"
COMMANDS = "commands.jsonl"
VERSION = "version.json"
NODES = "nodes.json"
PODS = "pods.json"
KUBE_SYSTEM_NAMESPACE = "kube-system-namespace.json"
MANIFEST = "nginx/manifest.yaml"
DEPLOYMENT = "nginx/deployment.json"
NGINX_PODS = "nginx/pods.json"
SERVICE = "nginx/service.json"
ENDPOINTS = "nginx/endpoints.json"
DNS = "dns.json"
CLEANUP = "cleanup.json"
NODE_PREP_DIR = "node-prep"
OWN_DEPLOYMENTS = "own/deployments.json"
OWN_SERVICES = "own/services.json"
RAW = "raw"
CURL = "curl"


class MissingEvidence(Exception):
    """A file a check needs is not in the folder."""

    def __init__(self, rel: str, why: str = "") -> None:
        super().__init__(rel)
        self.rel = rel
        self.why = why

    def __str__(self) -> str:
        return f"no evidence: {self.rel}" + (f" ({self.why})" if self.why else "")


class BadEvidence(Exception):
    """A file is there but cannot be read as what it should be."""

    def __init__(self, rel: str, why: str) -> None:
        super().__init__(rel)
        self.rel = rel
        self.why = why

    def __str__(self) -> str:
        return f"unreadable evidence: {self.rel}: {self.why}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def meta_record(
    expected: Expected,
    *,
    student_id: str | None,
    exercise: str | int | None,
    lab_config: Mapping[str, Any] | None,
    spec: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The keys every collector's meta.json starts with: what ran, for whom, what it
    expected. A collector adds its own, and sets `finished` when it ends."""
    return {
        "format": FORMAT,
        "kubelab_version": __version__,
        "student_id": student_id,
        "exercise": exercise,
        "lab_config": dict(lab_config or {}),
        # The lab's LabSpec.to_dict() (None when no plan made the lab: live grading);
        # LabSpec.from_dict reads it back.
        "spec": dict(spec) if spec is not None else None,
        "expected": expected.to_dict(),
        "started": now(),
        "finished": None,
    }


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def items(doc: Any, rel: str = "") -> list[dict[str, Any]]:
    """The items of a List/NodeList/PodList document."""
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise BadEvidence(rel or "document", "not a Kubernetes list (no items)")
    return doc["items"]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-")[:60] or "x"


def _tail(text: str, limit: int = 200) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    return last if len(last) <= limit else last[: limit - 3] + "..."


# --- curl records -----------------------------------------------------------------

# curl writes this after the body (-w), so one call gives body and status. curl
# expands the \n escapes itself; the leading newline keeps the mark off the body.
_STATUS_MARK = "kubelab-http-status:"
CURL_WRITE_OUT = "\\n" + _STATUS_MARK + "%{http_code}\\n"

# What every nginx welcome page carries: nginx.org's index.html from 1.14 to
# 1.29.6+ and Debian's index.nginx-debian.html. Requiring the closing line too
# makes a page cut short fail.
_WELCOME_MARKS = (
    b"<title>Welcome to nginx!</title>",
    b"<h1>Welcome to nginx!</h1>",
    b"Thank you for using nginx.",
)


def curl_argv(url: str, max_time: int) -> list[str]:
    # --noproxy: a proxy set on the VM must not carry lab-network requests.
    return [
        "curl",
        "-sS",
        "--noproxy",
        "*",
        "--max-time",
        str(max_time),
        "-o",
        "-",
        "-w",
        CURL_WRITE_OUT,
        url,
    ]


def parse_curl_stdout(stdout: str) -> tuple[bytes, int | None]:
    """Split curl's stdout into the body and the HTTP status (None when no response)."""
    index = stdout.rfind("\n" + _STATUS_MARK)
    if index < 0:
        return stdout.encode("utf-8", "surrogateescape"), None
    body = stdout[:index]
    code = stdout[index + 1 + len(_STATUS_MARK) :].strip()
    status = int(code) if code.isdigit() and int(code) > 0 else None
    return body.encode("utf-8", "surrogateescape"), status


def is_welcome_page(body: bytes) -> bool:
    return all(mark in body for mark in _WELCOME_MARKS)


def http_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def node_prep_path(node: str) -> str:
    """Where the node-prep probe's output of one VM (by machine name) is kept."""
    return f"{NODE_PREP_DIR}/{_slug(node)}.txt"


def curl_record_path(check: str, source: str, target: str) -> str:
    return f"{CURL}/{check}/{source}__{_slug(target)}.json"


def curl_record(
    check: str,
    source: str,
    target: str,
    url: str,
    rc: int | None,
    stdout: str,
    stderr: str = "",
    error: str = "",
) -> dict[str, Any]:
    """The record of one request, derived from curl's exit code and raw stdout."""
    body, status = parse_curl_stdout(stdout)
    return {
        "check": check,
        "from": source,
        "target": target,
        "url": url,
        "rc": rc,
        "http_status": status,
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body_bytes": len(body),
        "welcome_page": is_welcome_page(body),
        "stdout": curl_record_path(check, source, target).removesuffix(".json") + ".out",
        "error": error or _tail(stderr),
    }


# --- reading ----------------------------------------------------------------------


# What each field of a commands.jsonl line may hold; anything else makes the file unreadable.
_COMMAND_FIELDS: dict[str, tuple[type, ...]] = {
    "seq": (int,),
    "check": (str,),
    "node": (str,),
    "rc": (int, type(None)),
    "error": (str, type(None)),
    "started": (str, type(None)),
    "finished": (str, type(None)),
    "duration": (int, float),
    "timeout": (int, float, type(None)),
    "saves": (str, type(None)),
    "stdout": (str, type(None)),
    "stderr": (str, type(None)),
}
# A verify run records a few hundred commands.
MAX_COMMANDS = 10000


class Evidence:
    """Read-only access to an evidence folder; every lookup names the file it wanted.

    The folder is data, never a path into the reader's machine: every name it gives
    (a file a command saved, a curl record's output) must resolve to a regular file
    inside the folder, of at most safeio.MAX_FILE_BYTES; anything else is unreadable
    evidence (see kubelab.safeio).
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._commands: list[dict[str, Any]] | BadEvidence | None = None
        # rel -> the text of a JSON file that passed safeio's checks. The checks (the
        # depth walk above all) cost more than parsing, and grading reads some files
        # once per check: nodes.json about eight times a student. Each call still gets
        # its own copy of the value, so no caller sees another's changes.
        self._accepted_json: dict[str, str] = {}

    def path(self, rel: str) -> Path:
        try:
            return safeio.confined(self.root, rel)
        except safeio.Unreadable as exc:
            raise BadEvidence(rel, str(exc)) from None

    def has(self, rel: str) -> bool:
        return safeio.is_confined_file(self.root, rel)

    def read_bytes(self, rel: str) -> bytes:
        try:
            return safeio.read_confined(self.root, rel)
        except FileNotFoundError:
            raise self.missing(rel) from None
        except safeio.Unreadable as exc:
            raise BadEvidence(rel, str(exc)) from None

    def text(self, rel: str) -> str:
        return self.read_bytes(rel).decode("utf-8", errors="surrogateescape")

    def json(self, rel: str) -> Any:
        accepted = self._accepted_json.get(rel)
        if accepted is not None:
            return safeio.parse_accepted_json(accepted)
        data = self.read_bytes(rel)
        try:
            value = safeio.parse_json(data)
        except safeio.Unreadable as exc:
            raise BadEvidence(rel, str(exc)) from None
        self._accepted_json[rel] = data.decode("utf-8")
        return value

    def listdir(self, rel: str) -> list[str]:
        try:
            folder = safeio.confined(self.root, rel)
        except safeio.Unreadable:
            return []
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir())

    def commands(self) -> list[dict[str, Any]]:
        """commands.jsonl's records; BadEvidence when any line is not one."""
        if self._commands is None:
            try:
                self._commands = self._read_commands()
            except BadEvidence as exc:
                self._commands = exc
        if isinstance(self._commands, BadEvidence):
            raise self._commands
        return self._commands

    def _read_commands(self) -> list[dict[str, Any]]:
        if not self.has(COMMANDS):
            return []
        records: list[dict[str, Any]] = []
        for number, line in enumerate(self.text(COMMANDS).splitlines(), start=1):
            if not line.strip():
                continue
            if len(records) >= MAX_COMMANDS:
                raise BadEvidence(COMMANDS, f"more than {MAX_COMMANDS} commands")
            try:
                record = safeio.parse_json(line)
            except safeio.Unreadable as exc:
                raise BadEvidence(COMMANDS, f"line {number}: {exc}") from None
            if not isinstance(record, dict):
                raise BadEvidence(COMMANDS, f"line {number}: not a JSON object")
            for key, allowed in _COMMAND_FIELDS.items():
                value = record.get(key)
                if key in record and (not isinstance(value, allowed) or isinstance(value, bool)):
                    raise BadEvidence(COMMANDS, f"line {number}: {key!r} is {type(value).__name__}")
            argv = record.get("argv", [])
            if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
                raise BadEvidence(COMMANDS, f"line {number}: 'argv' is not a list of words")
            records.append(record)
        return records

    def producer(self, rel: str) -> dict[str, Any] | None:
        """The command that was to write `rel`, if the folder says."""
        try:
            found = [c for c in self.commands() if c.get("saves") == rel]
        except BadEvidence:
            return None
        return found[-1] if found else None

    def missing(self, rel: str) -> MissingEvidence:
        command = self.producer(rel)
        if command is None:
            return MissingEvidence(rel)
        shown = safeio.shown(" ".join(command.get("argv", [])), 80)
        where = f"`{shown}` on {safeio.shown(command.get('node'), 40)}"
        if command.get("error"):
            return MissingEvidence(rel, f"{where}: {safeio.shown(command['error'])}")
        stderr = ""
        if command.get("stderr"):
            try:
                stderr = _tail(
                    safeio.read_confined(self.root, command["stderr"]).decode(errors="replace")
                )
            except (OSError, safeio.Unreadable):
                stderr = ""
        rc = command.get("rc")
        if rc == TIMEOUT_RC and command.get("timeout"):
            return MissingEvidence(rel, f"{where} timed out after {command['timeout']:g} s")
        return MissingEvidence(
            rel, f"{where} exited {rc}" + (f": {safeio.shown(stderr)}" if stderr else "")
        )

    def observed_at(self, rel: str) -> datetime | None:
        """When the command that wrote `rel` finished: the 'now' of that snapshot."""
        command = self.producer(rel)
        return parse_time(command.get("finished")) if command else None

    def duration(self, check: str) -> float:
        """Time the live run spent collecting for a check, from commands.jsonl."""
        total = 0.0
        try:
            commands = self.commands()
        except BadEvidence:
            return 0.0
        for command in commands:
            if command.get("check") == check and isinstance(command.get("duration"), int | float):
                total += float(command["duration"])
        return round(total, 3)


def cluster_identity(evidence: Evidence) -> dict[str, Any]:
    """What says which cluster this is: the kube-system UID and each node's IDs.

    Only strings are taken (a value of another type counts as absent), so an edited
    file cannot put a structure where an ID belongs.
    """
    identity: dict[str, Any] = {"kube_system_uid": None, "nodes": []}
    with contextlib.suppress(MissingEvidence, BadEvidence):
        identity["kube_system_uid"] = _string_at(
            evidence.json(KUBE_SYSTEM_NAMESPACE), "metadata", "uid"
        )
    try:
        nodes = items(evidence.json(NODES), NODES)
    except (MissingEvidence, BadEvidence):
        nodes = []
    try:
        pods = items(evidence.json(PODS), PODS)
    except (MissingEvidence, BadEvidence):
        pods = []
    # Every pod's UID: the API server's own random value, so evidence copied from another
    # cluster carries that cluster's UIDs unless each one is rewritten everywhere it appears.
    identity["pod_uids"] = sorted(
        {uid for pod in pods[:MAX_POD_UIDS] if (uid := _string_at(pod, "metadata", "uid"))}
    )
    for node in nodes:
        identity["nodes"].append(
            {
                "name": _string_at(node, "metadata", "name"),
                "machine_id": _string_at(node, "status", "nodeInfo", "machineID"),
                "boot_id": _string_at(node, "status", "nodeInfo", "bootID"),
                "system_uuid": _string_at(node, "status", "nodeInfo", "systemUUID"),
            }
        )
    return identity


MAX_POD_UIDS = 2000


def _string_at(doc: Any, *keys: str) -> str | None:
    for key in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return safeio.shown(doc, 100) if isinstance(doc, str) else None


# --- writing ----------------------------------------------------------------------


class EvidenceWriter:
    """Writes a new evidence folder; refuses one that already holds files."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        if self.root.exists() and any(self.root.iterdir()):
            raise KubelabError(
                f"evidence folder {self.root} is not empty",
                hint="give --evidence-out a new folder, or remove the old evidence first",
            )
        # 0700: evidence names the cluster's nodes, addresses and IDs; only its owner reads it.
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._seq = 0

    def write_text(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", errors="surrogateescape")

    def write_json(self, rel: str, data: Any) -> None:
        self.write_text(rel, json.dumps(data, indent=2) + "\n")

    def record(
        self,
        *,
        check: str,
        node: str,
        argv: Sequence[str],
        rc: int | None,
        stdout: str,
        stderr: str,
        error: str,
        started: str,
        finished: str,
        duration: float,
        saves: str | None = None,
        keep_on_failure: bool = False,
        timeout: float | None = None,
        phase: str | None = None,
        stdin: str | None = None,
    ) -> dict[str, Any]:
        """Save one command's output and append its line to commands.jsonl.

        `saves` is the evidence file the stdout belongs in. It is written only
        when the command succeeded (so a failure leaves a gap the checks call "no
        evidence"), unless `keep_on_failure`: a failed curl is evidence too.
        `stdin` is the evidence file the command was fed, if any (the manifest that
        `kubectl apply -f -` read).
        """
        self._seq += 1
        stem = f"{RAW}/{self._seq:03d}-{_slug(saves or ' '.join(argv[:4]))}"
        stdout_rel: str | None = None
        if saves and ((rc == 0 and not error) or keep_on_failure):
            stdout_rel = saves
        elif stdout:
            stdout_rel = f"{stem}.stdout"
        if stdout_rel:
            self.write_text(stdout_rel, stdout)
        stderr_rel = f"{stem}.stderr" if stderr else None
        if stderr_rel:
            self.write_text(stderr_rel, stderr)
        line = {
            "seq": self._seq,
            "phase": phase,
            "check": check,
            "node": node,
            "argv": list(argv),
            "stdin": stdin,
            "rc": rc,
            "error": error or None,
            "started": started,
            "finished": finished,
            "duration": round(duration, 3),
            "timeout": timeout,
            "saves": saves,
            "stdout": stdout_rel,
            "stderr": stderr_rel,
        }
        with (self.root / COMMANDS).open("a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
        return line
