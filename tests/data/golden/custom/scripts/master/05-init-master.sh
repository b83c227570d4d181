#!/usr/bin/env bash
# Rendered by kubelab 0.1.0: stage init-master for node master.
# Idempotent: running it again changes nothing that is already right.
set -euo pipefail

# shellcheck disable=SC2209  # a stage named like a command (join) is a plain string
KUBELAB_STAGE=init-master
KUBELAB_NODE=master

# printf's %(...)T with -1 (now) is bash 4.2's (CentOS 7): no `date` process per line.
log() { printf '[%(%H:%M:%S)T] [%s/%s] %s\n' -1 "$KUBELAB_NODE" "$KUBELAB_STAGE" "$*"; }
step() { log "step: $*"; }
die() { log "error: $*" >&2; exit 1; }

# 1 when the last put_file changed its file, else 0 (stages read it).
# shellcheck disable=SC2034
KUBELAB_CHANGED=0

# put_file PATH MODE [OWNER:GROUP] < content
# Writes stdin to PATH only when content, mode or owner differ, atomically (a
# temporary file beside it, then mv), and says which it did. Running a stage
# twice therefore changes no file the second time.
# shellcheck disable=SC2034  # KUBELAB_CHANGED is read by the stages
put_file() {
  local path=$1 mode=$2 owner=${3:-root:root} dir tmp want_mode
  dir=$(dirname "$path")
  [[ -d $dir ]] || mkdir -p "$dir"
  tmp=$(mktemp "$dir/.kubelab.XXXXXX")
  cat >"$tmp"
  want_mode=$(printf '%o' "$((8#$mode))")
  if [[ -f $path && ! -L $path ]] && cmp -s "$tmp" "$path" &&
    [[ $(stat -c '%a %U:%G' "$path") == "$want_mode $owner" ]]; then
    rm -f "$tmp"
    KUBELAB_CHANGED=0
    log "unchanged: $path"
  else
    chmod "$mode" "$tmp"
    chown "$owner" "$tmp"
    mv -f "$tmp" "$path"
    KUBELAB_CHANGED=1
    log "wrote: $path"
  fi
}

# put_dir PATH MODE: a directory that exists with that mode.
put_dir() {
  if [[ ! -d $1 ]]; then
    mkdir -p "$1"
    chmod "$2" "$1"
    log "created: $1"
  fi
}

# poll_until SECONDS COMMAND...: retry COMMAND every 5 s until it succeeds;
# rc 1 when SECONDS pass first.
poll_until() {
  local limit=$1 started=$SECONDS
  shift
  until "$@" >/dev/null 2>&1; do
    (( SECONDS - started >= limit )) && return 1
    sleep 5
  done
}

# wait_until SECONDS WHAT COMMAND...: poll_until, or an error naming WHAT.
wait_until() {
  local limit=$1 what=$2 started=$SECONDS
  shift 2
  log "waiting up to ${limit}s for $what"
  poll_until "$limit" "$@" || die "timed out after ${limit}s waiting for $what"
  log "ready after $((SECONDS - started))s: $what"
}

# retry TIMES WHAT COMMAND...: run COMMAND up to TIMES times, 10 s apart: a
# registry or CDN that drops one download does not fail the stage.
retry() {
  local times=$1 what=$2 attempt=1
  shift 2
  until "$@"; do
    (( attempt >= times )) && die "$what failed $times times"
    log "$what failed (attempt $attempt of $times); again in 10s"
    sleep 10
    attempt=$((attempt + 1))
  done
}

# This node's hostname, as the lab plan and kubeadm name it.
# shellcheck disable=SC2034
KUBELAB_HOSTNAME=master-s2024-017

# service_on UNIT: enabled at boot and running now.
service_on() {
  if systemctl is-enabled --quiet "$1" && systemctl is-active --quiet "$1"; then
    log "already enabled and running: $1"
  else
    systemctl enable --now "$1"
    log "enabled and started: $1"
  fi
}

# service_off UNIT: disabled at boot and stopped now.
service_off() {
  if systemctl is-enabled --quiet "$1" || systemctl is-active --quiet "$1"; then
    systemctl disable --now "$1"
    log "stopped and disabled: $1"
  else
    log "already off: $1"
  fi
}
# kubeadm_reset: undo a kubeadm init or join that stopped halfway, plus what
# `kubeadm reset` leaves behind by design (it says so): the CNI configuration
# and the copies of the admin kubeconfig.
kubeadm_reset() {
  kubeadm reset -f --cri-socket unix:///run/cri-dockerd.sock
  if [[ -d /etc/cni/net.d ]]; then
    find /etc/cni/net.d -mindepth 1 -delete
  fi
  rm -f /root/.kube/config /home/vagrant/.kube/config
  log "reset: kubeadm's state, /etc/cni/net.d and the kubeconfig copies are gone"
}
export KUBECONFIG=/etc/kubernetes/admin.conf
kubernetes_version=v1.30.14
master_ip=10.10.0.10
pod_cidr=172.20.0.0/16
flannel_version=v0.26.7

step "kubeadm config: /etc/kubernetes/kubeadm-config.yaml"
put_file /etc/kubernetes/kubeadm-config.yaml 0600 <<'KUBELAB_EOF'
# Written by kubelab: `kubeadm init --config` for the lab's master.
# The manuals pass these as flags (--apiserver-advertise-address,
# --pod-network-cidr, --kubernetes-version, --image-repository, --token-ttl);
# one file keeps them together and lets kubelet's cgroup driver be set too.
apiVersion: "kubeadm.k8s.io/v1beta3"
kind: InitConfiguration
bootstrapTokens:
  # Short-lived: the nodes join with a fresh token the host asks for at join time.
  - ttl: "1h0m0s"
    groups: ["system:bootstrappers:kubeadm:default-node-token"]
    usages: ["signing", "authentication"]
localAPIEndpoint:
  advertiseAddress: "10.10.0.10"
  bindPort: 6443
nodeRegistration:
  name: "master-s2024-017"
  criSocket: "unix:///run/cri-dockerd.sock"
---
apiVersion: "kubeadm.k8s.io/v1beta3"
kind: ClusterConfiguration
kubernetesVersion: "v1.30.14"
imageRepository: "registry.aliyuncs.com/google_containers"
networking:
  podSubnet: "172.20.0.0/16"
  serviceSubnet: "172.21.0.0/16"
  dnsDomain: "cluster.local"
apiServer:
  certSANs: ["10.10.0.10", "master-s2024-017"]
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The runtime uses the systemd cgroup driver; kubelet must use the same.
cgroupDriver: systemd
---
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: "ipvs"
KUBELAB_EOF

# Done is what a working control plane has, not a file: kubeadm writes
# admin.conf in its kubeconfig phase, long before the API server is up and the
# upload-config, bootstrap-token and addon phases run.
init_complete() {
  [[ -f $KUBECONFIG && -f /etc/kubernetes/manifests/kube-apiserver.yaml ]] || return 1
  # After a reboot the API server takes a while to come back.
  poll_until 180 kubectl get --raw /readyz || return 1
  kubectl -n kube-public get configmap cluster-info &&
    kubectl -n kube-system get configmap kubeadm-config &&
    kubectl -n kube-system get daemonset kube-proxy &&
    kubectl -n kube-system get deployment coredns
}

step "kubeadm init (Kubernetes $kubernetes_version, advertise $master_ip, pods $pod_cidr)"
if init_complete >/dev/null 2>&1; then
  log "already initialised: the API server answers and has cluster-info, kubeadm-config, kube-proxy and CoreDNS"
else
  if [[ -e $KUBECONFIG || -e /etc/kubernetes/manifests/kube-apiserver.yaml || -e /etc/kubernetes/pki/ca.crt ]]; then
    log "an earlier kubeadm init stopped halfway (files, but no working control plane): resetting"
    kubeadm_reset
  fi
  kubeadm init --config /etc/kubernetes/kubeadm-config.yaml
fi

step "kubeconfig for root and the vagrant user (~/.kube/config)"
put_file /root/.kube/config 0600 <"$KUBECONFIG"
if id vagrant >/dev/null 2>&1; then
  put_dir /home/vagrant/.kube 0700
  chown vagrant:vagrant /home/vagrant/.kube
  put_file /home/vagrant/.kube/config 0600 vagrant:vagrant <"$KUBECONFIG"
fi

wait_until 300 "the API server" kubectl get --raw /readyz

step "flannel $flannel_version (pod network $pod_cidr, interface eth1)"
put_file /etc/kubernetes/kubelab/kube-flannel.yml 0644 <<'KUBELAB_EOF'
# Written by kubelab: flannel (vxlan) for the lab, in the layout of flannel's
# own kube-flannel.yml for this release. Three lab-specific values: the pod
# network (kubeadm's podSubnet), the images (the mirror profile's registry) and
# --iface=eth1, the private network: eth0 is Vagrant's NAT interface, the same
# address on every VM, and vxlan over it would connect no node to another.
apiVersion: v1
kind: Namespace
metadata:
  name: kube-flannel
  labels:
    k8s-app: flannel
    # flannel runs privileged host-network pods.
    pod-security.kubernetes.io/enforce: privileged
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: flannel
  namespace: kube-flannel
  labels:
    k8s-app: flannel
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: flannel
  labels:
    k8s-app: flannel
rules:
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get"]
  - apiGroups: [""]
    resources: ["nodes"]
    verbs: ["get", "list", "watch"]
  - apiGroups: [""]
    resources: ["nodes/status"]
    verbs: ["patch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: flannel
  labels:
    k8s-app: flannel
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: flannel
subjects:
  - kind: ServiceAccount
    name: flannel
    namespace: kube-flannel
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: kube-flannel-cfg
  namespace: kube-flannel
  labels:
    app: flannel
    k8s-app: flannel
    tier: node
data:
  cni-conf.json: |
    {
      "name": "cbr0",
      "cniVersion": "0.3.1",
      "plugins": [
        {"type": "flannel", "delegate": {"hairpinMode": true, "isDefaultGateway": true}},
        {"type": "portmap", "capabilities": {"portMappings": true}}
      ]
    }
  net-conf.json: |
    {
      "Network": "172.20.0.0/16",
      "Backend": {"Type": "vxlan"}
    }
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kube-flannel-ds
  namespace: kube-flannel
  labels:
    app: flannel
    k8s-app: flannel
    tier: node
spec:
  selector:
    matchLabels:
      app: flannel
      k8s-app: flannel
  template:
    metadata:
      labels:
        app: flannel
        k8s-app: flannel
        tier: node
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
              - matchExpressions:
                  - key: kubernetes.io/os
                    operator: In
                    values: ["linux"]
      hostNetwork: true
      priorityClassName: system-node-critical
      serviceAccountName: flannel
      tolerations:
        # Every node, the tainted master included: pods need the network there too.
        - operator: Exists
          effect: NoSchedule
      initContainers:
        - name: install-cni-plugin
          image: "ghcr.m.daocloud.io/flannel-io/flannel-cni-plugin:v1.6.2-flannel1"
          command: ["cp"]
          args: ["-f", "/flannel", "/opt/cni/bin/flannel"]
          volumeMounts:
            - name: cni-plugin
              mountPath: /opt/cni/bin
        - name: install-cni
          image: "ghcr.m.daocloud.io/flannel-io/flannel:v0.26.7"
          command: ["cp"]
          args: ["-f", "/etc/kube-flannel/cni-conf.json", "/etc/cni/net.d/10-flannel.conflist"]
          volumeMounts:
            - name: cni
              mountPath: /etc/cni/net.d
            - name: flannel-cfg
              mountPath: /etc/kube-flannel/
      containers:
        - name: kube-flannel
          image: "ghcr.m.daocloud.io/flannel-io/flannel:v0.26.7"
          command: ["/opt/bin/flanneld"]
          args: ["--ip-masq", "--kube-subnet-mgr", "--iface=eth1"]
          resources:
            requests:
              cpu: 100m
              memory: 50Mi
          securityContext:
            privileged: false
            capabilities:
              add: ["NET_ADMIN", "NET_RAW"]
          env:
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: POD_NAMESPACE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.namespace
            - name: EVENT_QUEUE_DEPTH
              value: "5000"
          volumeMounts:
            - name: run
              mountPath: /run/flannel
            - name: flannel-cfg
              mountPath: /etc/kube-flannel/
            - name: xtables-lock
              mountPath: /run/xtables.lock
      volumes:
        - name: run
          hostPath:
            path: /run/flannel
        - name: cni-plugin
          hostPath:
            path: /opt/cni/bin
        - name: cni
          hostPath:
            path: /etc/cni/net.d
        - name: flannel-cfg
          configMap:
            name: kube-flannel-cfg
        - name: xtables-lock
          hostPath:
            path: /run/xtables.lock
            type: FileOrCreate
KUBELAB_EOF
if (( KUBELAB_CHANGED )) || ! kubectl -n kube-flannel get daemonset kube-flannel-ds >/dev/null 2>&1; then
  kubectl apply -f /etc/kubernetes/kubelab/kube-flannel.yml
else
  log "flannel already applied"
fi

step "the master Ready (deadline 600s)"
wait_until 600 "node $KUBELAB_HOSTNAME Ready" \
  kubectl wait --for=condition=Ready "node/$KUBELAB_HOSTNAME" --timeout=10s
log "control plane ready on $KUBELAB_HOSTNAME"
