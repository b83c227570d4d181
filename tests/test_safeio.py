"""kubelab/safeio.py: JSON from hostile files, bounded in depth."""

from __future__ import annotations

import pytest

from kubelab.safeio import MAX_JSON_DEPTH, Unreadable, parse_json


def nested(depth: int, kinds: str = "[{") -> str:
    """JSON `depth` containers deep, alternating the kinds, a scalar beside each level."""
    opened, closed = [], []
    for level in range(depth):
        if kinds[level % len(kinds)] == "[":
            opened.append('[1, "x", ')
            closed.append("]")
        else:
            opened.append(f'{{"s{level}": null, "k": ')
            closed.append("}")
    return "".join(opened) + "0" + "".join(reversed(closed))


@pytest.mark.parametrize("kinds", ["[", "{", "[{", "{["])
def test_json_as_deep_as_allowed_reads_one_deeper_does_not(kinds: str) -> None:
    assert parse_json(nested(MAX_JSON_DEPTH, kinds)) is not None
    with pytest.raises(Unreadable, match=f"nested more than {MAX_JSON_DEPTH} deep"):
        parse_json(nested(MAX_JSON_DEPTH + 1, kinds))


def test_the_deepest_branch_counts_not_the_first() -> None:
    wide = '{"shallow": [1, 2, {"a": 3}], "deep": ' + nested(MAX_JSON_DEPTH) + "}"
    with pytest.raises(Unreadable, match="nested more than"):
        parse_json(wide)
    assert parse_json('{"shallow": [1, 2], "deep": ' + nested(MAX_JSON_DEPTH - 1) + "}")


def test_scalars_and_empty_containers() -> None:
    assert parse_json("7") == 7
    assert parse_json("[]") == []
    assert parse_json('{"a": {}}') == {"a": {}}
