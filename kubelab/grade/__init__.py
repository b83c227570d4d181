"""grade: score verify's evidence against a rubric, for one student or a whole class.

    rubric.py     labs/rubrics/<N>.yaml: items, points, bound checks, partial credit
    grading.py    grade_evidence(folder, student, rubric) -> StudentGrade: the one path
                  every flow takes (checks re-run over the evidence, items, flags)
    integrity.py  flags for the teacher: shared clusters, names, contradictions, age
    archive.py    make_handin(): the student's kubelab-ex<N>-<ID>.tar.gz; safe reading
    gradebook.py  grade_handins(): a folder of hand-ins -> gradebook.csv, grades.html,
                  feedback/, results/, gradescope/
    inventory.py  the live grader's inventory (hosts and key references per student)
    live.py       grade_inventory(): every cluster over SSH, concurrently, with deadlines
    html.py, gradescope.py   the page, the feedback files, Gradescope's results.json

Grading never believes a stored verdict or score: it reads the evidence.
"""

from __future__ import annotations

from kubelab.grade.archive import ArchiveError, make_handin, read_handin
from kubelab.grade.gradebook import ClassReport, grade_handins
from kubelab.grade.grading import StudentGrade, grade_evidence, score_table
from kubelab.grade.live import grade_inventory
from kubelab.grade.rubric import Rubric, load_rubric

__all__ = [
    "ArchiveError",
    "ClassReport",
    "Rubric",
    "StudentGrade",
    "grade_evidence",
    "grade_handins",
    "grade_inventory",
    "load_rubric",
    "make_handin",
    "read_handin",
    "score_table",
]
