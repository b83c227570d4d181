#!/bin/bash
# Runs inside `unshare -n` (only loopback): curl as verify runs it against a health
# port with nothing listening, and against a stand-in answering healthz's "ok".
set -u
out=$1; mkdir -p "$out"
ip link set lo up
W=$'\nkubelab-http-status:%{http_code}\n'
cap() { name=$1; shift; "$@" >"$out/$name.stdout" 2>"$out/$name.stderr"; echo $? >"$out/$name.rc"; }
cap healthz-refused curl -sS --noproxy '*' --max-time 5 -k -w "$W" http://127.0.0.1:10248/healthz
mkdir -p /tmp/ccap/www && printf ok >/tmp/ccap/www/healthz
python3 -m http.server 10248 --bind 127.0.0.1 --directory /tmp/ccap/www >/dev/null 2>&1 &
pid=$!
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:10248/healthz && break; sleep 0.2; done
cap healthz-ok curl -sS --noproxy '*' --max-time 5 -k -w "$W" http://127.0.0.1:10248/healthz
kill $pid
