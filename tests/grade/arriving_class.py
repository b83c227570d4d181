"""A class whose hand-ins arrive the way an LMS and students deliver them.

Each student's evidence is written by verify's real collect() over a replay of a
cluster derived from the captures (handin_class / classroom), packed by
make_handin() as `invoke verify --exercise 2 --student ID` does; then the file is
delivered as it really arrives: an LMS prefix, a browser's " (1)" copy, an
upper-case extension, a .tgz, a re-zipped folder, a renamed copy of a classmate's
archive, another exercise's archive, an upload cut off, a late one, stray files.
The roster carries Chinese names and the LMS identifier columns.
"""

from __future__ import annotations

import json
import os
import tarfile
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kubelab.grade.archive import make_handin
from kubelab.verify import collect, evaluate
from tests.grade.classroom import Cluster, ReplayTransport, Variant, derive_cluster
from tests.grade.handin_class import IMAGE

# student -> (variant, roster name)
STUDENTS: dict[str, tuple[Variant, str]] = {
    "2021001": (Variant(), "张伟"),
    "2021002": (Variant(monitoring=True), "李娜"),
    "2021003": (Variant(not_ready=(1,)), "王芳"),
    "2021004": (Variant(named=False), "刘洋"),
    "2021005": (Variant(master_tainted=True), "陈静"),
    "2021006": (Variant(), "杨磊"),  # hands in 2021001's archive, renamed
    "2021007": (Variant(), "赵敏"),  # hands in exercise 1's archive only
    "2021008": (Variant(), "黄勇"),  # the upload is cut off
    "2021009": (Variant(pods_down=1), "周杰"),  # late
    "2021010": (Variant(), "吴霞"),  # never hands in
}

# How each file arrives (file name in the hand-in folder -> whose archive, and how).
LMS_NAME = "zhangwei_48227_1093377_kubelab-ex2-2021001.tar.gz"
BROWSER_FIRST = "kubelab-ex2-2021002.tar.gz"
BROWSER_COPY = "kubelab-ex2-2021002 (1).tar.gz"
UPPER = "KUBELAB-EX2-2021003.TAR.GZ"
TGZ = "kubelab-ex2-2021004.tgz"
ZIP = "kubelab-ex2-2021005.zip"
RENAMED_COPY = "yanglei_48227_1093390_kubelab-ex2-2021006.tar.gz"
MISFILED = "kubelab-ex1-2021007.tar.gz"
CUT_OFF = "kubelab-ex2-2021008.tar.gz"
LATE = "kubelab-ex2-2021009.tar.gz"
README = "README.txt"
NOT_OURS = "notes.zip"

# The due time: a day after the class is built; the late hand-in is two days after.
DUE_AFTER = timedelta(days=1)
LATE_BY = timedelta(days=2)


@dataclass
class ArrivingClass:
    handins: Path
    roster: Path
    due: datetime
    files: dict[str, Path] = field(default_factory=dict)


def _cluster(student: str) -> Cluster:
    return derive_cluster(student, sorted(STUDENTS).index(student) + 1, STUDENTS[student][0])


def _evidence(cluster: Cluster, out: Path, exercise: int = 2) -> Path:
    student = cluster.student
    return collect(
        ReplayTransport(cluster),
        cluster.expected(),
        out,
        image=IMAGE,
        student_id=student,
        exercise=exercise,
        lab_config={"name": "kubelab", "student_id": student},
    )


def _handin(student: str, root: Path, exercise: int = 2) -> Path:
    cluster = _cluster(student)
    evidence = _evidence(cluster, root / "runs" / f"{student}-ex{exercise}", exercise)
    if student == "2021009":
        # Finished after the due time: meta.json records when verify ran.
        meta = json.loads((evidence / "meta.json").read_text())
        later = (datetime.now(UTC) + LATE_BY).isoformat(timespec="seconds")
        meta["finished"] = later
        (evidence / "meta.json").write_text(json.dumps(meta, indent=2))
    results = evaluate(evidence, cluster.expected())
    return make_handin(evidence, results, student, exercise, root / "made" / student)


def _rezip(tarball: Path, target: Path) -> None:
    """The student unpacked the archive and zipped the folder again."""
    with tarfile.open(tarball, "r:gz") as tar, zipfile.ZipFile(target, "w") as out:
        for member in tar:
            if member.isdir():
                out.writestr(member.name + "/", b"")
            else:
                out.writestr(member.name, tar.extractfile(member).read())  # type: ignore[union-attr]


def build_arriving_class(root: Path) -> ArrivingClass:
    handins = root / "handins"
    (handins / "lms-download").mkdir(parents=True)
    made = ArrivingClass(handins, root / "roster.csv", datetime.now(UTC) + DUE_AFTER)
    archive = {s: _handin(s, root) for s in STUDENTS if s not in ("2021006", "2021007", "2021010")}

    def deliver(name: str, data: bytes, sub: str = "") -> Path:
        path = handins / sub / name
        path.write_bytes(data)
        made.files[name] = path
        return path

    deliver(LMS_NAME, archive["2021001"].read_bytes(), "lms-download")
    deliver(BROWSER_FIRST, archive["2021002"].read_bytes())
    deliver(BROWSER_COPY, archive["2021002"].read_bytes())
    deliver(UPPER, archive["2021003"].read_bytes())
    deliver(TGZ, archive["2021004"].read_bytes())
    _rezip(archive["2021005"], handins / ZIP)
    made.files[ZIP] = handins / ZIP
    deliver(RENAMED_COPY, archive["2021001"].read_bytes(), "lms-download")
    deliver(MISFILED, _handin("2021007", root, exercise=1).read_bytes())
    whole = archive["2021008"].read_bytes()
    deliver(CUT_OFF, whole[: len(whole) // 3])
    late = deliver(LATE, archive["2021009"].read_bytes())
    when = (datetime.now(UTC) + LATE_BY).timestamp()
    os.utime(late, (when, when))
    deliver(README, b"Hand-ins for lab 2, downloaded from the LMS.\n")
    with zipfile.ZipFile(handins / NOT_OURS, "w") as notes:
        notes.writestr("notes/lab2.txt", "kubeadm init, then join\n")
    made.files[NOT_OURS] = handins / NOT_OURS

    lines = ["student_id,name,email,canvas_id,section"]
    for number, (student, (_, name)) in enumerate(STUDENTS.items(), start=1):
        lines.append(f"{student},{name},{student}@uni.example.edu,{9000 + number},Lab A")
    made.roster.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return made
