"""The live grader's inventory: hosts per student, key references, never keys."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubelab import defaults
from kubelab.config import mirror_profiles
from kubelab.errors import ConfigError, KubelabError
from kubelab.grade.inventory import MAX_INVENTORY_BYTES, lab_spec, load_inventory
from kubelab.plan import LabSpec
from kubelab.transport import SSHTarget
from kubelab.verify import Expected

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
        # Named too, though school-c's known_hosts is wrong as well: every problem at once.
        "jumps: school-c: 'password' puts a secret",
    ):
        assert expected in text
    assert len(caught.value.problems) == 5, text
    assert "'x'" not in text

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


def test_a_host_entry_becomes_an_ssh_target(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "students": {
                    "s123": {
                        "master": {
                            "host": "203.0.113.7",
                            "port": 2201,
                            "user": "student",
                            "key_file": "keys/s123",
                        }
                    }
                }
            }
        )
    )
    (lab,) = load_inventory(path).students
    assert lab.master.target == SSHTarget(
        "master", "203.0.113.7", 2201, "student", tmp_path / "keys" / "s123"
    )


def test_a_host_never_holds_a_secret_and_every_problem_is_named(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    entry = {"private_key": "-----BEGIN...", "port": "22", "colour": "red", "user": ""}
    path.write_text(yaml.safe_dump({"students": {"s1": {"master": entry}}}))
    with pytest.raises(ConfigError) as caught:
        load_inventory(path)
    problems = caught.value.problems
    assert any("s1: master: 'private_key' puts a secret" in p for p in problems)
    assert any("s1: master: 'host' is required" in p for p in problems)
    port = "s1: master: 'port' must be a number from 1 to 65535, not '22'"
    assert any(port in p for p in problems)
    assert any("s1: master: 'user' must be a user name" in p for p in problems)
    assert any("s1: master: unknown key 'colour'" in p for p in problems)
    assert len(problems) == 5, problems
    assert "BEGIN" not in "\n".join(problems)


def _one_master(**host: Any) -> dict[str, Any]:
    return {"s1": {"master": {"host": "10.0.0.1", **host}}}


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ({"students": ["2021001"]}, "students must map each student ID to its hosts"),
        ({"grading": ["x"], "students": _one_master()}, "grading: grading must be a mapping"),
        (
            {"grading": {"kubectl": "kubectl"}, "students": _one_master()},
            "grading: kubectl must be a command as a list of words",
        ),
        (
            {"grading": {"mirror": ["x"]}, "students": _one_master()},
            "grading: mirror ['x'] is not a mirror profile",
        ),
        ({"grading": {"cni": 3}, "students": _one_master()}, "grading: cni: must be text"),
        ({"grading": {"colour": 1}, "students": _one_master()}, "grading: unknown key 'colour'"),
        ({"colour": 1, "students": _one_master()}, "unknown key 'colour'"),
        (
            {"students": {"s1": {"master": {"host": "10.0.0.1"}, "nodes": {"host": "x"}}}},
            "s1: nodes must be a list of hosts",
        ),
        (
            {"students": {"s1": {"master": {"host": "10.0.0.1"}, "nodes": ["10.0.0.2"]}}},
            "s1: node1: expected a mapping with host",
        ),
        (
            {"students": _one_master(ip="10.0.0.300")},
            "s1: master: ip '10.0.0.300' is not an IP address",
        ),
        (
            {"students": _one_master(name="Master_1")},
            "s1: master: name 'Master_1' is not a Kubernetes node name",
        ),
        (
            {"students": _one_master(key_file="k", key_env="K")},
            "s1: master: give key_file or key_env, not both",
        ),
    ],
)
def test_wrong_types_are_one_line_each(tmp_path: Path, doc: dict[str, Any], says: str) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as caught:
        load_inventory(path)
    assert len(caught.value.problems) == 1, caught.value.problems
    assert says in caught.value.problems[0], caught.value.problems[0]
    assert caught.value.problems[0].startswith(f"{path}: ")


def test_a_wrong_default_is_named_once_not_once_per_host(tmp_path: Path) -> None:
    students = {f"s{k}": {"master": {"host": f"10.0.0.{k}"}} for k in range(1, 6)}
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump({"defaults": {"port": "22", "colour": 1}, "students": students}))
    with pytest.raises(ConfigError) as caught:
        load_inventory(path)
    problems = caught.value.problems
    assert len(problems) == 2, problems
    assert any("defaults: 'port' must be a number" in p for p in problems)
    assert any("defaults: unknown key 'colour'" in p for p in problems)


def test_a_student_listed_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(
        "students:\n  s1: {master: {host: 10.0.0.1}}\n  s1: {master: {host: 10.0.0.2}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_inventory(path)
    assert len(caught.value.problems) == 1 and "duplicate key 's1'" in caught.value.problems[0]


def test_a_file_that_is_not_an_inventory_is_one_line(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as f:
        f.truncate(MAX_INVENTORY_BYTES + 1)  # sparse: no disk used
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"students: \xff\xfe\n")
    cases = [(huge, "an inventory is at most"), (binary, "not a text file")]
    for path, says in cases:
        with pytest.raises(ConfigError) as caught:
            load_inventory(path)
        assert len(caught.value.problems) == 1 and says in caught.value.problems[0]
    for path, says in ((tmp_path, "not a regular file"), (tmp_path / "none", "cannot read")):
        with pytest.raises(KubelabError, match=says):
            load_inventory(path)


def test_a_students_lab_spec_says_what_the_inventory_says(tmp_path: Path) -> None:
    """What verify expects of a live cluster is the projection `invoke verify` uses."""
    shutil.copy(DATA / "inventory.yaml", tmp_path / "inventory.yaml")
    inventory = load_inventory(tmp_path / "inventory.yaml")
    second = inventory.students[1]
    spec = lab_spec(second, inventory.settings, ["k8s-master", "k8s-node1"], "1.31.13",
                    inventory.source)  # fmt: skip
    assert LabSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.student_id == "2021002" and spec.version_tag == "v1.31.13"
    assert spec.api_endpoint == f"192.168.56.10:{defaults.API_PORT}"
    assert spec.lab_cidr == "192.168.56.10/31"  # the smallest network holding both
    expected = Expected.from_spec(spec)
    assert [tuple(n)[:4] for n in expected.nodes] == [
        ("k8s-master", "master", "192.168.56.10", "master"),
        ("k8s-node1", "node", "192.168.56.11", "node1"),
    ]
    assert (expected.namespace, expected.nodeport) == (
        defaults.GRADE_NAMESPACE,
        defaults.GRADE_NODEPORT,
    )
    assert spec.nginx_image == inventory.settings.image
    assert (expected.pod_cidr, expected.cni) == ("10.244.0.0/16", "flannel")
    assert expected.management_cidr == defaults.MANAGEMENT_CIDR


def test_a_lab_on_two_address_families_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    doc = {"students": {"s1": {"master": {"host": "10.0.0.1"}, "nodes": [{"host": "fd00::2"}]}}}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as caught:
        load_inventory(path)
    assert caught.value.problems == [
        f"{path}: s1: the master and nodes mix IPv4 and IPv6 addresses (ip)"
    ]
