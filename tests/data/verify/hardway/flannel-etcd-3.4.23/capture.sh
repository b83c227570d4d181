#!/bin/bash
# runs inside `unshare -n`: only loopback exists.
set -u
ip link set lo up
out=$1; mkdir -p "$out"
etcd --data-dir /tmp/fcap/data --listen-client-urls http://127.0.0.1:42379 --advertise-client-urls http://127.0.0.1:42379 --listen-peer-urls http://127.0.0.1:42380 >/tmp/fcap/etcd.log 2>&1 &
pid=$!
export ETCDCTL_API=3
C="etcdctl --endpoints=http://127.0.0.1:42379"
for i in $(seq 60); do $C endpoint health >/dev/null 2>&1 && break; sleep 0.5; done
cap() { name=$1; shift; "$@" >"$out/$name.stdout" 2>"$out/$name.stderr"; echo $? >"$out/$name.rc"; }
# No config yet, no leases.
cap empty-config $C get /coreos.com/network/config --print-value-only
cap empty-subnets $C get /coreos.com/network/subnets --prefix -w json
$C put /coreos.com/network/config '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}' >/dev/null
cap config $C get /coreos.com/network/config --print-value-only
# Leases as flanneld v0.26 writes them (key <prefix>/subnets/<net>-<len>, value its lease
# attributes), each under an etcd lease with flannel's 24 h TTL.
lease() { id=$($C lease grant 86400 | awk '{print $2}'); $C put --lease="$id" "/coreos.com/network/subnets/$1" "{\"PublicIP\":\"$2\",\"PublicIPv6\":null,\"BackendType\":\"vxlan\",\"BackendData\":{\"VNI\":1,\"VtepMAC\":\"$3\"}}" >/dev/null; }
lease 10.244.37.0-24 192.168.56.10 "c2:1f:5e:3a:4b:01"
lease 10.244.81.0-24 192.168.56.11 "5a:02:9d:7e:10:c4"
cap twoleases $C get /coreos.com/network/subnets --prefix -w json
lease 10.244.12.0-24 192.168.56.12 "e6:88:41:0b:d2:7f"
cap subnets $C get /coreos.com/network/subnets --prefix -w json
# node2 restarted flanneld with another lease while the old one lives on.
lease 10.244.200.0-24 192.168.56.12 "e6:88:41:0b:d2:80"
cap twoforone $C get /coreos.com/network/subnets --prefix -w json
kill $pid; wait $pid
# docker's bridge: with flannel's --bip, and docker's own default.
ip link add docker0 type bridge
ip addr add 10.244.37.1/24 dev docker0
cap docker0-bip /usr/sbin/ip -4 -o addr show dev docker0
ip addr flush dev docker0
ip addr add 172.17.0.1/16 dev docker0
cap docker0-default /usr/sbin/ip -4 -o addr show dev docker0
ip link del docker0
cap docker0-none /usr/sbin/ip -4 -o addr show dev docker0
