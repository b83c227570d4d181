#!/usr/bin/env bash
# Rendered by kubelab 0.1.0: stage join for node node1.
# Idempotent: running it again changes nothing that is already right.
set -euo pipefail

# shellcheck disable=SC2209  # a stage named like a command (join) is a plain string
KUBELAB_STAGE=join
KUBELAB_NODE=node1

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
KUBELAB_HOSTNAME=node1-s2024-017

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
api_endpoint=10.10.0.10:6443
join_config=/etc/kubernetes/kubeadm-join.yaml

# Joined is what the API server says, not a file: kubeadm writes ca.crt and
# bootstrap-kubelet.conf in kubelet-start, before the node is registered.
joined() {
  [[ -f /etc/kubernetes/kubelet.conf ]] &&
    kubectl --kubeconfig /etc/kubernetes/kubelet.conf get node "$KUBELAB_HOSTNAME"
}

step "join the cluster at $api_endpoint as $KUBELAB_HOSTNAME"
if joined >/dev/null 2>&1; then
  log "already joined: the API server knows $KUBELAB_HOSTNAME"
else
  if [[ -e /etc/kubernetes/kubelet.conf || -e /etc/kubernetes/bootstrap-kubelet.conf || -e /etc/kubernetes/pki/ca.crt ]]; then
    # kubeadm join's preflight refuses these leftovers; the host has already
    # deleted the half-registered Node object on the master.
    log "an earlier kubeadm join stopped halfway (files, but not a node of the cluster): resetting"
    kubeadm_reset
  fi
  join_command=""
  IFS= read -r join_command || true
  [[ -n $join_command ]] ||
    die "no join command on stdin: the host passes the master's 'kubeadm token create --print-join-command'"
  # Taken apart and checked word by word, never evaluated: it arrives over the
  # network and is run as root.
  join_pattern='^kubeadm join ([A-Za-z0-9.:-]+) --token ([a-z0-9]{6}\.[a-z0-9]{16}) --discovery-token-ca-cert-hash (sha256:[a-f0-9]{64})[[:space:]]*$'
  if [[ ! $join_command =~ $join_pattern ]]; then
    die "the join command on stdin is not 'kubeadm join <host:port> --token <token> --discovery-token-ca-cert-hash sha256:<hash>'"
  fi
  endpoint=${BASH_REMATCH[1]} token=${BASH_REMATCH[2]} ca_hash=${BASH_REMATCH[3]}
  [[ $endpoint == "$api_endpoint" ]] ||
    die "the join command points at $endpoint, not the master's private address $api_endpoint"
  trap 'rm -f "$join_config"' EXIT
  put_file "$join_config" 0600 <<KUBELAB_EOF
# Written by kubelab for one "kubeadm join --config", then removed: it holds the
# bootstrap token, so it is 0600 and never passed as an argument. The endpoint,
# token and hash come from the join command the host fetched from the master.
apiVersion: "kubeadm.k8s.io/v1beta3"
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: "${endpoint}"
    token: "${token}"
    caCertHashes: ["${ca_hash}"]
nodeRegistration:
  name: "${KUBELAB_HOSTNAME}"
  criSocket: "unix:///run/cri-dockerd.sock"
KUBELAB_EOF
  kubeadm join --config "$join_config"
  rm -f "$join_config"
fi
wait_until 120 "kubelet running" systemctl is-active --quiet kubelet
log "joined: $KUBELAB_HOSTNAME"
