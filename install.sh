#!/usr/bin/env bash
# Install what kubelab needs on this host: Vagrant + vagrant-libvirt + libvirt
# + QEMU from the distribution, and a Python venv (.venv) with kubelab.
#   ./install.sh          what `invoke up` needs
#   ./install.sh --test   plus what the test suite needs (shellcheck, sshd,
#                         nginx, debootstrap, chromium, containerd, ...)
# Debian/Ubuntu (apt-get) and Fedora (dnf). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"

with_tests=false
[ "${1:-}" = "--test" ] && with_tests=true

# curl: `invoke verify` curls the NodePort from this machine when it is on the lab network.
run_packages=(vagrant vagrant-libvirt libvirt-daemon-system libvirt-dev pkg-config
  qemu-system-x86 qemu-utils gcc python3-venv python3-dev iproute2 rsync curl)
test_packages=(shellcheck openssh-server openssh-client nginx-light debootstrap
  chromium containerd ruby dpkg-dev strace e2fsprogs etcd-server etcd-client golang-cfssl)
fedora_packages=(vagrant vagrant-libvirt libvirt-daemon-kvm libvirt-devel pkgconf-pkg-config
  qemu-kvm qemu-img gcc python3-devel iproute rsync curl)
fedora_test_packages=(ShellCheck openssh-server openssh-clients nginx debootstrap
  chromium containerd ruby dpkg-dev strace e2fsprogs)

if command -v apt-get >/dev/null; then
  packages=("${run_packages[@]}")
  $with_tests && packages+=("${test_packages[@]}")
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${packages[@]}" >/dev/null
elif command -v dnf >/dev/null; then
  packages=("${fedora_packages[@]}")
  $with_tests && packages+=("${fedora_test_packages[@]}")
  dnf install -y -q "${packages[@]}"
else
  echo "install.sh: no apt-get or dnf here; install the packages listed in README.md by hand" >&2
  exit 1
fi

# Debian's policy-rc.d keeps packages from starting daemons in containers and
# chroots; start libvirtd where systemd is not running it.
if ! virsh -c qemu:///system version >/dev/null 2>&1; then
  if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    systemctl enable --now libvirtd >/dev/null 2>&1 || true
  fi
fi

# The venv's Python: PYTHON if set; else the distribution's /usr/bin/python3 when it
# is 3.11 or newer (the one python3-venv and python3-dev above are for, built with
# optimisation a plain source build such as pyenv's lacks: the README's figures give
# what it saves here); else python3 on PATH.
# An existing .venv is kept whatever it was made from.
python=${PYTHON:-}
if [ -z "$python" ]; then
  python=python3
  if /usr/bin/python3 -c 'import sys, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python=/usr/bin/python3
  fi
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/pip install -q --upgrade pip
if $with_tests; then
  .venv/bin/pip install -q -e '.[test]'
else
  .venv/bin/pip install -q -e .
fi
echo "kubelab installed: .venv/bin/invoke --list"
