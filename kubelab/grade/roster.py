"""The class roster: `student_id,name,...` (UTF-8), the one place names and LMS IDs come from.

The first column is the student ID (the one in the hand-in's name). A header row
names the rest; columns kubelab knows:

    name                 shown on the page (any script: 张伟 is fine)
    email, username      Moodle's user identifiers (grade import "Map from")
    canvas_id            Canvas's numeric user ID ("ID" in a gradebook export)
    sis_user_id, sis_login_id, section   Canvas's other identifier columns

Other columns are kept and ignored. A roster of bare IDs, one per line, works too.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from kubelab.errors import KubelabError

ID_HEADERS = ("student_id", "student", "id", "student id", "学号")


@dataclass(frozen=True)
class Roster:
    students: tuple[str, ...]  # IDs in roster order
    columns: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> column -> value

    def name(self, student: str) -> str:
        return self.value(student, "name")

    def value(self, student: str, column: str) -> str:
        return (self.columns.get(student) or {}).get(column, "")

    def has(self, column: str) -> bool:
        return any(column in row and row[column] for row in self.columns.values())


EMPTY = Roster(())


def load_roster(path: Path | str | None) -> Roster:
    """Read a roster CSV (UTF-8, a BOM is fine); '#' starts a comment line."""
    if path is None:
        return EMPTY
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise KubelabError(f"cannot read roster {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise KubelabError(
            f"roster {path} is not UTF-8",
            hint="save it as 'CSV UTF-8' (Excel) or convert it: iconv -f GBK -t UTF-8",
        ) from None
    rows = [
        [cell.strip() for cell in row]
        for row in csv.reader(text.splitlines())
        if row and row[0].strip() and not row[0].lstrip().startswith("#")
    ]
    header = ["student_id"]
    if rows and rows[0][0].lower() in ID_HEADERS:
        header = ["student_id", *(h.lower().replace(" ", "_") for h in rows[0][1:])]
        rows = rows[1:]
    students: list[str] = []
    columns: dict[str, dict[str, str]] = {}
    for row in rows:
        student = row[0]
        if student in columns:
            continue
        students.append(student)
        columns[student] = {h: v for h, v in zip(header[1:], row[1:], strict=False) if h}
    return Roster(tuple(students), columns)
