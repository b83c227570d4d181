#!/usr/bin/env bash
# Rendered by kubelab 0.1.0: stage cluster-ready for node master.
# Idempotent: running it again changes nothing that is already right.
set -euo pipefail

# shellcheck disable=SC2209  # a stage named like a command (join) is a plain string
KUBELAB_STAGE=cluster-ready
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
KUBELAB_HOSTNAME=master

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
export KUBECONFIG=/etc/kubernetes/admin.conf

step "every node registered:" master node1 node2
LAB_NODES=(master node1 node2)

all_registered() {
  local node_name
  for node_name in "${LAB_NODES[@]}"; do
    kubectl get node "$node_name" >/dev/null 2>&1 || return 1
  done
}
# The deadlines add up to the stage's own (900 s in provision/catalog.yaml).
wait_until 300 "every node registered" all_registered

step "every node Ready (deadline 300s)"
wait_until 300 "all nodes Ready" kubectl wait --for=condition=Ready node --all --timeout=10s

step "flannel on every node and CoreDNS answering (deadline 150s each)"
wait_until 150 "the flannel DaemonSet" \
  kubectl -n kube-flannel rollout status daemonset/kube-flannel-ds --timeout=10s
wait_until 150 "CoreDNS" kubectl -n kube-system rollout status deployment/coredns --timeout=10s
log "cluster ready"
