"""verify: prove a lab cluster works, and keep evidence a grader can re-check.

    collect(runner, expected, folder)     -> the evidence folder (evidence.py lists it)
    evaluate(folder, expected)            -> one CheckResult per check (checks.py)
    report.print_table / write_json / write_junit / exit_code

A live run (kubelab/verify/lab.py, live grading) collects, then evaluates the
same folder, so a live verdict and a grader's re-evaluation of a handed-in folder
take one code path.
"""

from __future__ import annotations

from kubelab.verify.checks import CHECK_IDS, CHECKS, CheckResult, evaluate
from kubelab.verify.collect import CommandRunner, collect, render_manifest
from kubelab.verify.evidence import Evidence, cluster_identity
from kubelab.verify.expect import Deadlines, Expected, ExpectedNode

__all__ = [
    "CHECKS",
    "CHECK_IDS",
    "CheckResult",
    "CommandRunner",
    "Deadlines",
    "Evidence",
    "Expected",
    "ExpectedNode",
    "cluster_identity",
    "collect",
    "evaluate",
    "render_manifest",
]
