"""Jinja's bytecode cache: kept in the user's own private cache folder, or not at all.

Jinja unpickles what it finds in that folder, so it is used only while it is this
user's and no one else can put a file there. The quoting filters are held to their
formats in tests/test_render.py.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest

from kubelab import templating
from kubelab.templating import cache_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_the_cache_is_kubelabs_own_private_folder(cache_home: Path) -> None:
    old = os.umask(0o000)  # a umask that would leave the folders open
    try:
        folder = cache_folder()
    finally:
        os.umask(old)
    assert folder == cache_home / "kubelab" / "jinja"
    assert mode(folder) == 0o700
    assert mode(folder.parent) == 0o700


def test_a_loose_jinja_folder_of_ours_is_made_private(cache_home: Path) -> None:
    folder = cache_home / "kubelab" / "jinja"
    folder.mkdir(parents=True)
    folder.parent.chmod(0o755)  # the box cache's folder may stay readable
    folder.chmod(0o777)
    assert cache_folder() == folder
    assert mode(folder) == 0o700
    assert mode(folder.parent) == 0o755


def test_no_cache_in_a_kubelab_folder_others_can_write(cache_home: Path) -> None:
    (cache_home / "kubelab").mkdir(parents=True)
    (cache_home / "kubelab").chmod(0o777)
    assert cache_folder() is None
    assert not (cache_home / "kubelab" / "jinja").exists()


def test_no_cache_through_a_link(cache_home: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (cache_home / "kubelab").mkdir(parents=True, mode=0o700)
    (cache_home / "kubelab" / "jinja").symlink_to(elsewhere)
    assert cache_folder() is None


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_no_cache_in_another_users_folder(cache_home: Path) -> None:
    folder = cache_home / "kubelab" / "jinja"
    folder.mkdir(parents=True, mode=0o700)
    os.chown(folder, 65534, 65534)  # nobody's
    assert cache_folder() is None
    os.chown(folder, os.getuid(), os.getgid())
    os.chown(folder.parent, 65534, 65534)
    assert cache_folder() is None


def test_no_cache_without_a_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # the spec: ignored unless absolute
    monkeypatch.setenv("HOME", "")  # Python's ~ would be "/"
    assert cache_folder() is None
    monkeypatch.delenv("HOME")
    assert cache_folder() is None
    assert list(tmp_path.iterdir()) == []  # nothing made where we happened to stand


def test_a_cache_that_cannot_be_written_costs_a_compile_not_the_render(
    tmp_path: Path,
) -> None:
    (tmp_path / "t.j2").write_text("{{ x | sh }}\n")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(tmp_path)),
        bytecode_cache=templating._BytecodeCache(str(tmp_path / "gone")),
    )
    env.filters["sh"] = templating.shell_word
    assert env.get_template("t.j2").render(x="a b") == "'a b'"


RENDER_DEFAULT_LAB = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from kubelab.config import validate_config
from kubelab.plan import make_plan
from kubelab.render import render
print(render(make_plan(validate_config({}), Path("/srv/kubelab/lab")))["Vagrantfile"])
"""


def test_the_lab_renders_the_same_from_the_cache(cache_home: Path) -> None:
    # Fresh processes: this one's environment is made already. The first compiles
    # and fills the cache, the second reads every template from it.
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    argv = [sys.executable, "-c", RENDER_DEFAULT_LAB, str(REPO)]
    first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    cached = sorted((cache_home / "kubelab" / "jinja").iterdir())
    assert cached and all(p.name.endswith(".cache") for p in cached)
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert sorted((cache_home / "kubelab" / "jinja").iterdir()) == cached
