#!/usr/bin/env bash
# Build kube-apiserver once from Debian's `kubernetes` source package (1.20.2) and cache it
# outside the clone. The Kubernetes deployer tests start it with etcd on 127.0.0.1.
#
# Usage: .ci/build-kube-apiserver.sh            (prints the binary's path on its last line)
# Env:   MODELPACK_KUBE_CACHE (default /var/cache/modelpack/kube-apiserver)
#
# Needs (Debian): golang-go, etcd-server, dpkg-dev, make, rsync, and deb-src lines for bookworm (added
# here if missing). Runs offline from Docker Hub; needs the Debian mirror only.
set -euo pipefail

CACHE="${MODELPACK_KUBE_CACHE:-/var/cache/modelpack/kube-apiserver}"
BIN="$CACHE/kube-apiserver"

if [[ -x "$BIN" ]]; then
    echo "kube-apiserver cached: $("$BIN" --version 2>/dev/null || echo unknown version)"
    echo "$BIN"
    exit 0
fi

for tool in go make rsync dpkg-source apt-get; do
    command -v "$tool" >/dev/null || {
        echo "build-kube-apiserver: '$tool' missing (apt-get install golang-go make rsync dpkg-dev)" >&2
        exit 1
    }
done

# deb-src for bookworm, matching the deb lines already configured.
if ! grep -rqs '^Types:.*deb-src\|^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "adding deb-src lines for bookworm"
    cat >/etc/apt/sources.list.d/modelpack-deb-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -qq
fi

mkdir -p "$CACHE"
WORK="$CACHE/src"
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"
echo "fetching Debian source package kubernetes"
apt-get source -qq kubernetes >/dev/null
SRCDIR="$(find "$WORK" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)"
[[ -n "$SRCDIR" ]] || { echo "build-kube-apiserver: no source tree unpacked" >&2; exit 1; }
# e.g. kubernetes-1.20.5+really1.20.2: the tree is 1.20.2
VERSION="$(basename "$SRCDIR" | sed 's/^kubernetes-//; s/.*really//')"
echo "building kube-apiserver $VERSION in $SRCDIR"

cd "$SRCDIR"
start=$SECONDS
# GOPATH mode with the tree's vendor/; make runs the code generators that plain `go build` misses.
export GO111MODULE=off GOFLAGS= GOPROXY=off
export KUBE_GIT_VERSION="v${VERSION%%+*}"
export KUBE_GIT_TREE_STATE=clean
export KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR="$(echo "$VERSION" | cut -d. -f2)"
make WHAT=cmd/kube-apiserver
built="$(find _output -type f -name kube-apiserver -perm -u+x | head -n1)"
[[ -n "$built" ]] || { echo "build-kube-apiserver: make produced no binary" >&2; exit 1; }
install -m 0755 "$built" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
echo "built in $((SECONDS - start)) s: $("$BIN" --version)"
cd /
rm -rf "$WORK"
echo "$BIN"
