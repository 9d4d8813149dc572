#!/usr/bin/env bash
# Bootstraps a Debian bookworm base image with Python 3.11 from the Debian archive (mmdebstrap), for
# machines that reach no container registry. Prints the image reference to use as PYTHON_IMAGE.
#   scripts/base_image.sh                 build (or reuse) localhost/whalebt-base:bookworm-py311
#   BASE_REBUILD=1 scripts/base_image.sh  bootstrap again
# The sha256 of the root filesystem tarball and the image id are written to $IMAGE_STATE_DIR/base.sha256
# (default results/image/) and printed on stderr; scripts/image.sh stamps them into the built image.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_REF=${BASE_REF:-localhost/whalebt-base:bookworm-py311}
SUITE=${BASE_SUITE:-bookworm}
STATE=${IMAGE_STATE_DIR:-results/image}
# python3 / venv for the build stage, libgomp1 for lightgbm, ca-certificates for https (Azure, exchanges)
PACKAGES=python3,python3-venv,python-is-python3,ca-certificates,libgomp1
mkdir -p "$STATE"

need() {  # need COMMAND DEBIAN-PACKAGE: install the package with apt-get when the command is missing
    command -v "$1" >/dev/null && return
    echo "base_image: installing $2 (apt-get)" >&2
    local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$2" >&2
}
need buildah buildah
need mmdebstrap mmdebstrap

if [ -z "${BASE_REBUILD:-}" ] && buildah inspect --type image "$BASE_REF" >/dev/null 2>&1 && [ -s "$STATE/base.sha256" ]; then
    echo "base_image: reusing $BASE_REF ($(cat "$STATE/base.sha256" | tr '\n' ' '))" >&2
    echo "$BASE_REF"
    exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/whalebt-base.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "base_image: mmdebstrap $SUITE minbase + $PACKAGES" >&2
# SOURCE_DATE_EPOCH fixes file times; the tarball is still not bit-for-bit reproducible (two bootstraps
# of the same day differed), so its sha256 is recorded per build rather than pinned
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1704067200} mmdebstrap --quiet --variant=minbase --include="$PACKAGES" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    "$SUITE" "$tmp/rootfs.tar" >&2
rootfs_sha=$(sha256sum "$tmp/rootfs.tar" | cut -d' ' -f1)
buildah rmi "$BASE_REF" >/dev/null 2>&1 || true
ctr=$(buildah from scratch)
buildah add --quiet "$ctr" "$tmp/rootfs.tar" / >/dev/null
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --label org.opencontainers.image.base.name="debian:$SUITE (mmdebstrap minbase)" \
    --label whalebt.base.rootfs.sha256="$rootfs_sha" --cmd python3 "$ctr"
buildah commit --quiet --rm "$ctr" "$BASE_REF" >/dev/null
image_id=$(buildah inspect --type image --format '{{.FromImageID}}' "$BASE_REF" 2>/dev/null || true)
[ -n "$image_id" ] || image_id=$(buildah images --no-trunc --format '{{.ID}}' "$BASE_REF" | head -n1)
printf 'rootfs sha256:%s\nimage sha256:%s\n' "$rootfs_sha" "${image_id#sha256:}" > "$STATE/base.sha256"
echo "base_image: $BASE_REF built in $(( $(date +%s) - start )) s; $(tr '\n' ' ' < "$STATE/base.sha256")" >&2
echo "$BASE_REF"
