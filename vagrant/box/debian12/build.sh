#!/usr/bin/env bash
# Build a small vagrant-libvirt box from Debian 12 packages, with no download
# other than the Debian mirror: debootstrap a minimal root file system, make it an
# ext4 image without mounting anything, and boot it with the kernel shipped
# beside the image (direct kernel boot, so no boot loader).
#
# usage: build.sh OUT.box [DEB_CACHE_DIR [VARIANT]]
#   OUT.box        the box file to write (replaced only when the build succeeds)
#   DEB_CACHE_DIR  keep downloaded .deb files here to make rebuilds faster
#   VARIANT        a file in variants/ that changes the box (centos7-quirks: behave
#                  like CentOS 7 where labs break; see that file)
# environment: KUBELAB_DEBIAN_MIRROR (default http://deb.debian.org/debian)
# Needs root (debootstrap, chroot), debootstrap, mke2fs, qemu-img and Debian's
# vagrant package (for Vagrant's insecure public key).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:?usage: build.sh OUT.box [DEB_CACHE_DIR [VARIANT]]}
deb_cache=${2:-}
variant=${3:-}
mirror=${KUBELAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
# kmod, procps and curl are used by the provisioning stages run on the VMs.
packages=systemd-sysv,udev,dbus,openssh-server,linux-image-cloud-amd64,sudo,iproute2
packages+=,iputils-ping,netbase,rsync,zstd,kmod,procps,curl,ca-certificates
if [[ -n $variant ]]; then
  [[ -f $here/variants/$variant.sh ]] || { echo "build.sh: no variant $variant in $here/variants" >&2; exit 1; }
  # shellcheck source=/dev/null
  source "$here/variants/$variant.sh"
fi
# Fixed file system ids make two builds of the same packages alike.
fs_uuid=6b75be6c-ab00-4b1d-9d3e-000000000001

if [[ $(id -u) -ne 0 ]]; then
  echo "build.sh: must run as root (debootstrap and chroot need it)" >&2
  exit 1
fi

vagrant_key=$(find /usr/share/rubygems-integration/all/gems /usr/lib/ruby/vendor_ruby \
  /opt/vagrant/embedded/gems -path '*/keys/vagrant.pub' -print -quit 2>/dev/null || true)
if [[ -z $vagrant_key ]]; then
  echo "build.sh: Vagrant's insecure public key (keys/vagrant.pub) not found;" \
    "install the vagrant package" >&2
  exit 1
fi

out_dir=$(cd "$(dirname "$out")" && pwd)
work=$(mktemp -d "$out_dir/.box-build.XXXXXX")
rootfs=$work/rootfs

cleanup() {
  # debootstrap mounts /proc and /sys in the target; a build stopped halfway may
  # leave them, and removing the tree through a mount would be a disaster.
  local mnt
  awk -v root="$rootfs" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r mnt; do umount -l "$mnt" || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

step() { printf '==> %s (%ss)\n' "$1" "$SECONDS"; }

step "debootstrap $suite (minbase) from $mirror"
cache_args=()
if [[ -n $deb_cache ]]; then
  mkdir -p "$deb_cache"
  cache_args=(--cache-dir="$(cd "$deb_cache" && pwd)")
fi
debootstrap --variant=minbase --include="$packages" "${cache_args[@]}" \
  "$suite" "$rootfs" "$mirror"

step "configure the guest"
cp -r "$here/rootfs/." "$rootfs/"
chmod 0440 "$rootfs/etc/sudoers.d/vagrant"
echo kubelab-box >"$rootfs/etc/hostname"
rm -f "$rootfs/etc/resolv.conf"

chroot "$rootfs" useradd --create-home --uid 1000 --user-group --shell /bin/bash vagrant
install -d -m 0700 -o 1000 -g 1000 "$rootfs/home/vagrant/.ssh"
install -m 0600 -o 1000 -g 1000 "$vagrant_key" "$rootfs/home/vagrant/.ssh/authorized_keys"

if [[ -n $variant ]]; then
  variant_configure "$rootfs"
fi

systemctl --root="$rootfs" enable systemd-networkd.service ssh-hostkey-ed25519.service
# Each of these adds tens of seconds to a boot under emulation, for nothing a
# short-lived lab VM needs.
timers=()
for unit in "$rootfs"/lib/systemd/system/*.timer; do
  timers+=("$(basename "$unit")")
done
systemctl --root="$rootfs" mask e2scrub_reap.service \
  systemd-networkd-wait-online.service "${timers[@]}"

# Every VM must get its own identity at first boot.
rm -f "$rootfs"/etc/ssh/ssh_host_*
: >"$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id"

chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old

step "copy out the kernel and initrd"
kernels=("$rootfs"/boot/vmlinuz-*)
initrds=("$rootfs"/boot/initrd.img-*)
if [[ ${#kernels[@]} -ne 1 || ${#initrds[@]} -ne 1 ]]; then
  echo "build.sh: expected one kernel and one initrd in /boot" >&2
  exit 1
fi
cp "${kernels[0]}" "$work/vmlinuz"
cp "${initrds[0]}" "$work/initrd.img"
chmod 0644 "$work/vmlinuz" "$work/initrd.img"

step "make the disk image"
mke2fs -q -t ext4 -L root -U "$fs_uuid" -E "hash_seed=$fs_uuid,root_owner=0:0" \
  -d "$rootfs" "$work/root.raw" 4G
qemu-img convert -c -O qcow2 "$work/root.raw" "$work/box.img"

step "pack the box"
cp "$here/metadata.json" "$here/Vagrantfile" "$work/"
tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner \
  -cf "$work/out.box" metadata.json Vagrantfile box.img vmlinuz initrd.img
mv "$work/out.box" "$out"
step "wrote $out ($(du -h "$out" | cut -f1))"
