#!/usr/bin/env bash
# Builds the offline stand-in for debian:bookworm-slim with debootstrap (no
# container registry is reachable from CI) and loads it into the engine.
# The tarball is cached outside the repository so that reruns take seconds.
set -euo pipefail

tag="${1:-debian:bookworm-slim}"
engine="${HUTCH_CI_ENGINE:-docker}"
cache_dir="${HUTCH_CI_CACHE:-/var/cache/hutch-ci}"
tarball="$cache_dir/bookworm-slim.tar"
mirror="${HUTCH_CI_MIRROR:-http://deb.debian.org/debian}"

if "$engine" image inspect "$tag" >/dev/null 2>&1; then
    echo "base image $tag already present"
    exit 0
fi

if [ ! -s "$tarball" ]; then
    if [ "$(id -u)" != 0 ]; then
        # Rootless Podman imports as its user, who cannot debootstrap.
        echo "no $tarball yet: run this script as root once (it builds the tarball)" >&2
        exit 1
    fi
    mkdir -p "$cache_dir"
    root="$(mktemp -d "$cache_dir/rootfs.XXXXXX")"
    trap 'rm -rf "$root"' EXIT
    echo "debootstrap bookworm (minbase) into $root"
    debootstrap --variant=minbase bookworm "$root" "$mirror" >"$cache_dir/debootstrap.log" 2>&1 || {
        tail -n 40 "$cache_dir/debootstrap.log"
        exit 1
    }
    # Trim what the slim image trims, so layers and sizes compare fairly.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
        "$root"/var/cache/apt/archives/*.deb "$root"/usr/share/doc/* \
        "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
    cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
EOF
    tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
    # Readable by all: rootless Podman's user imports it into its own storage.
    chmod 0644 "$tarball.tmp"
    chmod 0755 "$cache_dir"
    mv "$tarball.tmp" "$tarball"
fi

"$engine" import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$tarball" "$tag" >/dev/null
echo "base image $tag imported from $tarball"
