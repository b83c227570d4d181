"""Hostile lab configs (issue 14): each costs one line and exit code 2, never a traceback.

The files are generated here (a FIFO, a folder, a NUL byte, 100 000 nested brackets,
a "billion laughs" alias bomb, a 2 MiB file); `invoke render` is run on each as a
real process, so what the user sees (stderr, exit code) is what is checked. The
time each took is printed, not asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kubelab import REPO_ROOT
from kubelab.config import MAX_CONFIG_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES, load_config
from kubelab.errors import ConfigError


def _alias_bomb() -> str:
    # Nine levels of nine aliases each: 9**9 (387 million) values once expanded.
    lines = ['a0: &a0 ["lol"]']
    for level in range(1, 10):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return "\n".join(lines) + "\nname: kubelab\n"


def _block_nesting(depth: int) -> str:
    return "".join(f"{'  ' * i}k{i}:\n" for i in range(depth)) + f"{'  ' * depth}v: 1\n"


# name -> (how the file is made, what its one line says)
HOSTILE: dict[str, tuple[Callable[[Path], None], str]] = {
    "folder": (lambda p: p.mkdir(), "is a folder, not a config file"),
    "fifo": (lambda p: os.mkfifo(p), "not a regular file"),
    "nul-byte": (lambda p: p.write_bytes(b"name: kube\x00lab\n"), "holds a NUL byte"),
    "not-utf8": (lambda p: p.write_bytes(b"name: \xff\xfe\n"), "not a text file"),
    "flow-nesting": (
        lambda p: p.write_text("name: " + "[" * 100_000 + "]" * 100_000 + "\n"),
        f"nested more than {MAX_YAML_DEPTH} levels deep",
    ),
    "block-nesting": (
        lambda p: p.write_text(_block_nesting(200)),
        f"nested more than {MAX_YAML_DEPTH} levels deep",
    ),
    "alias-bomb": (
        lambda p: p.write_text(_alias_bomb()),
        f"expands to more than {MAX_YAML_NODES} values",
    ),
    "too-big": (
        lambda p: p.write_text("# " + "x" * (2 * MAX_CONFIG_BYTES) + "\n"),
        f"a lab config is at most {MAX_CONFIG_BYTES}",
    ),
}


def _render(path: Path, cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO_ROOT), "render"]
        + ["--config", str(path), "--out", str(cwd / "lab")],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result, time.monotonic() - started


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_config_is_one_line_and_exit_2(case: str, tmp_path: Path) -> None:
    make, says = HOSTILE[case]
    path = tmp_path / "lab.yaml"
    make(path)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.problems) == 1, info.value.problems
    assert info.value.code == 2
    assert says in info.value.problems[0]
    assert info.value.problems[0].startswith(f"{path}: ")

    result, took = _render(path, tmp_path)
    print(f"{case}: exit {result.returncode} in {took:.2f} s, {len(result.stderr)} bytes")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert not (tmp_path / "lab").exists()


def test_an_unreadable_file_is_one_line() -> None:
    # Reading /proc/self/mem from offset 0 fails (EIO) even for root, unlike chmod 000.
    with pytest.raises(ConfigError) as info:
        load_config(Path("/proc/self/mem"))
    assert len(info.value.problems) == 1
    assert "cannot read it" in info.value.problems[0]


def test_echoed_values_are_cut_and_cleaned(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(f'name: "\\e[2J\\e]0;owned\\a{"x" * 100_000}"\nstudent_id: [1]\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.problems) == 2
    for line in info.value.problems:
        assert len(line) < len(str(path)) + 320
        assert "\x1b" not in line and "\a" not in line
    name = next(p for p in info.value.problems if ": name:" in p)
    assert name.endswith("(lowercase letters, digits and '-', at most 63, e.g. kubelab)")


def test_a_badly_shaped_node_hides_no_other_node(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(
        "nodes:\n"
        "  - {name: master, role: master, ip: 192.168.56.10, cpus: many}\n"
        "  - {name: Bad_Name, role: node, ip: 192.168.56.11}\n"
        "  - {name: node2, role: node, ip: 10.0.0.5}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = [p.removeprefix(f"{path}: ") for p in info.value.problems]
    assert problems[0].startswith("nodes[0].cpus: ")
    assert any(p.startswith("nodes[1].name: 'Bad_Name' is not a valid hostname") for p in problems)
    assert "nodes[2].ip: 10.0.0.5 is outside network.cidr 192.168.56.0/24" in problems
    # "exactly one master" is not claimed: the node left out for its shape is the master.
    assert not [p for p in problems if p.startswith("nodes:")]
