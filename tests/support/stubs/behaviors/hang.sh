# Sourced (via ~/.bashrc) before every command sent over SSH to a "hang" host:
# login works, then nothing ever comes back.
exec sleep infinity
