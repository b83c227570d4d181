#!/usr/bin/env bash
# Rendered by kubelab 0.1.0: stage prepare for node node2.
# Idempotent: running it again changes nothing that is already right.
set -euo pipefail

# shellcheck disable=SC2209  # a stage named like a command (join) is a plain string
KUBELAB_STAGE=prepare
KUBELAB_NODE=node2

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
KUBELAB_HOSTNAME=node2-s2024-017

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

distro_archive=https://mirrors.aliyun.com/debian
distro_suite='debian bookworm'
step "distribution archive: $distro_archive ($distro_suite)"
# The archive lines live in one file; a deb822 copy of them would duplicate them.
deb822_sources=/etc/apt/sources.list.d/debian.sources
if [[ -e $deb822_sources ]]; then
  mv -f "$deb822_sources" "$deb822_sources.kubelab-disabled"
  log "disabled: $deb822_sources (its archives are in /etc/apt/sources.list now)"
fi
put_file /etc/apt/sources.list 0644 <<'KUBELAB_EOF'
# Written by kubelab (aliyun profile).
deb https://mirrors.aliyun.com/debian bookworm main
deb https://mirrors.aliyun.com/debian bookworm-updates main
deb https://mirrors.aliyun.com/debian-security bookworm-security main
KUBELAB_EOF

step "hostname $KUBELAB_HOSTNAME (it carries the student ID, as manual 003 asks)"
if [[ $(hostname) == "$KUBELAB_HOSTNAME" ]]; then
  log "hostname already $KUBELAB_HOSTNAME"
else
  hostnamectl set-hostname "$KUBELAB_HOSTNAME"
  log "hostname set to $KUBELAB_HOSTNAME"
fi

step "/etc/hosts: every lab node by name, and no loopback line for a lab name"
# Vagrant maps the VM's own hostname to 127.0.x.1; kubelet and etcd would then
# resolve this node to loopback. Lab names leave every loopback line (a line
# left with no name goes), and one managed block lists all nodes.
hosts_block=$(cat <<'KUBELAB_EOF'
# BEGIN kubelab: the lab's nodes by name (kubelab rewrites these lines)
10.10.0.10 master-s2024-017 master
10.10.0.11 node1-s2024-017 node1
10.10.0.12 node2-s2024-017 node2
10.10.1.13 node3-s2024-017 node3
# END kubelab
KUBELAB_EOF
)
new_hosts=$(awk -v names='master-s2024-017 master node1-s2024-017 node1 node2-s2024-017 node2 node3-s2024-017 node3' '
  BEGIN { n = split(names, list, " "); for (i = 1; i <= n; i++) lab[list[i]] = 1 }
  /^# BEGIN kubelab/ { skip = 1; next }
  /^# END kubelab/ { skip = 0; next }
  skip { next }
  $1 ~ /^127\./ || $1 == "::1" {
    out = $1; kept = 0; dropped = 0
    for (i = 2; i <= NF; i++) {
      if ($i ~ /^#/) { for (j = i; j <= NF; j++) out = out " " $j; break }
      if ($i in lab) { dropped++ } else { out = out " " $i; kept++ }
    }
    if (dropped == 0) { print; next }
    if (kept > 0) print out
    next
  }
  { print }
' /etc/hosts)
printf '%s\n%s\n' "$new_hosts" "$hosts_block" | put_file /etc/hosts 0644

step "time sync: chrony (kubernetes needs the nodes' clocks to agree)"
pkg_install chrony
service_on chrony

step "firewall: firewalld on, with the ports of the course chapter open (kubernetes.firewall: open-ports)"
pkg_install firewalld
service_on firewalld
firewall_changed=0
for port in 10250/tcp 30000-32767/tcp 8472/udp ; do
  if firewall-cmd --permanent --query-port="$port" >/dev/null 2>&1; then
    log "port already open: $port"
  else
    firewall-cmd --permanent --add-port="$port" >/dev/null
    log "opened port $port"
    firewall_changed=1
  fi
done
# Pod and Service traffic is routed through this node (flannel, kube-proxy):
# firewalld's zones would reject it, so both ranges are trusted sources.
for source in 172.20.0.0/16 172.21.0.0/16; do
  if firewall-cmd --permanent --zone=trusted --query-source="$source" >/dev/null 2>&1; then
    log "already trusted: $source"
  else
    firewall-cmd --permanent --zone=trusted --add-source="$source" >/dev/null
    log "trusted source $source"
    firewall_changed=1
  fi
done
if (( firewall_changed )); then
  firewall-cmd --reload >/dev/null
  log "firewalld reloaded"
fi

step "swap: off now and in /etc/fstab (kubelet refuses to run with swap)"
swapoff -a
new_fstab=$(awk '!/^[[:space:]]*#/ && $3 == "swap" { print "# " $0; next } { print }' /etc/fstab)
printf '%s\n' "$new_fstab" | put_file /etc/fstab 0644

step "kernel modules overlay and br_netfilter: loaded now and at every boot"
put_file /etc/modules-load.d/k8s.conf 0644 <<'KUBELAB_EOF'
# Written by kubelab: container runtimes need overlay; bridged pod traffic must
# pass iptables (br_netfilter) for Services and flannel to work.
overlay
br_netfilter
KUBELAB_EOF
for module in overlay br_netfilter; do
  modprobe -- "$module"
done

step "sysctls: bridged traffic through iptables, IPv4 forwarding; now and at every boot"
put_file /etc/sysctl.d/k8s.conf 0644 <<'KUBELAB_EOF'
# Written by kubelab: kubeadm's preflight requires these (bridged traffic seen
# by iptables, IPv4 forwarding between pods and nodes).
net.bridge.bridge-nf-call-iptables  = 1
net.bridge.bridge-nf-call-ip6tables = 1
net.ipv4.ip_forward                 = 1
KUBELAB_EOF
# RHEL 7's kernel alone has fs.may_detach_mounts (0 by default): without it a
# container's mounts pin the pod and it stays Terminating (kubespray sets it too).
# Written only where the key exists: elsewhere `sysctl --system` would fail on it.
if sysctl -n fs.may_detach_mounts >/dev/null 2>&1; then
  put_file /etc/sysctl.d/k8s-may-detach-mounts.conf 0644 <<'KUBELAB_EOF'
# Written by kubelab on kernels that have the key (RHEL/CentOS 7): lets a mount
# that a container still holds be detached, so a pod can end (not stay Terminating).
fs.may_detach_mounts = 1
KUBELAB_EOF
fi
sysctl --system >/dev/null

step "IPVS for kube-proxy (kubernetes.proxy_mode: ipvs): ipset, ipvsadm and the ip_vs modules"
pkg_install ipset ipvsadm
put_file /etc/modules-load.d/ipvs.conf 0644 <<'KUBELAB_EOF'
# Written by kubelab: kube-proxy in ipvs mode needs these at boot.
ip_vs
ip_vs_rr
ip_vs_wrr
ip_vs_sh
nf_conntrack
KUBELAB_EOF
while read -r module; do
  [[ -z $module || $module == \#* ]] && continue
  modprobe -- "$module"
done </etc/modules-load.d/ipvs.conf

step "check: hostname, name resolution of every node, sysctls"
[[ $(hostname) == "$KUBELAB_HOSTNAME" ]] || die "hostname is $(hostname), expected $KUBELAB_HOSTNAME"
# IPv4, as kubelet and kubeadm resolve: `getent hosts` asks for IPv6 first, and
# CentOS 7's nss-myhostname (hosts: files dns myhostname) answers the VM's own
# name with an IPv6 address before /etc/hosts' IPv4 line is ever consulted.
resolved=$(getent ahostsv4 master-s2024-017 | awk '{ print $1; exit }')
[[ $resolved == 10.10.0.10 ]] ||
  die master-s2024-017 "resolves to '${resolved:-nothing}', expected" 10.10.0.10
resolved=$(getent ahostsv4 node1-s2024-017 | awk '{ print $1; exit }')
[[ $resolved == 10.10.0.11 ]] ||
  die node1-s2024-017 "resolves to '${resolved:-nothing}', expected" 10.10.0.11
resolved=$(getent ahostsv4 node2-s2024-017 | awk '{ print $1; exit }')
[[ $resolved == 10.10.0.12 ]] ||
  die node2-s2024-017 "resolves to '${resolved:-nothing}', expected" 10.10.0.12
resolved=$(getent ahostsv4 node3-s2024-017 | awk '{ print $1; exit }')
[[ $resolved == 10.10.1.13 ]] ||
  die node3-s2024-017 "resolves to '${resolved:-nothing}', expected" 10.10.1.13
for key in net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.ipv4.ip_forward; do
  [[ $(sysctl -n "$key") == 1 ]] || die "sysctl $key is $(sysctl -n "$key"), expected 1"
done
if [[ -f /etc/sysctl.d/k8s-may-detach-mounts.conf ]]; then
  [[ $(sysctl -n fs.may_detach_mounts) == 1 ]] ||
    die "sysctl fs.may_detach_mounts is $(sysctl -n fs.may_detach_mounts), expected 1"
fi
log "node preparation done"
