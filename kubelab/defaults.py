"""The constants every layer shares, each written once.

Facts of the lab that no config sets: the API server's port, the interfaces
vagrant-libvirt gives a VM, verify's own namespace and NodePort. The LabSpec
(kubelab/plan.py) carries them to the templates and to verify; graders' defaults
live beside them so the two sets can be read side by side.
"""

from __future__ import annotations

# kube-apiserver's secure port (kubeadm's bindPort; what a node joins).
API_PORT = 6443
# vagrant-libvirt gives every VM its management (NAT, DHCP) network on eth0 and the
# lab's private network on eth1: kubelet must register, and flannel must route, on eth1.
PRIVATE_INTERFACE = "eth1"
MANAGEMENT_CIDR = "192.168.121.0/24"
# etcd's client and peer ports (manual 001), where the hard way's members listen.
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380

# verify's own nginx: its namespace (deleted at the end of every run) and its NodePort.
VERIFY_NAMESPACE = "kubelab-verify"
VERIFY_NODEPORT = 30080
# Live grading deploys its own nginx into a student's cluster: a namespace and NodePort
# of its own, so a grader's run never collides with the student's own `invoke verify`.
GRADE_NAMESPACE = "kubelab-grade"
GRADE_NODEPORT = 30099

# The ports a VM opens when firewalld stays on (manual 002, "1.开放端口"): the control
# plane's, the NodePort range (verify curls it on every VM, the master too) and flannel's
# vxlan. The prepare stage opens them; verify's firewall check asks for them.
FIREWALL_PORTS = {
    "master": (
        f"{API_PORT}/tcp", f"{ETCD_CLIENT_PORT}-{ETCD_PEER_PORT}/tcp", "10250/tcp",
        "10257/tcp", "10259/tcp", "30000-32767/tcp", "8472/udp",
    ),
    "node": ("10250/tcp", "30000-32767/tcp", "8472/udp"),
}  # fmt: skip

# The lab folder's logs, relative to the lab folder.
LOG_DIR = "logs"
