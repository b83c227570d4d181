#!/usr/bin/env bash
# Rendered by kubelab 0.1.0: stage kube-packages for node node3.
# Idempotent: running it again changes nothing that is already right.
set -euo pipefail

# shellcheck disable=SC2209  # a stage named like a command (join) is a plain string
KUBELAB_STAGE=kube-packages
KUBELAB_NODE=node3

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
# The folder the host ships mirror.local_repo into (kubelab/provision.py).
# shellcheck disable=SC2034
KUBELAB_LOCAL_REPO=/var/lib/kubelab/local-repo
# pkg_version NAME: the installed version (Debian version), rc 1 when absent.
pkg_version() {
  local line
  # shellcheck disable=SC2016  # dpkg-query's own ${field} syntax
  line=$(dpkg-query -W -f='${db:Status-Abbrev}|${Version}' "$1" 2>/dev/null) || return 1
  [[ $line == ii* ]] || return 1
  printf '%s' "${line#*|}"
}
pkg_installed() { pkg_version "$1" >/dev/null; }

export DEBIAN_FRONTEND=noninteractive
KUBELAB_APT_FRESH=0
# pkg_refresh: apt-get update, once per run, before the first install.
pkg_refresh() {
  if (( KUBELAB_APT_FRESH == 0 )); then
    apt-get update -q
    KUBELAB_APT_FRESH=1
  fi
}

apt_install() {
  pkg_refresh
  apt-get install -y -q -o Dpkg::Options::=--force-confold --allow-downgrades \
    --allow-change-held-packages "$@"
}

# pkg_install NAME...: install the packages that are missing.
pkg_install() {
  local missing=() p
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  if [[ -z ${missing[*]:-} ]]; then
    log "already installed: $*"
    return 0
  fi
  log "installing: ${missing[*]}"
  apt_install "${missing[@]}"
}

# pkg_install_exact NAME=VERSION...: each package at exactly VERSION (the full
# Debian version).
pkg_install_exact() {
  local want=() spec name version
  for spec in "$@"; do
    name=${spec%%=*} version=${spec#*=}
    [[ $(pkg_version "$name") == "$version" ]] || want+=("$spec")
  done
  if [[ -z ${want[*]:-} ]]; then
    log "already at the pinned versions: $*"
    return 0
  fi
  log "installing pinned: ${want[*]}"
  apt_install "${want[@]}"
}

# pkg_hold NAME...: keep apt from upgrading them.
pkg_hold() {
  local held missing=() p
  held=$(apt-mark showhold)
  for p in "$@"; do grep -qx -- "$p" <<<"$held" || missing+=("$p"); done
  if [[ -z ${missing[*]:-} ]]; then
    log "already held: $*"
    return 0
  fi
  apt-mark hold "${missing[@]}"
}

# fetch_key URL FILE: an ASCII-armoured repository key, fetched once. apt reads
# armoured keys named *.asc in signed-by=, so no gpg is needed.
fetch_key() {
  if [[ -s $2 ]]; then
    log "unchanged: $2"
    return 0
  fi
  put_dir "$(dirname "$2")" 0755
  curl -fsSL --retry 3 "$1" -o "$2.tmp"
  chmod 0644 "$2.tmp"
  mv -f "$2.tmp" "$2"
  log "wrote: $2 (from $1)"
}

kube_version=1.30.14-1.1
step "kubelet, kubeadm, kubectl pinned to $kube_version"
pkg_install_exact "kubelet=$kube_version" "kubeadm=$kube_version" "kubectl=$kube_version"
pkg_hold kubelet kubeadm kubectl

step "tools kubeadm's preflight looks for (socat, conntrack, ebtables, ethtool, iptables, ip)"
pkg_install socat conntrack ebtables ethtool iptables iproute2

node_ip=10.10.1.13
step "kubelet's node IP: $node_ip on the lab network (not the NAT address)"
put_file /etc/default/kubelet 0644 <<'KUBELAB_EOF'
# Written by kubelab: kubelet registers this node with its private address on
# the lab network. Without it, every node would report the NAT address of
# eth0, which is the same on all VMs, and pods could not reach each other.
KUBELET_EXTRA_ARGS=--node-ip=10.10.1.13
KUBELAB_EOF
if (( KUBELAB_CHANGED )) && systemctl is-active --quiet kubelet; then
  systemctl restart kubelet
  log "restarted kubelet for its new node IP"
fi
# Enabled only: kubeadm init/join starts it with the configuration it writes.
if systemctl is-enabled --quiet kubelet; then
  log "kubelet already enabled"
else
  systemctl enable kubelet
fi
log "kubernetes packages ready"
