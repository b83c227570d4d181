#!/usr/bin/env bash
# Rendered by kubelab 0.1.0: stage prepare for node master.
# Idempotent: running it again changes nothing that is already right.
set -euo pipefail

# shellcheck disable=SC2209  # a stage named like a command (join) is a plain string
KUBELAB_STAGE=prepare
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
# The folder the host ships mirror.local_repo into (kubelab/provision.py).
# shellcheck disable=SC2034
KUBELAB_LOCAL_REPO=/var/lib/kubelab/local-repo
# pkg_version NAME: the installed version (rpm's VERSION), rc 1 when absent.
pkg_version() { rpm -q --qf '%{VERSION}' "$1" 2>/dev/null; }
pkg_installed() { rpm -q "$1" >/dev/null 2>&1; }

# pkg_refresh: yum reads repository metadata on demand; nothing to do.
pkg_refresh() { :; }

# pkg_install NAME...: install the packages that are missing.
pkg_install() {
  local missing=() p
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  if [[ -z ${missing[*]:-} ]]; then
    log "already installed: $*"
    return 0
  fi
  log "installing: ${missing[*]}"
  yum install -y "${missing[@]}"
}

# pkg_install_exact NAME=VERSION...: each package at exactly VERSION (rpm
# VERSION field, no release). Pinned packages live in repositories that
# exclude them, hence --disableexcludes for the one repository named "kubernetes".
pkg_install_exact() {
  local want=() spec name version
  for spec in "$@"; do
    name=${spec%%=*} version=${spec#*=}
    [[ $(pkg_version "$name") == "$version" ]] || want+=("$name-$version")
  done
  if [[ -z ${want[*]:-} ]]; then
    log "already at the pinned versions: $*"
    return 0
  fi
  log "installing pinned: ${want[*]}"
  yum install -y --disableexcludes=kubernetes "${want[@]}"
}

# pkg_hold NAME...: yum keeps them by the repository's exclude= line.
pkg_hold() { log "held by exclude= in their repository: $*"; }

step "CentOS 7.9.2009 base, updates and extras from the vault (mirrorlist off: CentOS 7 is end-of-life)"
put_file /etc/yum.repos.d/CentOS-Base.repo 0644 <<'KUBELAB_EOF'
# Written by kubelab: CentOS 7.9.2009 is end-of-life and its mirrorlist is gone,
# so the repositories point at the vault (official profile).
[base]
name=CentOS-7.9.2009 - Base
baseurl=https://vault.centos.org/7.9.2009/os/$basearch/
gpgcheck=1
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7
enabled=1

[updates]
name=CentOS-7.9.2009 - Updates
baseurl=https://vault.centos.org/7.9.2009/updates/$basearch/
gpgcheck=1
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7
enabled=1

[extras]
name=CentOS-7.9.2009 - Extras
baseurl=https://vault.centos.org/7.9.2009/extras/$basearch/
gpgcheck=1
gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7
enabled=1
KUBELAB_EOF
# The centos/7 2004.01 box is CentOS 7.8.2003 with a CA bundle from 2020: TLS to
# today's registries and CDNs (pkgs.k8s.io, download.docker.com, ghcr.io) fails
# to validate until ca-certificates comes from the vault, so it comes first.
step "ca-certificates from the vault, before anything is fetched over https"
yum update -y ca-certificates

step "hostname $KUBELAB_HOSTNAME"
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
192.168.56.10 master
192.168.56.11 node1
192.168.56.12 node2
# END kubelab
KUBELAB_EOF
)
new_hosts=$(awk -v names='master node1 node2' '
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
service_on chronyd

step "firewall: off (kubernetes.firewall: disabled, as manuals 002 and 003 do)"
if pkg_installed firewalld; then
  service_off firewalld
else
  log "firewalld is not installed"
fi
if command -v ufw >/dev/null 2>&1 && ufw status 2>/dev/null | grep -q '^Status: active'; then
  ufw disable
fi

step "SELinux: permissive now and in /etc/selinux/config (containers must read host files)"
if [[ $(getenforce) == Enforcing ]]; then
  setenforce 0
  log "SELinux set to permissive"
else
  log "SELinux already $(getenforce)"
fi
if [[ -f /etc/selinux/config ]]; then
  # enforcing becomes permissive; disabled stays disabled (no relabel at boot).
  new_selinux=$(sed -E 's/^SELINUX=enforcing([[:space:]]|$)/SELINUX=permissive\1/' /etc/selinux/config)
  printf '%s\n' "$new_selinux" | put_file /etc/selinux/config 0644
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

step "check: hostname, name resolution of every node, sysctls"
[[ $(hostname) == "$KUBELAB_HOSTNAME" ]] || die "hostname is $(hostname), expected $KUBELAB_HOSTNAME"
# IPv4, as kubelet and kubeadm resolve: `getent hosts` asks for IPv6 first, and
# CentOS 7's nss-myhostname (hosts: files dns myhostname) answers the VM's own
# name with an IPv6 address before /etc/hosts' IPv4 line is ever consulted.
resolved=$(getent ahostsv4 master | awk '{ print $1; exit }')
[[ $resolved == 192.168.56.10 ]] ||
  die master "resolves to '${resolved:-nothing}', expected" 192.168.56.10
resolved=$(getent ahostsv4 node1 | awk '{ print $1; exit }')
[[ $resolved == 192.168.56.11 ]] ||
  die node1 "resolves to '${resolved:-nothing}', expected" 192.168.56.11
resolved=$(getent ahostsv4 node2 | awk '{ print $1; exit }')
[[ $resolved == 192.168.56.12 ]] ||
  die node2 "resolves to '${resolved:-nothing}', expected" 192.168.56.12
for key in net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.ipv4.ip_forward; do
  [[ $(sysctl -n "$key") == 1 ]] || die "sysctl $key is $(sysctl -n "$key"), expected 1"
done
if [[ -f /etc/sysctl.d/k8s-may-detach-mounts.conf ]]; then
  [[ $(sysctl -n fs.may_detach_mounts) == 1 ]] ||
    die "sysctl fs.may_detach_mounts is $(sysctl -n fs.may_detach_mounts), expected 1"
fi
log "node preparation done"
