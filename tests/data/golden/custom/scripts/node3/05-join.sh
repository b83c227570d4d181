#!/usr/bin/env bash
# Rendered by kubelab 0.1.0: stage join for node node3.
# Idempotent: running it again changes nothing that is already right.
set -euo pipefail

# shellcheck disable=SC2209  # a stage named like a command (join) is a plain string
KUBELAB_STAGE=join
KUBELAB_NODE=node3

log() { printf '[%s] [%s/%s] %s\n' "$(date +%H:%M:%S)" "$KUBELAB_NODE" "$KUBELAB_STAGE" "$*"; }
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

# wait_until SECONDS WHAT COMMAND...: retry COMMAND every 5 s until it succeeds;
# give up with an error naming WHAT after SECONDS.
wait_until() {
  local limit=$1 what=$2 started=$SECONDS
  shift 2
  log "waiting up to ${limit}s for $what"
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - started >= limit )); then
      die "timed out after ${limit}s waiting for $what"
    fi
    sleep 5
  done
  log "ready after $((SECONDS - started))s: $what"
}

# This node's hostname, as the lab plan and kubeadm name it.
# shellcheck disable=SC2034
KUBELAB_HOSTNAME=node3-s2024-017

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
api_endpoint=10.10.0.10:6443

step "join the cluster at $api_endpoint as $KUBELAB_HOSTNAME"
if [[ -f /etc/kubernetes/kubelet.conf ]]; then
  log "already joined (/etc/kubernetes/kubelet.conf exists); kubeadm reset -f to join again"
else
  join_command=${KUBELAB_JOIN_COMMAND:-}
  [[ -n $join_command ]] ||
    die "KUBELAB_JOIN_COMMAND is empty: the host passes the master's 'kubeadm token create --print-join-command'"
  # Taken apart and checked word by word, never evaluated: it arrives over the
  # network and is run as root.
  join_pattern='^kubeadm join ([A-Za-z0-9.:-]+) --token ([a-z0-9]{6}\.[a-z0-9]{16}) --discovery-token-ca-cert-hash (sha256:[a-f0-9]{64})[[:space:]]*$'
  if [[ ! $join_command =~ $join_pattern ]]; then
    die "KUBELAB_JOIN_COMMAND is not 'kubeadm join <host:port> --token <token> --discovery-token-ca-cert-hash sha256:<hash>'"
  fi
  endpoint=${BASH_REMATCH[1]} token=${BASH_REMATCH[2]} ca_hash=${BASH_REMATCH[3]}
  [[ $endpoint == "$api_endpoint" ]] ||
    die "the join command points at $endpoint, not the master's private address $api_endpoint"
  kubeadm join "$endpoint" --token "$token" --discovery-token-ca-cert-hash "$ca_hash" \
    --node-name "$KUBELAB_HOSTNAME" --cri-socket unix:///run/cri-dockerd.sock
fi
wait_until 120 "kubelet running" systemctl is-active --quiet kubelet
log "joined: $KUBELAB_HOSTNAME"
