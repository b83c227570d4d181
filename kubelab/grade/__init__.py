"""grade: score verify's evidence against a rubric, for one student or a whole class.

    rubric.py     labs/rubrics/<N>.yaml: items, points, bound checks, partial credit
    grading.py    grade_evidence(folder, student, rubric) -> StudentGrade: the one path
                  every flow takes (checks re-run over the evidence, items, flags)
    integrity.py  flags for the teacher: shared clusters, names, contradictions, age
    archive.py    make_handin(): the student's kubelab-ex<N>-<ID>.tar.gz; safe reading
    intake.py     every file of a hand-in folder identified by content and name;
                  one hand-in chosen per student; copy groups
    roster.py     the roster: student_id,name and the LMS identifier columns
    gradebook.py  grade_handins(): a folder of hand-ins -> gradebook.csv, intake.csv,
                  grades.html, exports, feedback/, results/, gradescope/
    exports.py    Moodle's grade import CSV and Canvas's gradebook import CSV
    inventory.py  the live grader's inventory (hosts and key references per student),
                  validated as the config is; each student's LabSpec (lab_spec)
    live.py       grade_inventory(): every cluster over SSH, concurrently, with deadlines
    html.py       the page (pass rates, sortable table, cluster pictures), feedback files
    gradescope.py Gradescope's autograder bundle and results.json

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
