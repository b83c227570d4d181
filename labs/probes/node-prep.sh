# What exercise 1 (node preparation) asks of a node, printed as key=value lines.
# Run by `invoke verify` as root (sudo sh -c SCRIPT node-prep NAME...): the NAMEs are
# the lab's hostnames, each resolved here the way kubelet and kubeadm resolve them.
# Decisions are made by kubelab/verify/checks.py over this output, not here.
# Must hold on CentOS 7 (bash 4.2, systemd 219, glibc 2.17): absolute paths for
# what lives in /usr/sbin, `getent ahostsv4` for IPv4 resolution.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH LC_ALL=C

echo "hostname=$(hostname)"

# Swap: active devices now, and uncommented swap lines in fstab (used at boot).
echo "swap_active=$(tail -n +2 /proc/swaps | wc -l)"
echo "fstab_swap=$(awk '!/^[[:space:]]*#/ && $3 == "swap"' /etc/fstab 2>/dev/null | wc -l)"

# Kernel modules: loaded now (/sys/module holds built-ins too), and listed for boot.
for module in overlay br_netfilter; do
    if [ -d "/sys/module/$module" ]; then echo "module_now.$module=1"; else echo "module_now.$module=0"; fi
    listed=$(cat /etc/modules-load.d/*.conf /run/modules-load.d/*.conf \
        /usr/lib/modules-load.d/*.conf /etc/modules 2>/dev/null \
        | sed 's/#.*//' | awk -v m="$module" '$1 == m' | wc -l)
    echo "module_boot.$module=$listed"
done

# Sysctls: the running value, and the last value the boot-time files assign
# (systemd-sysctl reads these folders in this order; /etc/sysctl.conf comes last).
for key in net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.ipv4.ip_forward; do
    file=/proc/sys/$(echo "$key" | tr . /)
    if [ -r "$file" ]; then echo "sysctl_now.$key=$(cat "$file")"; else echo "sysctl_now.$key=absent"; fi
    boot=$(cat /usr/lib/sysctl.d/*.conf /run/sysctl.d/*.conf /etc/sysctl.d/*.conf \
        /etc/sysctl.conf 2>/dev/null | sed 's/[#;].*//' | tr -d ' \t' \
        | awk -F= -v k="$key" '$1 == k {v = $2} END {print v}')
    echo "sysctl_boot.$key=${boot:-unset}"
done

# SELinux: the mode now and the one the next boot starts in.
if [ -x /usr/sbin/getenforce ]; then
    echo "selinux_now=$(/usr/sbin/getenforce | tr '[:upper:]' '[:lower:]')"
else
    echo "selinux_now=absent"
fi
echo "selinux_boot=$(sed -n 's/^[[:space:]]*SELINUX=//p' /etc/selinux/config 2>/dev/null | tr -d ' \t' | tr '[:upper:]' '[:lower:]')"

# firewalld: running or not, and the ports it opens when it runs.
echo "firewalld=$(systemctl is-active firewalld 2>/dev/null)"
if [ -x /usr/bin/firewall-cmd ] && systemctl -q is-active firewalld 2>/dev/null; then
    echo "firewalld_ports=$(/usr/bin/firewall-cmd --list-ports 2>/dev/null)"
fi

# Time: systemd 219 prints "NTP synchronized", newer ones "System clock synchronized".
echo "time_synchronized=$(timedatectl status 2>/dev/null \
    | sed -n 's/^ *\(NTP\|System clock\) synchronized: *//p' | head -n 1)"

# Name resolution of every lab node, IPv4, in the order a resolver returns them.
for name in "$@"; do
    echo "resolve.$name=$(getent ahostsv4 "$name" | awk '!seen[$1]++ {print $1}' | paste -sd, -)"
done
