#!/usr/bin/env bash
# Container tooling for the packaging tests (tests/packaging, marker `containers`). Idempotent:
#   1. apt-get install podman, runc, debootstrap (+ uidmap, slirp4netns, fuse-overlayfs) if missing
#   2. /etc/containers/containers.conf: cgroupfs manager, no default ulimits (this VM has no systemd)
#   3. the test base image scoregate-test-base:bookworm, a minbase Debian rootfs with python3 made by
#      debootstrap and `podman import`ed; skipped when the image already exists (no registry is pulled).
set -euo pipefail

BASE_IMAGE="${SCOREGATE_TEST_BASE:-scoregate-test-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v newuidmap >/dev/null || missing+=(uidmap)
command -v slirp4netns >/dev/null || missing+=(slirp4netns)
command -v fuse-overlayfs >/dev/null || missing+=(fuse-overlayfs)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p /etc/containers
conf=/etc/containers/containers.conf
want='[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"'
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$want" ]; then
    printf '%s\n' "$want" >"$conf"
fi

if ! podman image exists "$BASE_IMAGE"; then
    rootfs="$(mktemp -d /var/tmp/scoregate-rootfs.XXXXXX)"
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip bookworm "$rootfs" "$MIRROR" >/dev/null
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
fi
podman image exists "$BASE_IMAGE"
echo "containers: $(podman --version), base image $BASE_IMAGE ready"
