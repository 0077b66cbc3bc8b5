#!/bin/sh
# hutch sandbox entrypoint. Runs as the host user from its first instruction:
# there is no root phase, nothing to chown, no sudo.
set -eu

# The start gate: hutch checks from the host that every mount is the one it
# planned (a concurrent session may have swapped a path while the engine
# mounted it) and that its egress proxy is up, then answers "go".
if [ -n "${HUTCH_GATE:-}" ]; then
    reply=$(socat -u "UNIX-CONNECT:$HUTCH_GATE" STDOUT 2>/dev/null) || reply=
    if [ "$reply" != go ]; then
        echo "hutch: the sandbox did not pass hutch's start checks; nothing ran" >&2
        exit 125
    fi
    unset HUTCH_GATE
fi

if [ -n "${HUTCH_PROXY_SOCKET:-}" ]; then
    # The sandbox has no network; the only way out is hutch's filtering proxy,
    # reached through a Unix socket. Tools that honour HTTP(S)_PROXY talk to
    # this loopback relay; anything else finds no route at all. The relay
    # copies nothing: it hands each connection to the proxy (SCM_RIGHTS), which
    # serves it directly. One process, no fork per connection.
    python3 -I -S -c '
import os, socket
proxy = os.environ["HUTCH_PROXY_SOCKET"]
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 3128))
listener.listen(4096)
while True:
    client, _ = listener.accept()
    try:
        with socket.socket(socket.AF_UNIX) as unix:
            unix.connect(proxy)
            socket.send_fds(unix, [b"\0"], [client.fileno()])
    except OSError:
        pass
    client.close()
' 2>/dev/null &
    # Wait until the proxy's socket exists (hutch starts it while the engine
    # starts this container) and the relay listens (0C38 is port 3128, 0A LISTEN).
    i=0
    while ! [ -S "$HUTCH_PROXY_SOCKET" ] || ! grep -q ':0C38 00000000:0000 0A' /proc/net/tcp 2>/dev/null; do
        i=$((i + 1))
        [ "$i" -gt 500 ] && { echo "hutch: egress relay did not start" >&2; exit 125; }
        sleep 0.01
    done
fi

if [ -n "${HUTCH_ENV_FILE:-}" ] && [ -r "$HUTCH_ENV_FILE" ]; then
    # Variables the user named: kept out of the engine's metadata, so they
    # arrive in this file (shell-quoted by hutch) instead of `--env`.
    set -a
    . "$HUTCH_ENV_FILE"
    set +a
    unset HUTCH_ENV_FILE
fi

if [ "$#" -eq 0 ]; then
    set -- bash -l
fi
exec "$@"
