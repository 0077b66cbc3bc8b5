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
    # this loopback relay; anything else finds no route at all.
    socat TCP-LISTEN:3128,bind=127.0.0.1,reuseaddr,fork,backlog=1024 \
        "UNIX-CONNECT:$HUTCH_PROXY_SOCKET" 2>/dev/null &
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
