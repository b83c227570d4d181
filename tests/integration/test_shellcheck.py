"""Every rendered provisioning script parses (`bash -n`) and passes real shellcheck.

The one shellcheck suite: the golden labs' scripts one by one (parametrized over
whatever they render, see conftest, so a new stage template is checked as soon as
the catalog lists it), every valid config's lab, each guest family with every
option and the hard way's build, and the stage tests' stub. shellcheck runs at
severity `style` (everything), with -x, in the folder the lab's scripts are written
to; a script text already checked in this run (by any xdist worker) is not checked
again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kubelab.config import catalog
from kubelab.plan import load_plan
from kubelab.render import render, write_lab
from tests.provision.harness import render_lab

VALID = Path(__file__).parents[1] / "data" / "configs" / "valid"
STAGE_STUB = Path(__file__).parents[1] / "provision" / "stubs" / "kubelab-stub"

pytestmark = pytest.mark.integration


class Shellcheck:
    """Real shellcheck, each distinct script text checked once per run: the labs below
    render the same stage scripts for many configs (about 690 scripts, 280 distinct).
    The findings are kept in a folder every xdist worker of the run shares, so a script
    one worker checked is not checked again by the other. One set of flags for every
    script: -x, bash, severity `style` (everything)."""

    FLAGS = ("-x", "--shell=bash", "--severity=style", "--format=gcc")

    def __init__(self, path: str, findings_dir: Path) -> None:
        self.path = path
        self.findings_dir = findings_dir  # one file per sha256 of a script: its findings
        findings_dir.mkdir(parents=True, exist_ok=True)

    def _known(self, digest: str) -> str | None:
        kept = self.findings_dir / digest
        return kept.read_text() if kept.is_file() else None

    def _keep(self, digest: str, findings: str) -> None:
        # Whole or not at all: the other worker may read it at any moment.
        partial = self.findings_dir / f".{digest}.{os.getpid()}"
        partial.write_text(findings)
        partial.replace(self.findings_dir / digest)

    def findings(self, folder: Path, scripts: list[str]) -> dict[str, str]:
        """script (relative to folder, where shellcheck runs) -> its findings, "" if none."""
        digests = {rel: hashlib.sha256((folder / rel).read_bytes()).hexdigest() for rel in scripts}
        found: dict[str, str] = {}  # digest -> findings, of this call and of the run
        for digest in set(digests.values()):
            known = self._known(digest)
            if known is not None:
                found[digest] = known
        new = {digest: rel for rel, digest in digests.items() if digest not in found}
        if new:
            todo = sorted(new.values())
            done = subprocess.run(
                [self.path, *self.FLAGS, *todo],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=300,
            )
            lines = done.stdout.splitlines()
            by_script = {
                rel: [line for line in lines if line.startswith(f"{rel}:")] for rel in todo
            }
            # rc 1 is "found something"; anything else, or a line no script owns, is
            # shellcheck itself failing, which must not pass for a clean script.
            attributed = sum(len(lines_of) for lines_of in by_script.values())
            assert done.returncode in (0, 1) and attributed == len(lines), (
                f"shellcheck rc {done.returncode}:\n{done.stdout}{done.stderr}"
            )
            for rel, lines_of in by_script.items():
                found[digests[rel]] = "".join(f"{line}\n" for line in lines_of)
                self._keep(digests[rel], found[digests[rel]])
        return {rel: found[digests[rel]] for rel in scripts}


@pytest.fixture(scope="session")  # once per xdist worker; its tests spread over them
def shellcheck(tmp_path_factory: pytest.TempPathFactory) -> Shellcheck:
    path = shutil.which("shellcheck")
    if path is None:
        pytest.skip("shellcheck is not installed (Debian: apt-get install shellcheck)")
    # Under xdist each worker's temporary folder is in the run's one; without, it is it.
    run_dir = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run_dir = run_dir.parent
    return Shellcheck(path, run_dir / "shellcheck-findings")


def _script(golden_lab_on_disk: Callable[[str], Path], case: str, rel: str | None) -> Path:
    folder = golden_lab_on_disk(case)  # raises here, in the test, if the lab does not render
    assert rel is not None
    return folder / rel


def test_script_parses(
    golden_lab_on_disk: Callable[[str], Path], rendered_script: tuple[str, str | None]
) -> None:
    script = _script(golden_lab_on_disk, *rendered_script)
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_script_passes_shellcheck(
    shellcheck: Shellcheck,
    golden_lab_on_disk: Callable[[str], Path],
    rendered_script: tuple[str, str | None],
) -> None:
    case, rel = rendered_script
    _script(golden_lab_on_disk, case, rel)
    assert rel is not None
    findings = shellcheck.findings(golden_lab_on_disk(case), [rel])[rel]
    assert findings == "", f"{case}/{rel}:\n{findings}"


def test_shellcheck_finds_a_planted_problem(
    shellcheck: Shellcheck, golden_lab_on_disk: Callable[[str], Path], tmp_path: Path
) -> None:
    # Proves the checks here can fail: an unquoted expansion added to a real script.
    folder = golden_lab_on_disk("default")
    original = sorted(folder.glob("scripts/*/*.sh"))[0]
    script = tmp_path / "planted.sh"
    script.write_text(original.read_text() + "\nfor f in $(ls /tmp); do echo $f; done\n")
    findings = shellcheck.findings(tmp_path, [script.name])[script.name]
    assert "SC2045" in findings or "SC2086" in findings


# Known findings in templates still being written: config stem -> reason. Strict:
# once the template is fixed the case passes and the entry must go.
# Configs whose rendered scripts have a known shellcheck finding: none today.
KNOWN_FINDINGS: dict[str, str] = {}


def _lab_cases() -> list[Any]:
    cases = [
        pytest.param(
            path,
            {},
            id=path.stem,
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_FINDINGS[path.stem])]
            if path.stem in KNOWN_FINDINGS
            else [],
        )
        for path in sorted(VALID.glob("*.yaml"))
    ]
    # mirror.local_repo must name a folder that exists, so it has no data file:
    # the default lab (yum) and the customised one (apt) with a local package folder.
    for path in (VALID / "empty.yaml", VALID / "custom.yaml"):
        cases.append(pytest.param(path, {"local_repo": True}, id=f"{path.stem}+local-repo"))
    return cases


@pytest.mark.parametrize(("config", "extra"), _lab_cases())
def test_every_valid_config_renders_clean_scripts(
    shellcheck: Shellcheck, config: Path, extra: dict[str, Any], tmp_path: Path
) -> None:
    # Every branch the templates take for some valid config (guest, runtime,
    # mirror profile, proxy mode, version), checked in one shellcheck per lab.
    overrides = {"mirror.local_repo": str(tmp_path)} if extra.get("local_repo") else None
    lab = tmp_path / "lab"
    plan = load_plan(config, overrides, repo_root=tmp_path, lab_dir=lab)
    write_lab(render(plan), lab)
    scripts = sorted(str(p.relative_to(lab)) for p in lab.glob("scripts/*/*.sh"))
    assert len(scripts) == sum(len(plan.stages_for(node)) for node in plan.nodes)
    if not scripts:
        return  # a lab that provisions nothing (provision.stages: [])
    for script in scripts:
        parsed = subprocess.run(["bash", "-n", script], cwd=lab, capture_output=True, text=True)
        assert parsed.returncode == 0, f"{script}: {parsed.stderr}"
    findings = shellcheck.findings(lab, scripts)
    assert not any(findings.values()), "".join(findings.values())


# Each guest family with every option its templates branch on, and the hard way's
# build (pki, etcd, flannel, the control plane and nodes from binaries).
LABS: dict[str, dict[str, Any]] = {
    "centos7-default": {},
    "centos7-everything": {
        "student_id": "2021001",
        "kubernetes.runtime": "docker",
        "kubernetes.proxy_mode": "ipvs",
        "kubernetes.firewall": "open-ports",
        "kubernetes.version": "1.32.9",
        "mirror.profile": "aliyun",
    },
    "debian12-default": {"box.guest": "debian12"},
    "debian12-everything": {
        "box.guest": "debian12",
        "student_id": "2021001",
        "kubernetes.runtime": "docker",
        "kubernetes.proxy_mode": "ipvs",
        "kubernetes.firewall": "open-ports",
        "mirror.profile": "custom",
    },
    "ubuntu2204-default": {"box.guest": "ubuntu2204"},
    "centos7-hardway": {
        "provision.stages": catalog()["builds"]["hardway"],
        "kubernetes.runtime": "docker",
        "mirror.profile": "aliyun",
    },
    "debian12-hardway": {
        "box.guest": "debian12",
        "provision.stages": catalog()["builds"]["hardway"],
    },
}


@pytest.mark.parametrize("lab", sorted(LABS))
@pytest.mark.parametrize("local_repo", [False, True], ids=["remote", "local-repo"])
def test_shellcheck_finds_nothing(
    shellcheck: Shellcheck, lab: str, local_repo: bool, tmp_path: Path
) -> None:
    overrides = dict(LABS[lab])
    if local_repo:
        overrides["mirror.local_repo"] = str(tmp_path)
    _, files = render_lab(overrides)
    scripts = []
    for rel, text in files.items():
        if rel.endswith(".sh"):
            path = tmp_path / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            scripts.append(rel)
    assert len(scripts) >= 12
    findings = shellcheck.findings(tmp_path, scripts)
    assert not any(findings.values()), "".join(findings.values())


def test_shellcheck_finds_nothing_in_the_test_stub(shellcheck: Shellcheck) -> None:
    result = subprocess.run(
        [shellcheck.path, "--severity=style", str(STAGE_STUB)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
