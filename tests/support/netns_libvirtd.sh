#!/usr/bin/env bash
# Start virtlogd and libvirtd with all their state in STATE_DIR.
# Run by NetnsLibvirt as `ip netns exec NAME unshare -m --propagation private`
# this script, so the daemons (and the bridges, dnsmasq and QEMU processes they
# start) live in a network namespace and a mount namespace of the test's own.
# The bind mounts are private to that mount namespace: the machine's own
# /etc/libvirt, /var/lib/libvirt, ... are neither read nor changed.
#
# usage: netns_libvirtd.sh STATE_DIR
set -euo pipefail

state=${1:?usage: netns_libvirtd.sh STATE_DIR}

mount --bind "$state/etc" /etc/libvirt
mount --bind "$state/lib" /var/lib/libvirt
mount --bind "$state/run" /run/libvirt
mount --bind "$state/log" /var/log/libvirt
mount --bind "$state/cache" /var/cache/libvirt

virtlogd -d -p /run/libvirt/virtlogd.pid
libvirtd -d -p /run/libvirt/libvirtd.pid
