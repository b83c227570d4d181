"""Config loading and validation against the corpora under tests/data/configs.

Each invalid config says what must be reported in its header:
    # expect: <a substring of one problem line>     (one line per problem)
    # xfail: <why it is not caught yet>             (optional: accepted by mistake)
    # xfail-message: <what the message lacks>       (optional: caught, said badly)
    # xfail-cli: <what goes wrong on the way out>   (optional: right problem, CLI fails)
A file with n `expect` lines must produce exactly n problem lines, each naming
the file, each expected substring in its own line. The xfail cases are known
gaps in kubelab/config.py; each flips to a failure (strict) once it is fixed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kubelab.config import LabConfig, catalog, config_as_dict, load_config, validate_config
from kubelab.errors import ConfigError, KubelabError
from kubelab.plan import load_plan
from kubelab.render import render, write_lab
from tests.support.invoke_in_process import run_task

CONFIGS = Path(__file__).parent / "data" / "configs"
INVALID = sorted((CONFIGS / "invalid").glob("*.yaml"))
VALID = sorted((CONFIGS / "valid").glob("*.yaml"))
REPO_ROOT = Path(__file__).resolve().parents[1]


def _header(path: Path, key: str) -> list[str]:
    # errors="replace": the corpus holds one file that is deliberately not UTF-8.
    prefix = f"# {key}: "
    lines = path.read_text(errors="replace").splitlines()
    return [line[len(prefix) :] for line in lines if line.startswith(prefix)]


def _invalid_param(path: Path, *, keys: tuple[str, ...]) -> object:
    reasons = [reason for key in keys for reason in _header(path, key)]
    marks = [pytest.mark.xfail(strict=True, reason=reasons[0])] if reasons else []
    return pytest.param(path, id=path.stem, marks=marks)


# Cases the validator lets through fail every test; badly worded ones only the wording test.
INVALID_PARAMS = [_invalid_param(p, keys=("xfail",)) for p in INVALID]
WORDING_PARAMS = [_invalid_param(p, keys=("xfail", "xfail-message")) for p in INVALID]
CLI_PARAMS = [_invalid_param(p, keys=("xfail", "xfail-message", "xfail-cli")) for p in INVALID]


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_corpus_sizes() -> None:
    # The issue asks for at least 40 invalid configs; every file states its expectation.
    assert len(INVALID) >= 40
    assert [p.name for p in INVALID if not _header(p, "expect")] == []
    assert len(VALID) >= 10


@pytest.mark.parametrize("path", WORDING_PARAMS)
def test_invalid_config_reports_each_problem_once(path: Path) -> None:
    expected = _header(path, "expect")
    problems = _problems(path)
    assert len(problems) == len(expected), "\n".join(problems)
    unmatched = list(problems)
    for substring in expected:
        hits = [line for line in unmatched if substring in line]
        assert hits, f"no problem line contains {substring!r}:\n" + "\n".join(problems)
        unmatched.remove(hits[0])


@pytest.mark.parametrize("path", INVALID_PARAMS)
def test_invalid_config_problems_name_the_file(path: Path) -> None:
    problems = _problems(path)
    assert problems
    for line in problems:
        assert line.startswith(f"{path}: "), line
        assert "\n" not in line


@pytest.mark.parametrize("path", INVALID_PARAMS)
def test_invalid_config_exits_2_with_one_line_per_problem(path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    assert isinstance(error, KubelabError)
    assert error.code == 2
    assert str(error).splitlines() == error.problems


def _render_lab(config_path: Path, out: Path) -> None:
    # What `invoke render --config FILE --out DIR` does, without invoke.
    plan = load_plan(config_path, None, repo_root=out.parent, lab_dir=out)
    write_lab(render(plan), plan.lab_dir)


@pytest.mark.parametrize("path", INVALID_PARAMS)
def test_invalid_config_writes_nothing(path: Path, tmp_path: Path) -> None:
    out = tmp_path / "lab"
    with pytest.raises(ConfigError):
        _render_lab(path, out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def _invoke(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("path", CLI_PARAMS)
def test_invalid_config_through_the_cli(path: Path, tmp_path: Path) -> None:
    # The corpus runs through invoke's Program in this process (a process per file costs
    # ~0.4 s each); the test below runs the real `invoke` process to show the same holds.
    out = tmp_path / "lab"
    done = run_task("render", "--config", str(path), "--out", str(out))
    code, stderr = done.returncode, done.stderr
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    expected = _header(path, "expect")
    assert len(lines) == len(expected), stderr
    for substring in expected:
        assert any(substring in line for line in lines), stderr
    assert not out.exists()


def test_invoke_process_exits_2_on_a_bad_config(tmp_path: Path) -> None:
    path = CONFIGS / "invalid" / "many-problems-meaning.yaml"
    out = tmp_path / "lab"
    result = _invoke("render", "--config", str(path), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == len(_header(path, "expect"))
    assert all(str(path) in line for line in lines)
    assert not out.exists()


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.problems == [
        f"{missing}: no such config file (check the path given to --config)"
    ]


# --- valid configs -------------------------------------------------------------


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_valid_config_loads(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, LabConfig)
    # The catalog's default fills an unset version: everything below sees a real one.
    assert config.kubernetes.version in catalog()["kubernetes"]
    # A validated config is a fixed point: validating its own dump changes nothing.
    assert validate_config(config_as_dict(config)) == config


@pytest.mark.parametrize("name", ["empty.yaml", "comments-only.yaml"])
def test_empty_file_is_the_default_lab(name: str) -> None:
    config = load_config(CONFIGS / "valid" / name)
    assert config == validate_config({})
    assert [(n.name, n.role, n.ip, n.cpus, n.memory) for n in config.nodes] == [
        ("master", "master", "192.168.56.10", 2, 2048),
        ("node1", "node", "192.168.56.11", 2, 2048),
        ("node2", "node", "192.168.56.12", 2, 2048),
    ]
    assert config.box.name == "centos/7"
    assert config.box.version
    assert config.libvirt.driver == "kvm"
    assert config.network.cidr == "192.168.56.0/24"
    assert config.kubernetes.version == catalog()["default_kubernetes"]


def test_custom_config_keeps_every_value() -> None:
    config = load_config(CONFIGS / "valid" / "custom.yaml")
    assert config.student_id == "S2024-017"
    assert config.libvirt.driver == "qemu"
    assert config.libvirt.boot_timeout == 1800
    assert config.network.cidr == "10.10.0.0/16"
    assert config.kubernetes.runtime == "docker"
    assert config.kubernetes.proxy_mode == "ipvs"
    assert config.mirror.profile == "aliyun"
    assert config.box.guest == "debian12"
    assert [n.name for n in config.nodes] == ["master", "node1", "node2", "node3"]


def test_quoted_student_number_stays_text() -> None:
    # Unquoted, YAML would read 0420 as the octal integer 272.
    assert load_config(CONFIGS / "valid" / "student-id-digits-quoted.yaml").student_id == "0420"


# --- where the config comes from: defaults, lab.yaml, --config, flags ----------------


def test_flags_override_the_file() -> None:
    path = CONFIGS / "valid" / "qemu-driver.yaml"
    config = load_config(path, {"libvirt.driver": "kvm", "student_id": "s7"})
    assert config.libvirt.driver == "kvm"
    assert config.libvirt.boot_timeout == 1800  # from the file, untouched by the flags
    assert config.student_id == "s7"


def test_unset_flags_leave_the_file_alone() -> None:
    path = CONFIGS / "valid" / "qemu-driver.yaml"
    assert load_config(path, {"libvirt.driver": None}).libvirt.driver == "qemu"


def test_flags_alone_override_the_defaults() -> None:
    config = load_config(None, {"kubernetes.runtime": "docker", "libvirt.driver": "qemu"})
    assert config.kubernetes.runtime == "docker"
    assert config.libvirt.driver == "qemu"
    assert config.nodes == validate_config({}).nodes


def test_moving_the_lab_network_does_not_move_the_nodes() -> None:
    # Defaults are not fixed up behind the user's back: each stray node is reported.
    with pytest.raises(ConfigError) as info:
        load_config(None, {"network.cidr": "10.10.0.0/16"})
    assert info.value.problems == [
        f"defaults: nodes[{i}].ip: 192.168.56.{10 + i} is outside network.cidr 10.10.0.0/16"
        for i in range(3)
    ]


def test_bad_flag_value_is_blamed_on_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    shutil.copy(CONFIGS / "valid" / "student-id.yaml", path)
    with pytest.raises(ConfigError) as info:
        load_config(path, {"libvirt.driver": "xen"})
    assert info.value.problems == [
        "command-line flag: libvirt.driver: 'xen' is not allowed (use 'kvm' or 'qemu')"
    ]


def test_lab_yaml_in_the_search_dir_is_used(tmp_path: Path) -> None:
    shutil.copy(CONFIGS / "valid" / "student-id.yaml", tmp_path / "lab.yaml")
    assert load_config(search_dir=tmp_path).student_id == "S2024-001"


def test_explicit_config_wins_over_lab_yaml(tmp_path: Path) -> None:
    shutil.copy(CONFIGS / "valid" / "student-id.yaml", tmp_path / "lab.yaml")
    config = load_config(CONFIGS / "valid" / "aliyun.yaml", search_dir=tmp_path)
    assert config.student_id == ""
    assert config.mirror.profile == "aliyun"


def test_no_lab_yaml_means_defaults(tmp_path: Path) -> None:
    assert load_config(search_dir=tmp_path) == validate_config({})


def test_bad_lab_yaml_names_itself(tmp_path: Path) -> None:
    shutil.copy(CONFIGS / "invalid" / "student-id-space.yaml", tmp_path / "lab.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(search_dir=tmp_path)
    assert info.value.problems[0].startswith(f"{tmp_path / 'lab.yaml'}: student_id: ")


def test_existing_local_repo_is_accepted(tmp_path: Path) -> None:
    # mirror.local_repo is the one field checked against the host, so it has no
    # data file: the folder must exist where the test runs.
    config = validate_config({"mirror": {"local_repo": str(tmp_path)}})
    assert config.mirror.local_repo == str(tmp_path)


def test_config_is_frozen() -> None:
    config = validate_config({})
    with pytest.raises(ValueError):
        config.student_id = "changed"  # type: ignore[misc]
