# shellcheck shell=bash
# The centos7-quirks variant of the Debian 12 test box: where CentOS 7.8/7.9 differs
# in a way that breaks a lab, this box differs the same way, so the e2e tests meet
# what `invoke up` meets on the real guest. Sourced by build.sh (`build.sh OUT.box
# CACHE centos7-quirks`); variant_configure runs on the root file system after the
# box's own configuration.
#
# - a non-login SSH command gets PATH=/usr/local/bin:/usr/bin (CentOS 7's sshd), and
#   ip, ss and lsmod live only in /usr/sbin, as on CentOS 7;
# - sudo's secure_path is CentOS 7's /sbin:/bin:/usr/sbin:/usr/bin (no /usr/local);
# - nsswitch `hosts: files dns myhostname` with nss-myhostname installed: the VM's
#   own name answers with its IPv6 (link-local) address when IPv6 is asked first;
# - authorized_keys holds only Vagrant's RSA insecure key, as the centos/7 box
#   (2020) does: Vagrant 2.4's ed25519 insecure key is refused.
# What stays Debian: bash 5.2, systemd 252, glibc 2.36, apt, nftables-backed iptables
# and kernel 6.1 with cgroup v2 (the README lists what is not reproduced).

packages+=,libnss-myhostname

variant_configure() {
  local rootfs=$1 tool
  for tool in ip ss lsmod; do
    if [[ -e $rootfs/usr/bin/$tool && ! -L $rootfs/usr/bin/$tool ]]; then
      rm -f "$rootfs/usr/sbin/$tool"
      mv "$rootfs/usr/bin/$tool" "$rootfs/usr/sbin/$tool"
    fi
  done
  printf '%s\n' "# centos7-quirks: CentOS 7's sshd gives non-login commands this PATH." \
    "SetEnv PATH=/usr/local/bin:/usr/bin" >"$rootfs/etc/ssh/sshd_config.d/centos7-quirks.conf"
  printf '%s\n' "# centos7-quirks: CentOS 7's sudoers." \
    'Defaults secure_path = /sbin:/bin:/usr/sbin:/usr/bin' >"$rootfs/etc/sudoers.d/centos7-quirks"
  chmod 0440 "$rootfs/etc/sudoers.d/centos7-quirks"
  sed -i -E 's/^hosts:.*/hosts:      files dns myhostname/' "$rootfs/etc/nsswitch.conf"
  grep '^ssh-rsa ' "$rootfs/home/vagrant/.ssh/authorized_keys" >"$rootfs/home/vagrant/.ssh/authorized_keys.rsa"
  mv "$rootfs/home/vagrant/.ssh/authorized_keys.rsa" "$rootfs/home/vagrant/.ssh/authorized_keys"
  chown 1000:1000 "$rootfs/home/vagrant/.ssh/authorized_keys"
  chmod 0600 "$rootfs/home/vagrant/.ssh/authorized_keys"
}
