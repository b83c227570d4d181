"""Each step the course manuals teach maps to the stage that does it.

tests/data/provision/manual_steps.yaml lists them: a quote that occurs in the
seed file, the stage, and a marker that occurs in that stage's script rendered
for the step's config; a step done differently on purpose says why.
"""

from __future__ import annotations

from collections import Counter
from functools import cache
from typing import Any

import pytest
import yaml

from kubelab.config import catalog
from tests.provision.harness import DATA, REPO_ROOT, render_lab, script_for

SEEDS_DIR = REPO_ROOT.parent / "shared" / "seeds"
STEPS: list[dict[str, Any]] = yaml.safe_load((DATA / "manual_steps.yaml").read_text())["steps"]
DEFAULT_STAGES = [s["name"] for s in catalog()["stages"] if not s.get("optional")]
# Every stage of a build an exercise follows (the default one and the hard way).
BUILD_STAGES = sorted({name for order in catalog()["builds"].values() for name in order})


def seed_text(seed: str) -> str:
    matches = sorted(SEEDS_DIR.glob(f"{seed}_*.txt"))
    if not matches:
        pytest.skip(f"the course manuals are not beside the repository ({SEEDS_DIR})")
    return matches[0].read_text()


@cache
def rendered(config_key: str) -> tuple[Any, dict[str, str]]:
    return render_lab(yaml.safe_load(config_key))


def stage_script(stage: str, config: dict[str, Any]) -> str:
    plan, files = rendered(yaml.safe_dump(config, sort_keys=True))
    runs_on = next(s for s in plan.stages if s.name == stage).runs_on
    node = plan.workers[0] if runs_on == "nodes" else plan.master
    return script_for(plan, files, node, stage)


@pytest.mark.parametrize("step", STEPS, ids=[f"{s['seed']}:{s['step']}" for s in STEPS])
def test_step_is_in_its_manual_and_in_its_stage(step: dict[str, Any]) -> None:
    assert set(step) <= {"step", "seed", "quote", "stage", "config", "marker", "differs"}
    assert step["quote"] in seed_text(step["seed"]), f"quote not in seed {step['seed']}"
    assert "stage" in step or step.get("differs"), "a step needs a stage or a reason it differs"
    if "stage" in step:
        assert step["stage"] in BUILD_STAGES
        assert step.get("marker"), "a mapped step names the marker its script contains"
        script = stage_script(step["stage"], step.get("config", {}))
        assert step["marker"] in script, f"{step['stage']} script lacks {step['marker']!r}"


def test_every_build_stage_does_something_the_manuals_teach() -> None:
    covered = Counter(s["stage"] for s in STEPS if "stage" in s)
    assert set(BUILD_STAGES) <= set(covered), set(BUILD_STAGES) - set(covered)


def test_the_three_kubeadm_manuals_are_mapped() -> None:
    per_seed = Counter(s["seed"] for s in STEPS)
    assert {"000", "002", "003"} <= set(per_seed)
    assert min(per_seed[seed] for seed in ("000", "002", "003")) >= 15


def test_the_hard_way_manuals_are_mapped() -> None:
    per_seed = Counter(s["seed"] for s in STEPS)
    assert per_seed["004"] >= 15 and per_seed["001"] >= 3
    hardway = set(catalog()["builds"]["hardway"]) - set(DEFAULT_STAGES)
    assert hardway <= {s["stage"] for s in STEPS if s["seed"] in ("001", "004") and "stage" in s}


def test_a_marker_is_not_trivially_everywhere() -> None:
    """A marker proves its stage only if the other stages do not all contain it too."""
    for step in (s for s in STEPS if "stage" in s):
        config = step.get("config", {})
        planned = [s.name for s in rendered(yaml.safe_dump(config, sort_keys=True))[0].stages]
        others = [name for name in planned if name != step["stage"]]
        found_elsewhere = [name for name in others if step["marker"] in stage_script(name, config)]
        assert len(found_elsewhere) < len(others), step["step"]
