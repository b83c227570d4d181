"""Intake: hand-ins as they really arrive, every file accounted for, copies named both ways.

The class (arriving_class.py) arrives with LMS prefixes, a browser copy, an
upper-case extension, a .tgz, a .zip, a renamed copy of a classmate's archive,
another exercise's archive, an upload cut off, a late one and stray files. Each
student's row is written down here.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kubelab.grade.archive import DEFAULT_LIMITS
from kubelab.grade.gradebook import ClassReport, grade_handins, late_flags
from kubelab.grade.intake import Arrival, identify, parse_loose_name
from tests.grade import arriving_class as arriving
from tests.grade.arriving_class import ArrivingClass

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Row:
    status: str
    total: str
    flags: frozenset[str] = frozenset()
    error: str = ""  # a part of the error the student is told


EXPECTED = {
    # LMS prefix; its archive was also handed in, renamed, by 2021006.
    "2021001": Row("graded", "100", frozenset({"shared-cluster", "copy"})),
    # two browser downloads of one archive: one row, extra credit (monitoring UI) earned
    "2021002": Row("graded", "110"),
    # KUBELAB-EX2-2021003.TAR.GZ, one node NotReady: 15 of 30 for cluster-ready
    "2021003": Row("graded", "85"),
    # .tgz; node names without the student ID: flagged, no points lost (rubric 2 leaves
    # the hostnames to exercise 1, whose solution is exercise 2's start)
    "2021004": Row("graded", "100", frozenset({"hostname"})),
    # re-zipped; master left tainted: verify's nginx on 2 of 3 nodes, the student's own
    # pods not on the master (rubric 2's parts)
    "2021005": Row("graded", "91.67"),
    # 2021001's archive under 2021006's name: graded as 2021006's, flagged as a copy
    "2021006": Row(
        "graded",
        "100",
        frozenset({"name-mismatch", "student-mismatch", "hostname", "shared-cluster", "copy"}),
    ),
    "2021007": Row(
        "error",
        "",
        error=f"no hand-in for exercise 2; {arriving.MISFILED} is exercise 1's: upload your "
        "exercise 2 archive",
    ),
    "2021008": Row("error", "", error=f"your upload was cut off: upload {arriving.CUT_OFF} again"),
    # one pod IP does not answer (network 10 x 2/3, own-pod-ips 15 x 1/2); finished two
    # days after it was due
    "2021009": Row("graded", "89.17", frozenset({"late"})),
    "2021010": Row("error", "", error="no hand-in found"),
}

OUTCOMES = {
    arriving.LMS_NAME: ("graded", "2021001"),
    arriving.UPPER: ("graded", "2021003"),
    arriving.TGZ: ("graded", "2021004"),
    arriving.ZIP: ("graded", "2021005"),
    arriving.RENAMED_COPY: ("graded", "2021006"),
    arriving.MISFILED: ("other-exercise", "2021007"),
    arriving.CUT_OFF: ("error", "2021008"),
    arriving.LATE: ("graded", "2021009"),
    arriving.README: ("not-a-hand-in", ""),
    arriving.NOT_OURS: ("not-a-hand-in", ""),
}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def flag_kinds(row: dict[str, str]) -> frozenset[str]:
    return frozenset(part.split(":", 1)[0] for part in row["flags"].split("; ") if part)


def test_every_student_has_the_row_written_down(arriving_graded: ClassReport) -> None:
    rows = read_csv(arriving_graded.out_dir / "gradebook.csv")
    assert [r["student"] for r in rows] == sorted(EXPECTED)  # one row each, none doubled
    for row in rows:
        want = EXPECTED[row["student"]]
        got = Row(row["status"], row["total"], flag_kinds(row), row["error"])
        assert (got.status, got.total, got.flags) == (want.status, want.total, want.flags), row
        assert want.error in got.error, row
        assert row["name"] == arriving.STUDENTS[row["student"]][1]  # 张伟 ... from the roster


def test_every_file_is_accounted_for(
    arriving_graded: ClassReport, arriving_class: ArrivingClass
) -> None:
    files = sorted(
        str(p.relative_to(arriving_class.handins)) for p in arriving_class.files.values()
    )
    ledger = read_csv(arriving_graded.out_dir / "intake.csv")
    assert sorted(r["file"] for r in ledger) == files
    by_name = {Path(r["file"]).name: r for r in ledger}
    for name, (outcome, student) in OUTCOMES.items():
        assert (by_name[name]["outcome"], by_name[name]["student"]) == (outcome, student), name
    # The browser's second download is the same archive: one graded, one said to be it.
    copies = sorted(by_name[n]["outcome"] for n in (arriving.BROWSER_FIRST, arriving.BROWSER_COPY))
    assert copies == ["graded", "superseded"]
    superseded = next(
        by_name[n]
        for n in (arriving.BROWSER_FIRST, arriving.BROWSER_COPY)
        if by_name[n]["outcome"] == "superseded"
    )
    assert superseded["student"] == "2021002" and "the same hand-in as" in superseded["detail"]
    assert "cut off" in by_name[arriving.CUT_OFF]["detail"]


def test_copies_name_each_other(arriving_graded: ClassReport) -> None:
    rows = {r["student"]: r for r in read_csv(arriving_graded.out_dir / "gradebook.csv")}
    assert "copy group with 2021006" in rows["2021001"]["flags"]
    assert "copy group with 2021001" in rows["2021006"]["flags"]
    assert "named for 2021006, its contents are 2021001's" in rows["2021006"]["flags"]
    assert [(g.students, g.reasons) for g in arriving_graded.groups] == [
        (("2021001", "2021006"), ("same cluster", "same evidence"))
    ]


def test_late_shows_both_times(arriving_graded: ClassReport) -> None:
    late = next(g for g in arriving_graded.grades if g.student == "2021009")
    (flag,) = [f for f in late.flags if f.kind == "late"]
    for part in ("evidence finished 20", "archive made 20", "file time 20"):
        assert part in flag.detail
    on_time = [g for g in arriving_graded.grades if g.graded and g.student != "2021009"]
    assert not any(f.kind == "late" for g in on_time for f in g.flags)


def test_late_by_the_archive_not_by_a_download_time(tmp_path: Path) -> None:
    due = datetime(2025, 3, 1, 23, 59, tzinfo=UTC)
    downloaded = (due + timedelta(days=3)).timestamp()  # the teacher downloaded late
    on_time = Arrival(tmp_path / "a.tar.gz", "a.tar.gz", 1, downloaded)
    on_time.meta = {"finished": "2025-03-01T20:00:00+00:00"}
    on_time.report = {"created": "2025-03-01T20:01:00+00:00"}
    assert late_flags(on_time, due) == []
    packed_late = Arrival(tmp_path / "b.tar.gz", "b.tar.gz", 1, downloaded)
    packed_late.meta = {"finished": "2025-03-01T20:00:00+00:00"}
    packed_late.report = {"created": "2025-03-02T09:00:00+00:00"}
    (flag,) = late_flags(packed_late, due)
    assert "archive made 2025-03-02T09:00:00+00:00" in flag.detail
    no_report = Arrival(tmp_path / "c.tar.gz", "c.tar.gz", 1, downloaded)
    assert [f.kind for f in late_flags(no_report, due)] == ["late"]  # only the file's time


def test_the_summary_names_students_and_misfiled_files(arriving_graded: ClassReport) -> None:
    lines = arriving_graded.summary().splitlines()
    assert lines[0].startswith("10 students: 7 graded, 3 not graded (errors), 4 flagged")
    named = {
        line.split()[1]: line for line in lines[1:] if line.startswith(("  error", "  flagged"))
    }
    assert set(named) == {s for s, r in EXPECTED.items() if r.status == "error" or r.flags}
    assert "(黄勇)" in named["2021008"] and "upload" in named["2021008"]
    assert any(arriving.MISFILED in line and "exercise 1" in line for line in lines)
    assert any(line.startswith("  not a hand-in") and arriving.README in line for line in lines)
    assert any("copy group: 2021001, 2021006" in line for line in lines)


# --- course logistics: adjustments, one student re-graded, the task itself ----------


def test_adjustments_are_merged_into_every_regrade(
    arriving_class: ArrivingClass, tmp_path: Path
) -> None:
    out = tmp_path / "grades"
    out.mkdir()
    (out / "adjustments.csv").write_text(
        "student,points,reason\n"
        "2021003,5,node1 was NotReady because of the lab's power cut\n"
        "2021003,-2,handed in a day late, by agreement\n"
        '2021008,10,"upload broke, checked by hand"\n',
        encoding="utf-8",
    )
    for _ in range(2):  # a re-grade applies them again, never twice
        report = grade_handins(arriving_class.handins, 2, out, roster=arriving_class.roster)
        rows = {r["student"]: r for r in read_csv(out / "gradebook.csv")}
        assert (rows["2021003"]["adjustment"], rows["2021003"]["total"]) == ("3", "88")
        # An error row lists the adjustment; its total stays blank for the teacher.
        assert (rows["2021008"]["adjustment"], rows["2021008"]["total"]) == ("10", "")
        assert rows["2021001"]["adjustment"] == "" and rows["2021001"]["total"] == "100"
    grade = next(g for g in report.grades if g.student == "2021008")
    assert grade.adjustments == [{"points": 10.0, "reason": "upload broke, checked by hand"}]
    feedback = (out / "feedback" / "2021003.md").read_text(encoding="utf-8")
    assert "**Score: 88 / 100**" in feedback
    assert "| Adjustment by your teacher | -2 | handed in a day late, by agreement |" in feedback


def test_a_bad_adjustments_file_is_refused_whole(
    arriving_class: ArrivingClass, tmp_path: Path
) -> None:
    from kubelab.errors import ConfigError

    (tmp_path / "adjustments.csv").write_text("2021003,five,typo\n2021004\n")
    with pytest.raises(ConfigError) as caught:
        grade_handins(arriving_class.handins, 2, tmp_path, roster=arriving_class.roster)
    assert len(caught.value.problems) == 2
    assert not (tmp_path / "gradebook.csv").exists()


def test_student_regrades_only_that_student(arriving_class: ArrivingClass, tmp_path: Path) -> None:
    out = tmp_path / "grades"
    grade_handins(arriving_class.handins, 2, out, roster=arriving_class.roster)
    # Mark two stored results: only the one re-graded loses its mark.
    for student in ("2021003", "2021004"):
        path = out / "results" / f"{student}.json"
        data = json.loads(path.read_text())
        data["duration"] = -1.0
        path.write_text(json.dumps(data))
    report = grade_handins(
        arriving_class.handins, 2, out, roster=arriving_class.roster, student="2021003"
    )
    durations = {g.student: g.duration for g in report.grades}
    assert durations["2021003"] >= 0 and durations["2021004"] == -1.0
    assert [r["student"] for r in read_csv(out / "gradebook.csv")] == sorted(EXPECTED)


def test_the_grade_task_prints_one_line_per_student(
    arriving_class: ArrivingClass, tmp_path: Path
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "invoke",
            "grade",
            "--handins",
            str(arriving_class.handins),
            "--roster",
            str(arriving_class.roster),
            "--due",
            arriving_class.due.isoformat(),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("10 students: 7 graded, 3 not graded (errors), 4 flagged")
    assert any(line.startswith("  error   2021008 (黄勇): ") for line in lines)
    assert any(line.startswith("  flagged 2021009 (周杰): late") for line in lines)
    assert (tmp_path / "out" / "moodle-grades.csv").is_file()


# --- single files, as students really re-pack them --------------------------------


def _identify(path: Path, tmp_path: Path) -> Arrival:
    return identify(path, path.parent, tmp_path / "unpacked", DEFAULT_LIMITS)


def test_a_zip_made_by_macos_finder_is_read(arriving_class: ArrivingClass, tmp_path: Path) -> None:
    made = tmp_path / "kubelab-ex2-2021005.zip"
    with (
        zipfile.ZipFile(arriving_class.files[arriving.ZIP]) as source,
        zipfile.ZipFile(made, "w") as out,
    ):
        for info in source.infolist():
            out.writestr(info, source.read(info))
            folder, _, leaf = info.filename.rpartition("/")
            if leaf:  # Finder's AppleDouble twin of every file, under __MACOSX/
                out.writestr(f"__MACOSX/{folder}/._{leaf}", b"\0\5\26\7")
        out.writestr("kubelab-ex2-2021005/.DS_Store", b"\0\0\0\1Bud1")
    arrival = _identify(made, tmp_path)
    assert arrival.readable, arrival.problem
    assert (arrival.content_student, arrival.content_exercise) == ("2021005", 2)


def test_a_tar_a_browser_ungzipped_is_read(arriving_class: ArrivingClass, tmp_path: Path) -> None:
    made = tmp_path / "kubelab-ex2-2021003.tar"
    made.write_bytes(gzip.decompress(arriving_class.files[arriving.UPPER].read_bytes()))
    arrival = _identify(made, tmp_path)
    assert arrival.readable, arrival.problem
    assert (arrival.name_student, arrival.content_student) == ("2021003", "2021003")


def test_a_zip_holding_a_link_is_refused(tmp_path: Path) -> None:
    made = tmp_path / "kubelab-ex2-2021005.zip"
    with zipfile.ZipFile(made, "w") as out:
        link = zipfile.ZipInfo("kubelab-ex2-2021005/evidence/nodes.json")
        link.external_attr = 0o120777 << 16
        out.writestr(link, "/etc/shadow")
    arrival = _identify(made, tmp_path)
    assert not arrival.readable and arrival.damaged
    assert "not a plain file" in arrival.problem
    assert not list((tmp_path / "unpacked").rglob("nodes.json"))


def test_a_tar_bomb_stops_at_its_headers(tmp_path: Path) -> None:
    made = tmp_path / "kubelab-ex2-2021005.tar.gz"
    info = tarfile.TarInfo("kubelab-ex2-2021005/evidence/pods.json")
    info.size = 10 * DEFAULT_LIMITS.file_bytes  # a header that claims more than the limit
    made.write_bytes(gzip.compress(info.tobuf() + bytes(64 * 1024)))
    arrival = _identify(made, tmp_path)
    # Stopped by the header walk (archive.check_bounds), before any data is read.
    assert not arrival.readable and "bytes (limit" in arrival.problem


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("lisi_48227_1093377_kubelab-ex2-21370027.tar.gz", (2, "21370027")),
        ("kubelab-ex2-21370031 (1).tar.gz", (2, "21370031")),
        ("kubelab-ex2-21370031(2).tgz", (2, "21370031")),
        ("KUBELAB-EX2-A-17.TAR.GZ", (2, "A-17")),
        ("kubelab-ex12-x.zip", (12, "x")),
        ("kubelab-ex2-2021003.tar", (2, "2021003")),
        ("kubelab-ex2-.tar.gz", None),
        ("kubelab-ex2-21370031.tar.gz.part", None),
        ("report.json", None),
    ],
)
def test_names_as_they_arrive(name: str, parsed: tuple[int, str] | None) -> None:
    assert parse_loose_name(name) == parsed


def test_a_newer_broken_upload_is_said(arriving_class: ArrivingClass, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    good = folder / "kubelab-ex2-2021003.tar.gz"
    good.write_bytes(arriving_class.files[arriving.UPPER].read_bytes())
    broken = folder / "kubelab-ex2-2021003 (1).tar.gz"
    broken.write_bytes(good.read_bytes()[:2000])
    os.utime(good, (1_700_000_000, 1_700_000_000))
    report = grade_handins(folder, 2, tmp_path / "out")
    (grade,) = report.grades
    assert grade.graded and grade.total == 85
    (flag,) = [f for f in grade.flags if f.kind == "duplicate"]
    assert f"the newer {broken.name} cannot be read" in flag.detail
    ledger = {r["file"]: r["outcome"] for r in read_csv(tmp_path / "out" / "intake.csv")}
    assert ledger == {good.name: "graded", broken.name: "superseded"}


def test_outputs_inside_the_handin_folder_are_not_handins(
    arriving_class: ArrivingClass, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / arriving.TGZ).write_bytes(arriving_class.files[arriving.TGZ].read_bytes())
    for _ in range(2):  # the second run sees the first run's outputs in the folder
        report = grade_handins(folder, 2, folder / "grades")
    assert report.intake is not None
    assert [a.rel for a in report.intake.arrivals] == [arriving.TGZ]


def test_advice_names_the_file_as_the_student_knows_it(
    arriving_class: ArrivingClass, tmp_path: Path
) -> None:
    made = tmp_path / "lisi_48227_1093377_kubelab-ex2-2021003.tar.gz"
    made.write_bytes(arriving_class.files[arriving.UPPER].read_bytes()[:3000])
    arrival = _identify(made, tmp_path)
    assert arrival.damaged and "cut off" in arrival.problem
    assert arrival.advice == "your upload was cut off: upload kubelab-ex2-2021003.tar.gz again"
