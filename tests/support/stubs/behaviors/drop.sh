# Sourced (via ~/.bashrc) before every command sent over SSH to a "drop" host: the
# start of an answer, then the SSH session is killed: the client sees the connection drop.
printf '{\n    "apiVersion": "v1",\n    "items": [\n'
sleep 0.2
pid=$$
while [ "$pid" -gt 1 ]; do
    if [ "$(cat "/proc/$pid/comm")" = sshd ]; then
        kill -KILL "$pid"
        break
    fi
    pid=$(awk '/^PPid:/ { print $2 }' "/proc/$pid/status")
done
exec sleep infinity
