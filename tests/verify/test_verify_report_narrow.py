"""verify's table at 80 columns, and the root cause first when the API server is down."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from kubelab.verify.checks import CheckResult, evaluate
from kubelab.verify.evidence import VERSION
from kubelab.verify.report import print_table, root_cause_first
from tests.verify.verify_captures import build_folder


def api_down(tmp_path: Path) -> list[CheckResult]:
    """A captured cluster's evidence with every kubectl answer missing but the nodes'."""
    folder = build_folder(tmp_path / "evidence")
    for path in folder.root.rglob("*.json"):
        if path.name not in ("meta.json",):
            path.unlink()
    (folder.root / VERSION).write_text("{}")
    return evaluate(folder.root, folder.expected)


def test_with_the_api_down_the_api_hint_comes_alone(tmp_path: Path) -> None:
    results = api_down(tmp_path)
    assert not results[0].passed and results[0].id == "api"
    shown = root_cause_first(results)
    later = [r for r in shown[1:] if not r.passed]
    assert later and all(r.detail.startswith("not checked: the API server") for r in later)
    assert [r.hint for r in shown if r.hint] == [results[0].hint]
    assert "crictl" in results[0].hint
    # the kubeconfig it names is the spec's (defaults.GUEST_PATHS), not a second copy
    assert (
        f"sudo cp -i {build_folder(tmp_path / 'again').expected.guest_paths['admin_kubeconfig']} "
        in (results[0].hint)
    )


def test_at_80_columns_detail_and_hint_go_under_the_row(tmp_path: Path) -> None:
    results = api_down(tmp_path)
    for width in (80, 160):
        console = Console(width=width, record=True, color_system=None)
        print_table(results, console)
        text = console.export_text()
        assert max(len(line) for line in text.splitlines()) <= width
        assert "hint: The API server did not answer" in text.replace("\n│", " ")
        assert ("time" in text.splitlines()[2]) == (width >= 100)
