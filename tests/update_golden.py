"""Rewrite the golden files: `python tests/update_golden.py` (wired as `invoke golden`).

The golden files are every file `render()` returns for each lab in GOLDEN_CASES,
rendered for the fixed folder GOLDEN_LAB_DIR so they are the same on every
machine. tests/test_render.py compares against them; after an intended change
to a template or the catalog, run this and review the diff before committing.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
if __name__ == "__main__":
    # Run as a script from a checkout: import the package without installing it.
    sys.path.insert(0, str(REPO_ROOT))

from kubelab.config import load_config  # noqa: E402
from kubelab.errors import KubelabError  # noqa: E402
from kubelab.plan import make_plan  # noqa: E402
from kubelab.render import render  # noqa: E402

GOLDEN_DIR = TESTS_DIR / "data" / "golden"
VALID_CONFIGS = TESTS_DIR / "data" / "configs" / "valid"
# The lab folder the golden labs are rendered for; it never has to exist.
GOLDEN_LAB_DIR = Path("/srv/kubelab/lab")
# golden case -> the valid config it renders (empty.yaml: every default).
GOLDEN_CASES = {"default": "empty.yaml", "custom": "custom.yaml"}


def render_case(case: str) -> dict[str, str]:
    config = load_config(VALID_CONFIGS / GOLDEN_CASES[case])
    return render(make_plan(config, GOLDEN_LAB_DIR))


def golden_files(case: str) -> dict[str, str]:
    """The golden files kept for a case, by relative path."""
    root = GOLDEN_DIR / case
    return {
        path.relative_to(root).as_posix(): path.read_text()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def write_case(case: str) -> list[str]:
    """Replace the golden folder of a case with a fresh render; return its paths."""
    files = render_case(case)  # render first: a failing render leaves the old files
    root = GOLDEN_DIR / case
    if root.exists():
        shutil.rmtree(root)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return sorted(files)


def main() -> int:
    for case in sorted(GOLDEN_CASES):
        before = golden_files(case) if (GOLDEN_DIR / case).is_dir() else {}
        try:
            paths = write_case(case)
        except KubelabError as exc:
            print(f"{case}: not updated: {exc}", file=sys.stderr)
            return 1
        after = golden_files(case)
        changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
        print(f"{case}: {len(paths)} files, {len(changed)} changed")
        for path in changed:
            state = "new" if path not in before else "gone" if path not in after else "changed"
            print(f"  {state}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
