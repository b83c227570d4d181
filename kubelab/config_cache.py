"""The lab config as a task finds it, and validated configs kept across processes.

Validating a config (kubelab/config.py) loads pydantic: nearly a third of every
`invoke render`. So a config that passed is kept as JSON in kubelab/config under
the user's cache folder (kubelab/user_cache.py: 0700, used only while it is the
user's own), named by a digest of everything its validation reads: the config
file's bytes, the flags, kubelab's own data files (the catalog, the mirror
profiles) and the code that validates (kubelab/config.py, names.py, catalog.py,
this module, pydantic's version). No environment variable reaches the validation.
The next process with the same digest takes the validated values from there, as a
`CachedConfig`, without loading pydantic. The one fact outside those bytes,
`mirror.local_repo` (a folder on this host), is looked at again: a kept config
whose folder is gone is validated in full, which says so.

A kept entry that cannot be read, is not a regular file of the user's own, is
larger than an entry can be, is not JSON, is of another format or digest, or whose
values do not match their own digest (truncated, corrupt, copied from another
entry) is passed over: the config is validated in full and the entry written
again. A config that fails validation is never kept. The folder is trusted as
Jinja's bytecode cache beside it is (kubelab/templating.py): only its owner can
write there.

How a task finds and reads the config file is here too (`config_file`,
`read_config_text`), so that both ways read the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubelab import atomicfile, catalog, safeio, user_cache
from kubelab.errors import ConfigError

if TYPE_CHECKING:
    from kubelab.config import LabConfig

DEFAULT_CONFIG_NAME = "lab.yaml"
# A lab config is a page of YAML: the most one may be.
MAX_CONFIG_BYTES = 1024 * 1024

# The layout of an entry: {"format", "key", "digest", "config"}.
CACHE_FORMAT = 1
# A validated config is about 2 KB; an entry larger than this is not one of ours.
MAX_ENTRY_BYTES = 256 * 1024
# Entries kept: each config, flags and kubelab version makes one; the oldest go.
MAX_ENTRIES = 64

_KUBELAB = Path(__file__).resolve().parent
# What validation reads besides the file and the flags: a change to any of them makes
# every kept config stale.
VALIDATION_SOURCES = (
    _KUBELAB / "config.py",
    _KUBELAB / "names.py",
    _KUBELAB / "catalog.py",
    Path(__file__).resolve(),
    catalog.CATALOG_PATH,
    catalog.MIRRORS_PATH,
)


class CachedConfig(dict[str, Any]):
    """A validated config read back from the cache: its sections and keys by attribute,
    as LabConfig gives them (`config.libvirt.uri`, `node.ip`), and its mapping
    (`mirror.custom`) as a dict. What `config_as_dict` gives of a LabConfig, it is."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        super().__init__({key: _values_of(value) for key, value in values.items()})

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _values_of(value: Any) -> Any:
    if isinstance(value, dict):
        return CachedConfig(value)
    if isinstance(value, list):
        return [_values_of(item) for item in value]
    return value


def config_as_dict(config: LabConfig | CachedConfig) -> dict[str, Any]:
    """A validated config as JSON data: what the cache keeps, the render manifest and
    meta.json record."""
    if isinstance(config, CachedConfig):
        return json.loads(json.dumps(config))
    return config.model_dump(mode="json")


def config_file(path: Path | None, search_dir: Path | None) -> Path | None:
    """The config file a task reads: `path`, else lab.yaml in `search_dir` when there
    is one, else none (the built-in defaults)."""
    if path is None and search_dir is not None and (search_dir / DEFAULT_CONFIG_NAME).is_file():
        return search_dir / DEFAULT_CONFIG_NAME
    return path


def read_config_text(path: Path) -> str:
    """The file's text: a regular file of at most MAX_CONFIG_BYTES of UTF-8, or one line why not."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            [f"{path}: no such config file (check the path given to --config)"]
        ) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read it ({exc.strerror or exc})"]) from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError([f"{path}: is a folder, not a config file (give the YAML file)"])
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError([f"{path}: not a regular file (a lab config is a YAML file)"])
    if info.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            [f"{path}: {info.st_size} bytes; a lab config is at most {MAX_CONFIG_BYTES}"]
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read it ({exc.strerror or exc})"]) from None
    try:
        return data[: MAX_CONFIG_BYTES + 1].decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not a text file (a lab config is UTF-8 YAML)"]) from None


def load(
    path: Path | None, overrides: Mapping[str, Any] | None, *, search_dir: Path | None
) -> LabConfig | CachedConfig:
    """kubelab.config.load_config, from the cache when this config passed before."""
    path = config_file(path, search_dir)
    text = None if path is None else read_config_text(path)
    folder = user_cache.own_folder("config")
    key = cache_key(text, overrides)
    if folder is not None and key is not None:
        values = _kept(folder, key)
        if values is not None and _holds_here(values):
            return CachedConfig(values)
    from kubelab.config import config_from_text

    config = config_from_text(text, path, overrides)
    if folder is not None and key is not None:
        _keep(folder, key, config_as_dict(config))
    return config


def cache_key(text: str | None, overrides: Mapping[str, Any] | None) -> str | None:
    """The digest a validated config is kept under; None when one of its inputs cannot
    be read (nothing is kept then)."""
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    digest = hashlib.sha256(f"kubelab config cache {CACHE_FORMAT}\0".encode())
    try:
        parts = [source.read_bytes() for source in (*VALIDATION_SOURCES, _pydantic_version())]
        parts.append(json.dumps(flags, sort_keys=True).encode())
    except (OSError, TypeError):  # a source gone, a flag value JSON cannot hold
        return None
    parts.append(b"no file" if text is None else b"file\0" + text.encode())
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _pydantic_version() -> Path:
    """pydantic's version.py (it also pins pydantic-core's version), found without
    importing pydantic."""
    spec = importlib.util.find_spec("pydantic")
    if spec is None or not spec.submodule_search_locations:
        raise OSError("pydantic is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "version.py"


def _holds_here(values: Mapping[str, Any]) -> bool:
    """Whether the facts a config's bytes do not fix still hold: its local_repo folder."""
    mirror = values.get("mirror")
    local_repo = mirror.get("local_repo") if isinstance(mirror, dict) else None
    return not local_repo or (isinstance(local_repo, str) and Path(local_repo).is_dir())


def _values_digest(values: Any) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def _kept(folder: Path, key: str) -> dict[str, Any] | None:
    """The values kept under `key`, or None when there are none to trust."""
    try:
        # O_NOFOLLOW: no link; O_NONBLOCK: a FIFO put there cannot hang the task.
        fd = os.open(
            folder / f"{key}.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        )
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if (
            not stat.S_ISREG(info.st_mode)
            or info.st_uid != os.getuid()
            or info.st_size > MAX_ENTRY_BYTES
        ):
            return None
        data = os.read(fd, MAX_ENTRY_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        entry = safeio.parse_json(data, MAX_ENTRY_BYTES)
    except safeio.Unreadable:
        return None
    if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT:
        return None
    values = entry.get("config")
    if entry.get("key") != key or not isinstance(values, dict):
        return None
    if entry.get("digest") != _values_digest(values):
        return None
    return values


def _keep(folder: Path, key: str, values: dict[str, Any]) -> None:
    """Write the entry whole (a temporary file renamed over it), then drop the oldest
    beyond MAX_ENTRIES. A cache that cannot be written costs the next process a
    validation, not this task."""
    entry = {"format": CACHE_FORMAT, "key": key, "digest": _values_digest(values), "config": values}
    with contextlib.suppress(OSError):
        atomicfile.write_atomic(folder / f"{key}.json", json.dumps(entry))
        entries = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in entries[MAX_ENTRIES:]:
            stale.unlink(missing_ok=True)
