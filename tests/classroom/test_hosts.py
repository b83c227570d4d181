"""hosts.yaml validation: a corpus of files, each stating the problems it must raise."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubelab.classroom.hosts import libvirt_uri, load_hosts
from kubelab.config import _LIBVIRT_URI
from kubelab.errors import ConfigError

CORPUS = Path(__file__).resolve().parents[1] / "data" / "classroom" / "hosts"


def _expected(path: Path) -> list[str]:
    return [
        line.split("expect:", 1)[1].strip()
        for line in path.read_text().splitlines()
        if line.startswith("# expect:")
    ]


@pytest.mark.parametrize("path", sorted((CORPUS / "invalid").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_problem_is_reported_at_once(path: Path) -> None:
    expected = _expected(path)
    assert expected, f"{path} states no expected problem"
    with pytest.raises(ConfigError) as caught:
        load_hosts(path)
    problems = caught.value.problems
    for want in expected:
        assert any(want in p for p in problems), f"missing {want!r} in {problems}"
    assert len(problems) == len(expected), problems


def test_a_valid_file_gives_hosts_with_defaults_and_keys_beside_it() -> None:
    hosts, base = load_hosts(CORPUS / "valid" / "two-hosts.yaml")
    a, b = hosts
    assert (a.user, a.port, a.pool, a.reserve_memory_mib, a.reserve_vcpus) == (
        "root",
        22,
        "default",
        2048,
        1,
    )
    assert a.key_path(base) == (CORPUS / "teacher-key").resolve()
    assert (a.known_hosts_name, b.known_hosts_name) == (
        "10.77.0.11",
        "[lab-b.school.example]:2222",
    )


def test_the_uri_is_one_a_lab_config_accepts_and_names_the_pinned_ssh(tmp_path: Path) -> None:
    hosts, base = load_hosts(CORPUS / "valid" / "two-hosts.yaml")
    wrapper = tmp_path / "ssh-pinned"
    uris = [libvirt_uri(h, h.key_path(base), wrapper) for h in hosts]
    assert uris[0].startswith("qemu+ssh://root@10.77.0.11/system?keyfile=/")
    assert uris[1].startswith("qemu+ssh://kubelab@lab-b.school.example:2222/system?")
    for uri in uris:
        assert f"command={wrapper}" in uri
        assert _LIBVIRT_URI.fullmatch(uri)
