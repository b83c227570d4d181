"""Exercises under labs/exercises: listing, loading, validation, manuals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubelab import labs
from kubelab.config import catalog, load_config
from kubelab.errors import ConfigError, KubelabError
from kubelab.plan import make_plan
from kubelab.verify import CHECK_IDS

BUILD = [s["name"] for s in catalog()["stages"] if not s.get("optional")]
BUILDS: dict[str, list[str]] = catalog()["builds"]
FILES = sorted(labs.EXERCISES_DIR.glob("*.yaml"))


def test_list_exercises_gives_every_file_in_number_order() -> None:
    exercises = labs.list_exercises()
    assert [e.number for e in exercises] == sorted(int(p.stem) for p in FILES)
    assert len(exercises) >= 2
    for exercise in exercises:
        assert set(exercise.title) == set(labs.LANGUAGES)
        applied = exercise.start + exercise.solution
        assert any(applied == tuple(order[: len(applied)]) for order in BUILDS.values())


def test_exercise_1_is_node_preparation_from_bare_vms() -> None:
    exercise = labs.load_exercise(1)
    assert exercise.start == ()
    assert exercise.solution == (BUILD[0],) == ("prepare",)


def test_exercise_2_starts_prepared_and_solves_the_rest_of_the_build() -> None:
    exercise = labs.load_exercise("2")
    assert exercise.start == ("prepare",)
    assert exercise.start + exercise.solution == tuple(BUILD)
    # What manual 003 grades: a multi-node cluster with pods on master and nodes.
    assert {"api", "nodes", "nginx-rollout", "pod-ips"} <= set(exercise.checks)
    assert set(exercise.checks) <= set(CHECK_IDS)


@pytest.mark.parametrize("number", [0, 99, "x", "", None])
def test_unknown_exercise_names_the_valid_ones_in_one_line(number: Any) -> None:
    with pytest.raises(KubelabError) as caught:
        labs.load_exercise(number)
    text = str(caught.value)
    assert "\n" not in text
    assert f"no exercise {number}" in text
    assert "valid exercises: " + ", ".join(str(int(p.stem)) for p in FILES) in text


@pytest.mark.parametrize(
    "overrides",
    [{}, {"student_id": "2021001", "mirror.profile": "aliyun", "box.guest": "debian12"}],
)
@pytest.mark.parametrize("lang", labs.LANGUAGES)
def test_manuals_fill_every_placeholder_from_the_lab(overrides: dict[str, Any], lang: str) -> None:
    plan = make_plan(load_config(None, overrides), Path("/lab"))
    values = labs.manual_values(plan)
    for exercise in labs.list_exercises():
        text = exercise.manual_text(lang, values)
        assert "{{" not in text and "}}" not in text
        for node in plan.nodes:
            assert node.hostname in text
        if exercise.number == 6:  # the hard way's CoreDNS: the image and the Service's IP
            assert plan.spec.component_images["coredns"] in text
            assert f"clusterDNS: [{plan.kubernetes['dns_service_ip']}]" in text
        if exercise.number == 2:
            assert plan.master.ip in text
            assert plan.mirror["image_registry"] in text
            assert f"v{plan.kubernetes['version']}" in text


def test_an_unknown_placeholder_is_an_error() -> None:
    exercise = labs.load_exercise(1)
    broken = labs.Exercise(**{**exercise.__dict__, "manual": {"en": "see {{nonsense}}"}})
    with pytest.raises(KubelabError, match="nonsense"):
        broken.manual_text("en", {"nodes": "master"})


def _write_variant(tmp_path: Path, change: dict[str, Any], name: str = "2.yaml") -> None:
    data = yaml.safe_load((labs.EXERCISES_DIR / "2.yaml").read_text())
    data.update(change)
    (tmp_path / name).write_text(yaml.safe_dump(data, allow_unicode=True))


def test_every_problem_of_an_exercise_file_is_reported_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_variant(tmp_path, {"checks": ["telepathy"], "number": "2", "difficulty": "hard"})
    monkeypatch.setattr(labs, "EXERCISES_DIR", tmp_path)
    with pytest.raises(ConfigError) as caught:
        labs.load_exercise(2)
    problems = caught.value.problems
    assert len(problems) == 3, problems
    assert all(p.startswith(str(tmp_path / "2.yaml") + ": ") for p in problems)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"solution": ["repos", "no-such-stage"]}, "solution: must list stages"),
        ({"start": ["prepare", "repos"]}, "in both start and solution"),
        ({"start": [], "solution": BUILD[1:]}, "first stages of one build, in order"),
        ({"checks": ["nodes", "telepathy"]}, "checks: must be ids"),
        ({"title": {"en": "only English"}}, "title: needs non-empty text"),
        ({"number": 7}, "number is 7"),
        ({"difficulty": "hard"}, "difficulty: unknown key"),
    ],
)
def test_a_broken_exercise_file_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict[str, Any], problem: str
) -> None:
    _write_variant(tmp_path, change)
    monkeypatch.setattr(labs, "EXERCISES_DIR", tmp_path)
    with pytest.raises(KubelabError, match=problem):
        labs.load_exercise(2)
