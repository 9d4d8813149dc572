#!/usr/bin/env bash
# Builds the live image (Dockerfile) with docker, podman or buildah, whichever works here.
#   scripts/image.sh                       -> whalebt-live:<version>, base from a registry or bootstrapped
#   PYTHON_IMAGE=python:3.11.7-slim-bookworm@sha256:... scripts/image.sh
#   IMAGE_TOOL=buildah|podman|docker  IMAGE_TAG=whalebt-live:dev  IMAGE_STATE_DIR=results/image
# Base: PYTHON_IMAGE if set; else the tag in the Dockerfile when a registry serves it; else
# scripts/base_image.sh (Debian bookworm + Python 3.11 from the Debian archive). A pulled base is
# resolved to its digest and built from name@sha256:...; the digest (or, for the local base, the
# sha256 of its root file system) is stamped into the image labels and $IMAGE_STATE_DIR/image.env.
# pip inside the build uses this machine's index (pip config / PIP_INDEX_URL) and CA bundle (a secret).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)
TAG=${IMAGE_TAG:-whalebt-live:$VERSION}
STATE=${IMAGE_STATE_DIR:-results/image}
DEFAULT_BASE=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
mkdir -p "$STATE"
log() { echo "image: $*" >&2; }

install_pkg() {  # apt-get install on a fresh Debian/Ubuntu machine
    local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    log "installing $* (apt-get)"
    $sudo apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >&2
}

pick_tool() {
    if [ -n "${IMAGE_TOOL:-}" ]; then echo "$IMAGE_TOOL"; return; fi
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then echo docker; return; fi
    if command -v buildah >/dev/null; then echo buildah; return; fi
    if command -v podman >/dev/null && podman info >/dev/null 2>&1; then echo podman; return; fi
    install_pkg buildah
    echo buildah
}
TOOL=$(pick_tool)
command -v "$TOOL" >/dev/null || install_pkg "$TOOL"
log "building with $TOOL"

# ---------------------------------------------------------------- the base image
pull() {  # pull REF quietly; fails when no registry serves it
    case $TOOL in
        docker) timeout "${PULL_TIMEOUT_S:-60}" docker pull -q "$1" >/dev/null 2>&1 ;;
        *) timeout "${PULL_TIMEOUT_S:-60}" "$TOOL" pull -q "$1" >/dev/null 2>&1 ;;
    esac
}
digest_of() {  # repo digest of a pulled image: name@sha256:...
    case $TOOL in
        docker) docker image inspect --format '{{index .RepoDigests 0}}' "$1" ;;
        buildah) echo "${1%%@*}@$(buildah inspect --type image --format '{{.FromImageDigest}}' "$1")" ;;
        podman) echo "${1%%@*}@$(podman image inspect --format '{{.Digest}}' "$1")" ;;
    esac
}
BASE=${PYTHON_IMAGE:-}
BASE_SOURCE=registry
if [ -z "$BASE" ]; then
    if pull "$DEFAULT_BASE"; then
        BASE=$DEFAULT_BASE
    else
        log "no registry serves $DEFAULT_BASE: bootstrapping a Debian base (scripts/base_image.sh)"
        [ "$TOOL" = docker ] && { log "the bootstrapped base needs buildah or podman; set IMAGE_TOOL"; exit 1; }
        BASE=$(IMAGE_STATE_DIR="$STATE" scripts/base_image.sh)
        BASE_SOURCE=local
    fi
elif [[ "$BASE" != localhost/* ]]; then
    pull "$BASE" || { log "cannot pull PYTHON_IMAGE=$BASE"; exit 1; }
else
    BASE_SOURCE=local
fi
if [ "$BASE_SOURCE" = registry ]; then
    if [[ "$BASE" != *@sha256:* ]]; then
        BASE=$(digest_of "$BASE")
        log "pinned the base by digest: PYTHON_IMAGE=$BASE"
    fi
    BASE_DIGEST=${BASE##*@}
else
    BASE_DIGEST="rootfs-sha256:$(sed -n 's/^rootfs sha256://p' "$STATE/base.sha256" 2>/dev/null)"
fi

# ---------------------------------------------------------------- pip's index, as this machine uses it
pipconf() { python3 -m pip config get "global.$1" 2>/dev/null || true; }
INDEX=${PIP_INDEX_URL:-$(pipconf index-url)}
INDEX=${INDEX:-https://pypi.org/simple}
EXTRA=${PIP_EXTRA_INDEX_URL:-$(pipconf extra-index-url)}
EXTRA=$(tr ' ' '\n' <<<"$EXTRA" | grep -E '^https?://' | paste -sd' ' || true)  # file:// indexes are not in the build
TRUSTED=${PIP_TRUSTED_HOST:-$(pipconf trusted-host)}
CERT=${PIP_CERT:-$(pipconf cert)}
ARGS=(--build-arg "PYTHON_IMAGE=$BASE" --build-arg "PIP_INDEX_URL=$INDEX"
      --build-arg "PIP_EXTRA_INDEX_URL=$EXTRA" --build-arg "PIP_TRUSTED_HOST=$TRUSTED"
      --label "org.opencontainers.image.base.name=$BASE" --label "org.opencontainers.image.base.digest=$BASE_DIGEST"
      --label "org.opencontainers.image.version=$VERSION" -t "$TAG" -f Dockerfile)
[ -n "$CERT" ] && [ -s "$CERT" ] && ARGS+=(--secret "id=pipcert,src=$CERT")
log "base $BASE ($BASE_DIGEST); pip index $INDEX${EXTRA:+ + $EXTRA}"

start=$(date +%s)
case $TOOL in
    docker) DOCKER_BUILDKIT=1 docker build "${ARGS[@]}" . >&2 ;;
    # chroot isolation: no user namespaces or cgroups needed (VMs, containers)
    buildah) buildah bud --isolation "${BUILDAH_ISOLATION:-chroot}" --format docker --layers "${ARGS[@]}" . >&2 ;;
    podman) podman build --format docker "${ARGS[@]}" . >&2 ;;
esac
log "built $TAG in $(( $(date +%s) - start )) s"
printf 'IMAGE_TOOL=%s\nIMAGE=%s\nPYTHON_IMAGE=%s\nBASE_DIGEST=%s\n' "$TOOL" "$TAG" "$BASE" "$BASE_DIGEST" > "$STATE/image.env"
echo "$TAG"
