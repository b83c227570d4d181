"""Gradescope: its autograder bundle, and the results.json it reads.

Gradescope runs an autograder of the course's own on every submission
(gradescope-autograders.readthedocs.io, "Autograder Specifications"): a zip with
setup.sh (run once when the image is built) and run_autograder (run per submission,
in /autograder, the student's files in /autograder/submission), which must write
/autograder/results/results.json. `write_bundle` makes that zip: kubelab's own
package and rubrics, and the two scripts (labs/templates/gradescope/). `autograde`
is what run_autograder calls: intake and grading exactly as `invoke grade` does.

results.json: a top-level score and output, and tests[] with name, number, score,
max_score, status, output, tags (no duplicates) and visibility; one test per rubric
item. Extra-credit items carry a max_score of 0, so their points add to the score
without raising the maximum, and are never marked failed. A submission that cannot
be graded scores 0 with the reason and what to do in the output. Integrity flags
stay out: they are for the teacher, and may name other students.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from kubelab import REPO_ROOT, __version__, atomicfile
from kubelab.grade.grading import StudentGrade, error_grade, fmt, grade_evidence
from kubelab.templating import environment


def results_json(grade: StudentGrade) -> dict[str, Any]:
    if not grade.graded:
        return {
            "score": 0.0,
            "output": f"Not graded: {grade.error}",
            "tests": [],
            "extra_data": {"status": grade.status},
        }
    tests = []
    for number, item in enumerate(grade.items, start=1):
        lines = [item.detail]
        if item.optional and not item.score:
            lines = [f"Extra credit, not earned: {item.detail}"]
        if item.hint:
            lines.append("")
            lines += [f"Hint: {h}" for h in item.hint.splitlines()]
        tests.append(
            {
                "name": item.title + (" (extra credit)" if item.optional else ""),
                "number": str(number),
                "score": item.score,
                "max_score": 0.0 if item.optional else item.points,
                # Extra credit not earned is no failure: it costs nothing.
                "status": "passed" if item.full or item.optional else "failed",
                "output": "\n".join(lines),
                "tags": list(dict.fromkeys([item.id, *item.checks])),
                "visibility": "visible",
            }
        )
    failed = [c.id for c in grade.failed_checks]
    output = f"Exercise {grade.exercise}: {fmt(grade.total)}/{fmt(grade.max_points)}"
    if failed:
        output += f"; failed checks: {', '.join(failed)}"
    return {
        "score": grade.total,
        "output": output,
        "tests": tests,
        "extra_data": {"student": grade.student, "exercise": grade.exercise},
    }


def write_results(grade: StudentGrade, out_dir: Path) -> Path:
    """out_dir/<student>/results.json, as Gradescope reads /autograder/results/results.json."""
    from kubelab.grade.gradebook import safe_file_name

    path = out_dir / safe_file_name(grade.student) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results_json(grade), indent=2) + "\n", encoding="utf-8")
    return path


# --- the autograder bundle ----------------------------------------------------------

TEMPLATES = REPO_ROOT / "labs" / "templates" / "gradescope"
# What grading imports, installed in Gradescope's image at the versions graded here.
REQUIREMENTS = ("jinja2", "pyyaml", "rich", "pydantic", "paramiko", "invoke")
# What grading reads at run time: the package, the rubrics, exercises and hints, and
# the catalog the exercises' builds are checked against.
BUNDLED = (
    "kubelab",
    "labs/rubrics",
    "labs/templates",
    "labs/hints.yaml",
    "labs/exercises",
    "labs/probes",
    "provision/catalog.yaml",
    "provision/mirrors.yaml",
)


def requirements() -> list[str]:
    pinned = []
    for name in REQUIREMENTS:
        try:
            pinned.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pinned.append(name)
    return pinned


def render_scripts(exercise: int) -> dict[str, str]:
    env = environment(TEMPLATES, trim=False)
    values = {"exercise": exercise, "version": __version__, "requirements": requirements()}
    return {
        name: env.get_template(f"{name}.j2").render(**values)
        for name in ("setup.sh", "run_autograder")
    }


def write_bundle(path: Path, exercise: int) -> Path:
    """autograder.zip: setup.sh and run_autograder at the root, kubelab beside them."""
    from kubelab.grade.rubric import load_rubric

    load_rubric(exercise)  # no bundle for an exercise without a rubric
    path.parent.mkdir(parents=True, exist_ok=True)
    # Never half a zip under the name.
    with (
        atomicfile.replacing(path, binary=True) as raw,
        zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf,
    ):
        for name, text in render_scripts(exercise).items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o100755 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text)
        for part in BUNDLED:
            source = REPO_ROOT / part
            files = [source] if source.is_file() else sorted(source.rglob("*"))
            for file in files:
                if file.is_file() and "__pycache__" not in file.parts:
                    zf.write(file, str(file.relative_to(REPO_ROOT)))
    return path


# --- what run_autograder runs -------------------------------------------------------


def autograde(root: Path, exercise: int) -> dict[str, Any]:
    """Grade root/submission as `invoke grade` would; write root/results/results.json."""
    from kubelab.grade import intake
    from kubelab.grade.archive import DEFAULT_LIMITS
    from kubelab.grade.rubric import load_rubric

    rubric = load_rubric(exercise)
    submission = root / "submission"
    with tempfile.TemporaryDirectory(prefix="kubelab-") as staging:
        taken = (
            intake.take_in(submission, exercise, Path(staging), DEFAULT_LIMITS)
            if submission.is_dir()
            else None
        )
        if taken and taken.chosen:
            student, arrival = sorted(taken.chosen.items(), key=lambda kv: kv[1].mtime)[-1]
            assert arrival.evidence_dir is not None
            stored = (arrival.report or {}).get("results")
            grade = grade_evidence(
                arrival.evidence_dir,
                student,
                rubric,
                stored_results=stored if isinstance(stored, list) else None,
                source=arrival.rel,
            )
        elif taken and taken.failed:
            student, arrival = sorted(taken.failed.items())[0]
            grade = error_grade(student, rubric, arrival.detail, source=arrival.rel)
        else:
            misfiled = taken.misfiled() if taken else []
            reason = (
                f"{misfiled[0].rel} is exercise {misfiled[0].exercise}'s hand-in, "
                f"not exercise {exercise}'s: submit your exercise {exercise} archive"
                if misfiled
                else f"no kubelab-ex{exercise}-<ID>.tar.gz in your submission: submit the "
                f"archive `invoke verify --exercise {exercise} --student ID` wrote"
            )
            grade = error_grade("", rubric, reason)
    results = results_json(grade)
    out = root / "results" / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="kubelab's Gradescope autograder")
    parser.add_argument("--root", type=Path, default=Path("/autograder"))
    parser.add_argument("--exercise", type=int, required=True)
    args = parser.parse_args(argv)
    results = autograde(args.root, args.exercise)
    print(results["output"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
