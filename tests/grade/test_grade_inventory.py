"""The live grader's inventory: hosts per student, key references, never keys."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from kubelab.config import mirror_profiles
from kubelab.errors import ConfigError
from kubelab.grade.inventory import load_inventory

DATA = Path(__file__).resolve().parents[1] / "data" / "grade"


def test_the_example_inventory(tmp_path: Path) -> None:
    shutil.copy(DATA / "inventory.yaml", tmp_path / "inventory.yaml")
    inventory = load_inventory(tmp_path / "inventory.yaml")
    assert [s.student for s in inventory.students] == ["2021001", "2021002", "2021003"]
    first, second, third = inventory.students
    assert [h.machine for h in first.hosts] == ["master", "node1"]
    assert [h.role for h in first.hosts] == ["master", "node"]
    master = first.master.target
    assert (master.host, master.port, master.user) == ("10.20.1.5", 22, "student")
    # A relative key file is found beside the inventory, not in the working folder.
    assert master.key_file == tmp_path / "keys" / "grader_ed25519"
    assert first.master.ip == "10.20.1.5" and first.master.name is None
    # Per host: another port and the private address, for VMs behind one public name.
    assert [(h.target.port, h.ip) for h in second.hosts] == [
        (2201, "192.168.56.10"),
        (2202, "192.168.56.11"),
    ]
    # A host's own key reference replaces the default one, of either kind.
    assert third.master.target.key_env == "KUBELAB_GRADER_KEY_2021003"
    assert third.master.target.key_file is None
    assert third.hosts[1].name == "node1-2021003"
    settings = inventory.settings
    assert settings.namespace == "kubelab-grade" and settings.nodeport == 30099
    assert settings.image == mirror_profiles()["official"]["nginx_image"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    doc = {
        "defaults": {"user": "student", "key_file": "k"},
        "grading": {"nodeport": 80, "namespace": "kube-system"},
        "students": {
            "bad id!": {"master": {"host": "10.0.0.1"}},
            "2021002": {"nodes": [{"host": "10.0.0.2"}]},
            "2021003": {"master": {"host": "lab.example.edu"}},
            "2021004": {"master": {"host": "10.0.0.4", "password": "hunter2"}},
            "2021005": {"master": {"host": "10.0.0.5", "colour": "red"}},
        },
    }
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as caught:
        load_inventory(path)
    text = "\n".join(caught.value.problems)
    assert len(caught.value.problems) == 7, text
    for expected in (
        "nodeport must be in 30000-32767",
        "not a namespace of the grader's own",
        "bad id!: student ID",
        "2021002: needs a master",
        "lab.example.edu is a name; give ip",
        "'password' puts a secret",
        "unknown key 'colour'",
    ):
        assert expected in text
    assert "hunter2" not in text


def test_an_inline_key_is_one_line_and_never_echoed(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(
        "students:\n  s1:\n    master:\n      host: 10.0.0.1\n      key_file: |\n"
        "        -----BEGIN RSA PRIVATE KEY-----\n        MIIEowIBAAKCAQEAsecret\n"
        "        -----END RSA PRIVATE KEY-----\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_inventory(path)
    assert len(caught.value.problems) == 1 and "\n" not in caught.value.problems[0]
    assert "MIIEowIBAAKCAQEAsecret" not in str(caught.value)


def test_an_alias_bomb_or_deep_nesting_is_one_line(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x"]'] + [
        f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 10)
    ]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    deep = tmp_path / "deep.yaml"
    deep.write_text("students: " + "[" * 50_000 + "]" * 50_000 + "\n")
    for path, says in ((bomb, "expands to more than"), (deep, "nested more than")):
        with pytest.raises(ConfigError) as info:
            load_inventory(path)
        assert len(info.value.problems) == 1 and says in info.value.problems[0]


def test_host_keys_are_checked_at_load(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "defaults": {"user": "grader", "key_env": "KUBELAB_TEST_KEY"},
                "students": {
                    "2021001": {"master": {"host": "10.20.1.5", "host_key": "MD5:aa:bb"}},
                    "2021002": {"master": {"host": "10.20.1.6", "known_hosts": "nope"}},
                },
            }
        )
    )
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    problems = info.value.problems
    assert any("2021001: master: host_key must be a fingerprint" in p for p in problems)
    assert any("2021002: master: known_hosts file" in p and "does not exist" in p for p in problems)


def test_hosts_behind_a_jump_host(tmp_path: Path) -> None:
    (tmp_path / "known_hosts").write_text("")
    doc = {
        "jumps": {
            "school-a": {
                "host": "10.20.0.2",
                "user": "kubelab",
                "key_file": "host-key",
                "known_hosts": "known_hosts",
            },
            "school-b": {"host": "10.20.0.3", "key_file": "host-key"},
            "school-c": {"host": "10.20.0.4", "known_hosts": "missing", "password": "x"},
        },
        "students": {
            "2021001": {
                "master": {
                    "host": "192.168.56.10",
                    "jump": "school-a",
                    "key_file": "vm.ed",
                    "more_key_files": ["vm.rsa"],
                },
            },
            "2021002": {"master": {"host": "192.168.56.10", "jump": "school-z"}},
            "2021003": {"master": {"host": "192.168.56.10", "more_key_files": "vm.rsa"}},
        },
    }
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as caught:
        load_inventory(path)
    text = "\n".join(caught.value.problems)
    for expected in (
        "jumps: school-b: known_hosts is required",
        "jumps: school-c: known_hosts file",
        "2021002: master: jump 'school-z' is not one of jumps",
        "2021003: master: more_key_files must be a list",
    ):
        assert expected in text
    assert len(caught.value.problems) == 4, text

    del doc["jumps"]["school-b"], doc["jumps"]["school-c"]
    del doc["students"]["2021002"], doc["students"]["2021003"]
    doc["students"]["2021004"] = {"master": {"host": "192.168.56.10", "jump": "school-a"}}
    path.write_text(yaml.safe_dump(doc))
    first, second = load_inventory(path).students
    target = first.master.target
    assert target.jump is not None and target.jump.known_hosts == tmp_path / "known_hosts"
    assert (target.jump.host, target.jump.user) == ("10.20.0.2", "kubelab")
    assert target.key_files == (tmp_path / "vm.ed", tmp_path / "vm.rsa")
    # The address names the host too: labs on two hosts may share a VM address.
    assert first.address == second.address == "vagrant@192.168.56.10:22 via kubelab@10.20.0.2:22"
