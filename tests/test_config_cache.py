"""The validated config kept across processes (kubelab/config_cache.py).

A kept config must give what validation gives, byte for byte once rendered; every
input of the validation must make a new entry; and an entry that is not exactly one
this kubelab wrote for this input must be passed over (full validation), never
trusted into a crash or a wrong render.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from kubelab import config_cache
from kubelab.config import LabConfig, config_as_dict, load_config
from kubelab.config_cache import CachedConfig
from kubelab.errors import ConfigError
from kubelab.plan import make_plan
from kubelab.render import render

CONFIGS = Path(__file__).parent / "data" / "configs"
VALID = sorted((CONFIGS / "valid").glob("*.yaml"))
EMPTY = CONFIGS / "valid" / "empty.yaml"
LAB = Path("/srv/kubelab/lab")


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


def entries(cache_home: Path) -> list[Path]:
    folder = cache_home / "kubelab" / "config"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def load(path: Path | None = EMPTY, overrides: dict[str, object] | None = None):
    return config_cache.load(path, overrides, search_dir=None)


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_a_kept_config_renders_what_validation_renders(cache_home: Path, path: Path) -> None:
    validated = load(path)
    kept = load(path)
    assert isinstance(validated, LabConfig)
    assert isinstance(kept, CachedConfig)
    assert config_as_dict(kept) == config_as_dict(validated) == config_as_dict(load_config(path))
    assert render(make_plan(kept, LAB)) == render(make_plan(validated, LAB))


def test_flags_are_kept_with_the_config_they_were_given_with(cache_home: Path) -> None:
    flags = {"libvirt.driver": "qemu", "student_id": "s42", "box.name": None}
    assert isinstance(load(EMPTY, flags), LabConfig)
    kept = load(EMPTY, flags)
    assert isinstance(kept, CachedConfig)
    assert (kept.libvirt.driver, kept.student_id) == ("qemu", "s42")
    assert render(make_plan(kept, LAB)) == render(make_plan(load_config(EMPTY, flags), LAB))
    # Other flags, or none: another entry.
    assert isinstance(load(EMPTY, {"libvirt.driver": "kvm"}), LabConfig)
    assert isinstance(load(EMPTY), LabConfig)
    assert len(entries(cache_home)) == 3


def test_no_file_and_lab_yaml_beside_tasks(cache_home: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    assert isinstance(config_cache.load(None, None, search_dir=repo), LabConfig)
    assert config_cache.load(None, None, search_dir=repo) == config_as_dict(load_config(None))
    (repo / "lab.yaml").write_text("name: beside\n")
    found = config_cache.load(None, None, search_dir=repo)
    assert isinstance(found, LabConfig)  # the file is an input: not the defaults' entry
    assert found.name == "beside"
    assert config_cache.load(None, None, search_dir=repo).name == "beside"


def test_a_changed_config_file_is_validated_again(cache_home: Path, tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("name: one\n")
    load(path)
    assert load(path).name == "one"
    path.write_text("name: two\n")
    changed = load(path)
    assert isinstance(changed, LabConfig)
    assert changed.name == "two"
    path.write_text("name: Two\n")  # and a change that makes it invalid is refused
    with pytest.raises(ConfigError, match="not a valid lab name"):
        load(path)


@pytest.mark.parametrize("source", range(len(config_cache.VALIDATION_SOURCES)))
def test_a_change_to_what_validates_makes_every_kept_config_stale(
    cache_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: int
) -> None:
    copies = []
    for i, original in enumerate(config_cache.VALIDATION_SOURCES):
        copy = tmp_path / "sources" / f"{i}-{original.name}"
        copy.parent.mkdir(exist_ok=True)
        shutil.copyfile(original, copy)
        copies.append(copy)
    monkeypatch.setattr(config_cache, "VALIDATION_SOURCES", tuple(copies))
    load()
    assert isinstance(load(), CachedConfig)
    with copies[source].open("a") as f:
        f.write("\n# changed\n")
    assert isinstance(load(), LabConfig)
    assert isinstance(load(), CachedConfig)


def test_another_pydantic_makes_every_kept_config_stale(
    cache_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = tmp_path / "version.py"
    version.write_text(config_cache._pydantic_version().read_text())
    monkeypatch.setattr(config_cache, "_pydantic_version", lambda: version)
    load()
    assert isinstance(load(), CachedConfig)
    version.write_text("VERSION = '9.9.9'\n")
    assert isinstance(load(), LabConfig)


def test_an_invalid_config_is_never_kept(cache_home: Path) -> None:
    bad = CONFIGS / "invalid"
    for path in sorted(bad.glob("*.yaml"))[:10]:
        with pytest.raises(ConfigError):
            load(path)
    with pytest.raises(ConfigError):
        load(EMPTY, {"libvirt.driver": "xen"})
    assert entries(cache_home) == []


def test_a_kept_config_whose_local_repo_is_gone_is_validated_again(
    cache_home: Path, tmp_path: Path
) -> None:
    packages = tmp_path / "packages"
    packages.mkdir()
    flags = {"mirror.local_repo": str(packages)}
    load(EMPTY, flags)
    assert isinstance(load(EMPTY, flags), CachedConfig)
    packages.rmdir()
    with pytest.raises(ConfigError, match="mirror.local_repo"):
        load(EMPTY, flags)


def _one_entry(cache_home: Path) -> Path:
    load()
    (entry,) = entries(cache_home)
    return entry


def _replace(entry: Path, make) -> None:
    entry.unlink()
    make(entry)


def _rewritten(entry: Path, **changes: object) -> None:
    data = json.loads(entry.read_text())
    data.update(changes)
    entry.write_text(json.dumps(data))


HOSTILE = {
    "corrupt": lambda e: e.write_bytes(b"\x00\xffnot json at all"),
    "truncated": lambda e: e.write_bytes(e.read_bytes()[: len(e.read_bytes()) // 2]),
    "empty": lambda e: e.write_bytes(b""),
    "another format": lambda e: _rewritten(e, format=config_cache.CACHE_FORMAT + 1),
    "another key": lambda e: _rewritten(e, key="0" * 64),
    "values not their digest": lambda e: _rewritten(
        e, config={**json.loads(e.read_text())["config"], "name": "forged"}
    ),
    "values not a mapping": lambda e: _rewritten(e, config=["x"], digest=None),
    "not a mapping": lambda e: e.write_text("[1, 2, 3]"),
    "nested too deep": lambda e: e.write_text("[" * 500 + "]" * 500),
    "too large": lambda e: e.write_text(" " * (config_cache.MAX_ENTRY_BYTES + 1)),
    "a link": lambda e: _replace(e, lambda p: p.symlink_to(CONFIGS / "valid" / "empty.yaml")),
    "a folder": lambda e: _replace(e, lambda p: p.mkdir()),
    "a fifo": lambda e: _replace(e, os.mkfifo),
}


@pytest.mark.parametrize("how", HOSTILE, ids=list(HOSTILE))
def test_a_hostile_entry_is_passed_over(cache_home: Path, how: str) -> None:
    entry = _one_entry(cache_home)
    HOSTILE[how](entry)
    config = load()
    assert isinstance(config, LabConfig)  # validated in full
    assert config_as_dict(config) == config_as_dict(load_config(EMPTY))


def test_entries_are_private(cache_home: Path) -> None:
    # The folder is the user's own, 0700: an entry there is the user's own doing (as
    # Jinja's bytecode beside it). What the cache checks is that it is whole and this key's.
    entry = _one_entry(cache_home)
    assert entry.parent.stat().st_mode & 0o777 == 0o700
    assert entry.stat().st_mode & 0o777 == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_another_users_entry_is_passed_over(cache_home: Path) -> None:
    entry = _one_entry(cache_home)
    os.chown(entry, 65534, 65534)  # nobody's
    assert isinstance(load(), LabConfig)


def test_a_passed_over_entry_is_written_again(cache_home: Path) -> None:
    entry = _one_entry(cache_home)
    entry.write_text("garbage")
    assert isinstance(load(), LabConfig)
    assert isinstance(load(), CachedConfig)


def test_no_cache_folder_no_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")
    monkeypatch.setenv("HOME", "")
    assert isinstance(load(), LabConfig)
    assert isinstance(load(), LabConfig)
    assert list(tmp_path.iterdir()) == []


def test_the_oldest_entries_go(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_cache, "MAX_ENTRIES", 2)
    seen: set[Path] = set()
    for when, name in enumerate(("one", "two", "three"), start=1):
        load(EMPTY, {"name": name})
        for new in set(entries(cache_home)) - seen:  # ages apart, whatever the clock's grain
            os.utime(new, (when, when))
        seen = set(entries(cache_home))
    assert len(entries(cache_home)) == 2
    assert isinstance(load(EMPTY, {"name": "three"}), CachedConfig)
    assert isinstance(load(EMPTY, {"name": "one"}), LabConfig)


def test_no_config_key_is_hidden_by_a_dict_method() -> None:
    # A CachedConfig is a dict: a key named like one of its methods (items, copy, ...)
    # would read as the method, not the value.
    from pydantic import BaseModel

    names, models = set(), [LabConfig]
    while models:
        model = models.pop()
        for name, info in model.model_fields.items():
            names.add(name)
            for kind in (info.annotation, *getattr(info.annotation, "__args__", ())):
                if isinstance(kind, type) and issubclass(kind, BaseModel):
                    models.append(kind)
    assert {"nodes", "cpus", "libvirt", "insert_key"} <= names  # every level walked
    assert names.isdisjoint(dir(dict))
