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
# kubelet's secure port (manual 001): the API server reaches kubelets there.
KUBELET_PORT = 10250
# Each component's /healthz port (manual 001): the secure port where a component has
# both; kubelet and kube-proxy answer on their plain health ports, on loopback. The hard
# way's units bind them; verify's components check curls them.
HEALTH_PORTS = {
    "kube-apiserver": API_PORT,
    "kube-controller-manager": 10257,
    "kube-scheduler": 10259,
    "kubelet": 10248,
    "kube-proxy": 10256,
}

# Where the hard way keeps its files on a VM: the stages write them, verify reads them.
# The release binaries, their settings and the nodes' CA copy live under manual 004's
# /opt/kubernetes; the stages, the units and exercises 5-6's manuals print these names.
KUBE_DIR = "/opt/kubernetes"
STATE_DIR = "/var/lib/kubelab"
GUEST_PATHS = {
    "kube_dir": KUBE_DIR,
    "kube_bin_dir": f"{KUBE_DIR}/bin",  # kube-apiserver ... kubelet, kubectl, flanneld
    "kube_cfg_dir": f"{KUBE_DIR}/cfg",  # kubeconfigs, token.csv, flanneld's settings
    "kube_ssl_dir": f"{KUBE_DIR}/ssl",  # a node's copy of the Kubernetes CA
    "pki_dir": "/opt/kubelab/pki",  # the master's CA and Kubernetes certificates (pki stage)
    "etcd_ssl_dir": "/opt/etcd/ssl",  # each member's etcd certificates (etcd stage)
    "etcdctl": "/opt/etcd/bin/my_etcdctl",  # manual 004's etcdctl wrapper (etcd stage)
    "etcd_data_dir": "/var/lib/etcd/default.etcd",
    "etcd_config": "/opt/etcd/cfg/etcd",  # manual 004's etcd settings, the unit's EnvironmentFile
    # kubeadm's admin kubeconfig on the master: fetched into the lab folder, used by stages.
    "admin_kubeconfig": "/etc/kubernetes/admin.conf",
    # The hard way's, made by the control-plane stage (exercise 6); verify's kubectl uses it.
    "hardway_admin_kubeconfig": f"{KUBE_DIR}/cfg/admin.kubeconfig",
    # kubelab's own state on every VM: the stage runner's markers (verify's provenance
    # reads them back) and the local package folder it ships (the repos stage reads it).
    "state_dir": STATE_DIR,
    "markers_dir": f"{STATE_DIR}/stages",
    "local_repo_dir": f"{STATE_DIR}/local-repo",
}

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
        f"{API_PORT}/tcp", f"{ETCD_CLIENT_PORT}-{ETCD_PEER_PORT}/tcp", f"{KUBELET_PORT}/tcp",
        f"{HEALTH_PORTS['kube-controller-manager']}/tcp",
        f"{HEALTH_PORTS['kube-scheduler']}/tcp", "30000-32767/tcp", "8472/udp",
    ),
    "node": (f"{KUBELET_PORT}/tcp", "30000-32767/tcp", "8472/udp"),
}  # fmt: skip

# Seconds between two tries of a download the stages retry (common.sh's `retry`): a
# registry or CDN that drops one download has time to recover.
RETRY_DELAY = 10

# The lab folder's logs, relative to the lab folder.
LOG_DIR = "logs"
