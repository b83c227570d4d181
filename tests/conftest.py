"""Shared fixtures: where things are, the config corpora, and rendered lab folders.

The labs kept as golden files (`update_golden.GOLDEN_CASES`) are rendered for a
fixed lab folder, so everything that depends on it (the libvirt prefix, serial
log paths) is the same on every machine. Tests that check every rendered script
parametrize over whatever those labs render, so new stage templates are covered
as soon as they exist.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.support.libvirt_netns import NetnsLibvirt
from tests.update_golden import GOLDEN_CASES, render_case

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
DATA_DIR = TESTS_DIR / "data"
CONFIGS_DIR = DATA_DIR / "configs"
# Shared captures and manuals live beside the repository, never copied into it.
SHARED_DIR = (Path(__file__).parents[1].parent / "shared").resolve()
RUBY_RECORDER = DATA_DIR / "ruby" / "vagrant_recorder.rb"

# Property tests: enough examples to find a quoting hole, few enough for CI.
settings.register_profile(
    "kubelab",
    max_examples=100,
    deadline=None,  # real ruby and bash run inside examples; their start-up time varies
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "kubelab"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED_DIR


@dataclass(frozen=True)
class RenderedLab:
    """One golden lab: its name, the config file it comes from, and what render() returned."""

    case: str
    config_path: Path
    files: dict[str, str]

    @property
    def scripts(self) -> dict[str, str]:
        return {path: text for path, text in self.files.items() if path.endswith(".sh")}


_RENDER_CACHE: dict[str, RenderedLab] = {}


def rendered_lab(case: str) -> RenderedLab:
    """Render a golden case once per session (rendering is pure, so sharing is safe)."""
    if case not in _RENDER_CACHE:
        _RENDER_CACHE[case] = RenderedLab(
            case=case,
            config_path=CONFIGS_DIR / "valid" / GOLDEN_CASES[case],
            files=render_case(case),
        )
    return _RENDER_CACHE[case]


@pytest.fixture(params=sorted(GOLDEN_CASES))
def rendered(request: pytest.FixtureRequest) -> RenderedLab:
    """The default lab and the customised one, rendered for GOLDEN_LAB_DIR."""
    return rendered_lab(request.param)


@pytest.fixture
def written_lab(rendered: RenderedLab, tmp_path: Path) -> Path:
    """The rendered files written to disk (for tools that read files: vagrant, shellcheck).

    Rendered for GOLDEN_LAB_DIR but written elsewhere: no tool here follows the
    serial log paths, and the golden bytes are what the tools check.
    """
    from kubelab.render import write_lab

    out = tmp_path / rendered.case
    write_lab(rendered.files, out)
    return out


@pytest.fixture(scope="session")
def golden_lab_on_disk(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """case -> a folder holding that golden lab's files, written once per session.

    For tests that only read the files; a test that changes them uses `written_lab`.
    """
    from kubelab.render import write_lab

    folders: dict[str, Path] = {}

    def folder(case: str) -> Path:
        if case not in folders:
            out = tmp_path_factory.mktemp(f"golden-{case}")
            write_lab(rendered_lab(case).files, out)
            folders[case] = out
        return folders[case]

    return folder


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Generator[None, None, None]:
    """Under pytest-xdist (`invoke test` runs `--dist loadgroup`), the tests that share a
    module or class fixture (64 sshd hosts, a synthetic class) stay on one worker, so the
    fixture is made once, as in one process; every other test goes to whichever worker
    is free, so one long module does not keep one worker busy after the others end.

    loadgroup sends together the tests whose ID ends in `@group`. pytest-xdist's worker
    appends it, from the xdist_group marks, in this same hook (so the marks go on before
    it runs), to `item._nodeid`; pytest 9 keeps a test's ID in `item._id` and ignores
    that, so no test had a group and every worker made the shared fixtures of the tests
    it got again (the hostile corpus's class run twice, about 2 minutes each under load).
    After it has run, the ID is suffixed here where it is still missing."""
    if not config.pluginmanager.hasplugin("xdist"):
        return (yield)
    shared_scopes = {"module", "class", "package"}
    grouped: list[tuple[pytest.Item, str]] = []
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        if any(defs[-1].scope in shared_scopes for defs in info.name2fixturedefs.values()):
            group = item.nodeid.split("::")[0]
            item.add_marker(pytest.mark.xdist_group(group))
            grouped.append((item, group))
    result = yield
    if getattr(config.option, "loadgroup", False):  # set in xdist's workers only
        for item, group in grouped:
            if not item.nodeid.endswith(f"@{group}"):
                from _pytest.nodeid import NodeId  # pytest 9's ID type

                item._id = NodeId.parse(f"{item.nodeid}@{group}")  # type: ignore[attr-defined]
    return result


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # `rendered_script` is (case, relative path) for every script of every golden lab.
    # A lab that fails to render yields one failing case that shows the error,
    # rather than breaking the collection of the whole suite.
    if "rendered_script" not in metafunc.fixturenames:
        return
    params = []
    for case in sorted(GOLDEN_CASES):
        try:
            scripts = sorted(rendered_lab(case).scripts)
        except Exception as exc:
            params.append(
                pytest.param((case, None), id=f"{case}-render-error-{type(exc).__name__}")
            )
            continue
        params += [pytest.param((case, path), id=f"{case}/{path}") for path in scripts]
    metafunc.parametrize("rendered_script", params)


class RubyEvaluator:
    """One long-lived ruby that evaluates Vagrantfiles (or expressions) with a
    recording stand-in for Vagrant, so hundreds of examples cost one ruby start."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            ["ruby", str(RUBY_RECORDER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def evaluate(self, source: str) -> dict[str, Any]:
        """Run `source`; return {"ok", "error", "records", "value"} (see the recorder)."""
        assert self._proc.stdin and self._proc.stdout
        data = source.encode()
        self._proc.stdin.write(b"%d\n" % len(data) + data)
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the ruby recorder exited")
        return json.loads(line)

    def close(self) -> None:
        if self._proc.stdin:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


@pytest.fixture(scope="session")
def ruby() -> Iterator[RubyEvaluator]:
    if shutil.which("ruby") is None:
        pytest.skip("ruby is not installed (Debian: apt-get install ruby; vagrant depends on it)")
    evaluator = RubyEvaluator()
    try:
        yield evaluator
    finally:
        evaluator.close()


# Real VMs: libvirtd in a network namespace of the test's own, and the offline
# Debian box (built once per session, cached by recipe digest). Both skip with the
# reason where they cannot run (not root, vagrant or libvirtd missing).
@pytest.fixture(scope="session")
def offline_box(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline Debian 12 test box file, the one every test that imports or boots a box
    takes (built once per recipe, then from the cache; skips where it cannot be built)."""
    from tests.support.libvirt_helpers import BOX_BUILD_SECONDS, build_offline_box

    started = time.monotonic()
    box = build_offline_box(tmp_path_factory.mktemp("box-build"))
    request.config.stash[BOX_BUILD_SECONDS] = time.monotonic() - started  # the e2e figures
    return box


@pytest.fixture
def netns_libvirt() -> Iterator[NetnsLibvirt]:
    from tests.support.libvirt_helpers import running_netns_libvirt

    with running_netns_libvirt() as lab:
        yield lab
