"""The rules for names every layer shares: student IDs, hostnames, version tags, secret keys.

A student ID ends every hostname of the student's lab and names the hand-in
archive, so the config, the archive and the grader's inventory check it by the
one rule here.
"""

from __future__ import annotations

import re

# 1-32 of A-Z, a-z, 0-9 and "-", not "-" at either end (it ends a DNS label).
STUDENT_ID_PATTERN = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?"
# Anchored at both ends (\Z: no trailing newline), so .match and .fullmatch agree.
STUDENT_ID = re.compile(rf"^{STUDENT_ID_PATTERN}\Z")

# Keys that would put a secret into a file kubelab reads (the grader's inventory, the
# classroom's hosts.yaml): refused by name, their values never echoed.
SECRET_KEYS = ("key", "private_key", "password", "passphrase")

# Kubernetes writes its versions with a "v" (kubeadm, the API server's gitVersion);
# kubelab's config, catalog and expectations hold them without it.
VERSION_PREFIX = "v"


def is_student_id(text: str) -> bool:
    return bool(STUDENT_ID.match(text))


def hostname_for(node_name: str, student_id: str) -> str:
    """The VM's hostname: the node name, carrying the student ID when one is set
    (lab manual 003 grades hostnames that carry the student number)."""
    return f"{node_name}-{student_id.lower()}" if student_id else node_name


def bare_version(version: str) -> str:
    """ "v1.31.13" or "1.31.13" -> "1.31.13"."""
    return version.removeprefix(VERSION_PREFIX)


def version_tag(version: str) -> str:
    """ "1.31.13" or "v1.31.13" -> "v1.31.13"."""
    return VERSION_PREFIX + bare_version(version)
