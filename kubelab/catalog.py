"""kubelab's own data files: the catalog (provision/catalog.yaml) and the mirror
profiles (provision/mirrors.yaml), read once per process.

Apart from kubelab.config (pydantic) because a plan reads them too, and a plan
made from a cached config (kubelab/config_cache.py) must not load pydantic.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from kubelab import REPO_ROOT

CATALOG_PATH = REPO_ROOT / "provision" / "catalog.yaml"
MIRRORS_PATH = REPO_ROOT / "provision" / "mirrors.yaml"


@cache
def catalog() -> dict[str, Any]:
    """The catalog of versions, runtimes, CNIs, guests and stages (provision/catalog.yaml)."""
    return _load_own_yaml(CATALOG_PATH)


@cache
def mirror_profiles() -> dict[str, dict[str, str]]:
    return _load_own_yaml(MIRRORS_PATH)["profiles"]


def _load_own_yaml(path: Path) -> Any:
    """One of kubelab's own data files, with libyaml's safe loader where PyYAML has it
    (the pure-Python one takes 25 ms of every `invoke render` on the catalog alone)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(path.read_text(), Loader=loader)
