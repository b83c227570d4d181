# Sent by kubelab (kubelab/classroom/access.py) to a libvirt host, run as `sh -s MARKER ENTRY`:
# replace this class's entry for one student in the login user's authorized_keys.
# $1: the entry's marker, its key comment; $2: the new entry, or empty to only remove it.
# POSIX sh and awk: it runs on CentOS 7 (bash 4.2, gawk) as on Debian.
set -e
umask 077
mkdir -p "$HOME/.ssh"
keys="$HOME/.ssh/authorized_keys"
[ -e "$keys" ] || : > "$keys"
next="$keys.kubelab.$$"
# Keep every line that does not end in " MARKER" (compared as text, no pattern).
awk -v marker=" $1" '
  length($0) < length(marker) || substr($0, length($0) - length(marker) + 1) != marker
' "$keys" > "$next"
if [ -n "$2" ]; then printf '%s\n' "$2" >> "$next"; fi
chmod 600 "$next"
# Created in ~/.ssh, the file has that folder's SELinux label; mv keeps it.
mv -f "$next" "$keys"
