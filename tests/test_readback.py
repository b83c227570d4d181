"""The checks the spec's and `expected`'s readers share (kubelab/readback.py)."""

from __future__ import annotations

import pytest

from kubelab import defaults, readback

PORTS = readback.SHARED_MAPPINGS["health_ports"]
PATHS = readback.SHARED_MAPPINGS["guest_paths"]


def test_a_name_the_file_lacks_reads_back_as_the_constant() -> None:
    read = readback.mapping("health_ports", {"kubelet": 20248}, PORTS)
    assert read == {**defaults.HEALTH_PORTS, "kubelet": 20248}
    assert readback.mapping("guest_paths", {}, PATHS) == defaults.GUEST_PATHS


@pytest.mark.parametrize(
    ("value", "rule", "message"),
    [
        ({"kubelet": True}, PORTS, "health_ports must map names to whole numbers"),
        ({"kubelet": "10248"}, PORTS, "health_ports must map names to whole numbers"),
        ({"pki_dir": 7}, PATHS, "guest_paths must map names to texts"),
        (["pki_dir"], PATHS, "guest_paths must map names to texts"),
    ],
)
def test_a_wrong_type_names_the_field(
    value: object, rule: readback.MappingRule, message: str
) -> None:
    name = "health_ports" if rule is PORTS else "guest_paths"
    with pytest.raises(ValueError, match=message):
        readback.mapping(name, value, rule)


def test_numbers_and_texts() -> None:
    assert readback.is_int(3) and not readback.is_int(True) and not readback.is_int(3.0)
    assert readback.is_number(2.5) and not readback.is_number(False)
    assert readback.texts(["a", "b"], "stages") == ("a", "b")
    with pytest.raises(ValueError, match="stages must be a list of texts"):
        readback.texts(["a", 1], "stages")
