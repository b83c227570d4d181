"""A whole class on several libvirt hosts: hosts.yaml, placement, per-student labs.

hosts.yaml (hosts.py) -> each host's figures over qemu+ssh (probe.py) -> placement
(placement.py, pure) -> one lab folder per student whose Vagrantfile points at its
host (labs.py) -> up, reach through the host, down (run.py).
"""
