# Sourced (via ~/.bashrc) before every command sent over SSH to a "stream" host:
# output that never ends, as fast as the connection takes it.
exec yes kubelab-stream-line
