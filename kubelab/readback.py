"""Reading back what kubelab wrote as JSON: the spec in kubelab-render.json and
meta.json, and meta.json's `expected`.

The file may be a hand-in's, so every value's type is checked and a wrong one is a
ValueError that names it. The spec's and `expected`'s readers share these checks and
the rule for the mappings both carry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from kubelab import defaults


def is_int(value: object) -> bool:
    """A whole number as JSON holds one (JSON's true is not 1 here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_text(value: object) -> bool:
    return isinstance(value, str)


def texts(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of texts")
    return tuple(value)


# A mapping field: how each value is checked, what the values are called, and the
# constants a name the file lacks reads back as.
MappingRule = tuple[Callable[[object], bool], str, Mapping[str, object]]

# The mappings both the spec and `expected` carry.
SHARED_MAPPINGS: dict[str, MappingRule] = {
    "guest_paths": (is_text, "texts", defaults.GUEST_PATHS),
    "health_ports": (is_int, "whole numbers", defaults.HEALTH_PORTS),
}


def mapping(name: str, value: object, rule: MappingRule) -> dict[str, object]:
    """A stored mapping, its names and values checked, over its constants: a name the
    file lacks (written before the name existed, or left out of a hand-in) reads back
    as the constant it was built with."""
    is_value, what, constants = rule
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and is_value(v) for k, v in value.items()
    ):
        raise ValueError(f"{name} must map names to {what}")
    return {**constants, **value}
