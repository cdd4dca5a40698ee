#!/usr/bin/env bash
# Make the base image the container-image tests build on, since Docker Hub is unreachable here:
# a debootstrap minbase bookworm rootfs with python3, python3-venv and ca-certificates, imported
# into podman's (and buildah's, same storage) store as localhost/modelpack-base:bookworm.
# Cached: does nothing when the image exists; the rootfs tarball is kept under
# /var/cache/modelpack/base-image/ so a wiped image store re-imports without debootstrap.
#
# Usage: .ci/make-base-image.sh
# Env:   MODELPACK_BASE_IMAGE (default localhost/modelpack-base:bookworm)
#        MODELPACK_BASE_CACHE (default /var/cache/modelpack/base-image)
#        DEBIAN_MIRROR        (default http://deb.debian.org/debian)
set -euo pipefail

IMAGE="${MODELPACK_BASE_IMAGE:-localhost/modelpack-base:bookworm}"
CACHE="${MODELPACK_BASE_CACHE:-/var/cache/modelpack/base-image}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TARBALL="$CACHE/bookworm-minbase.tar"

for tool in podman debootstrap; do
    command -v "$tool" >/dev/null || {
        echo "make-base-image: '$tool' missing (apt-get install podman debootstrap)" >&2
        exit 1
    }
done

if podman image exists "$IMAGE"; then
    echo "base image present: $IMAGE"
    exit 0
fi

mkdir -p "$CACHE"
if [[ ! -s "$TARBALL" ]]; then
    start=$SECONDS
    rootfs="$CACHE/rootfs"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$MIRROR"
    # Smaller image: package lists and caches are not needed at run time.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
    rm -rf "$rootfs"
    echo "debootstrap rootfs in $((SECONDS - start)) s"
fi

podman import \
    --change 'CMD ["/bin/bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$TARBALL" "$IMAGE"
echo "imported $IMAGE"
