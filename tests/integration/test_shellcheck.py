"""Every rendered provisioning script parses (`bash -n`) and passes real shellcheck.

Parametrized over whatever the golden labs render (see conftest), so a new stage
template is checked as soon as the catalog lists it. shellcheck runs at severity
`style` (everything) with -x, on the files as written to a lab folder.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kubelab.plan import load_plan
from kubelab.render import render, write_lab

VALID = Path(__file__).parents[1] / "data" / "configs" / "valid"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shellcheck() -> str:
    path = shutil.which("shellcheck")
    if path is None:
        pytest.skip("shellcheck is not installed (Debian: apt-get install shellcheck)")
    return path


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
    shellcheck: str,
    golden_lab_on_disk: Callable[[str], Path],
    rendered_script: tuple[str, str | None],
) -> None:
    case, rel = rendered_script
    script = _script(golden_lab_on_disk, case, rel)
    result = subprocess.run(
        [shellcheck, "-x", "--severity=style", "--format=gcc", script.name],
        cwd=script.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{case}/{rel}:\n{result.stdout}{result.stderr}"
    assert result.stdout == ""


def test_shellcheck_finds_a_planted_problem(
    shellcheck: str, golden_lab_on_disk: Callable[[str], Path], tmp_path: Path
) -> None:
    # Proves the check above can fail: an unquoted expansion added to a real script.
    folder = golden_lab_on_disk("default")
    original = sorted(folder.glob("scripts/*/*.sh"))[0]
    script = tmp_path / "planted.sh"
    script.write_text(original.read_text() + "\nfor f in $(ls /tmp); do echo $f; done\n")
    result = subprocess.run(
        [shellcheck, "-x", "--severity=style", "--format=gcc", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "SC2045" in result.stdout or "SC2086" in result.stdout


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
    shellcheck: str, config: Path, extra: dict[str, Any], tmp_path: Path
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
    result = subprocess.run(
        [shellcheck, "-x", "--severity=style", "--format=gcc", *scripts],
        cwd=lab,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
