#!/bin/bash
# Assembles the source folder of sample bundle VERSION (1.0.0 or 2.0.0) in OUT, ready for
# `batonctl bundle build OUT --tag … --agent <baton-agent built with BATON_BUILD_VERSION>`:
# the version's manifest template and packages, plus the platform service's image archive,
# built here FROM scratch with Debian's static busybox and saved with `docker save` (never
# committed). Prints OUT.
#
# Usage: prepare.sh VERSION OUT
# Needs: docker, /bin/busybox from busybox-static (override with BATON_BUSYBOX).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ $# -ne 2 ]; then
    echo "usage: $0 VERSION OUT" >&2
    exit 2
fi
version=$1
out=$2
src=$here/$version
busybox=${BATON_BUSYBOX:-/bin/busybox}

if [ ! -f "$src/manifest.template.json" ]; then
    echo "prepare.sh: no sample bundle $version (expected $src/manifest.template.json)" >&2
    exit 2
fi
if [ ! -x "$busybox" ]; then
    echo "prepare.sh: $busybox is missing (Debian: apt-get install busybox-static)" >&2
    exit 3
fi

rm -rf "$out"
mkdir -p "$out/packages/kv"
cp -a "$src/manifest.template.json" "$src/packages" "$out/"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$busybox" "$ctx/busybox"
cp -a "$src/kv/www" "$ctx/www"
cp "$here/kv/Dockerfile" "$ctx/Dockerfile"
image=baton/kv:$version
if ! DOCKER_BUILDKIT=0 docker build --quiet --tag "$image" "$ctx" >/dev/null 2>"$ctx.log"; then
    cat "$ctx.log" >&2
    rm -f "$ctx.log"
    exit 1
fi
rm -f "$ctx.log"
# FROM scratch only works with a static busybox: check it runs.
if ! docker run --rm --network none --entrypoint /bin/busybox "$image" true; then
    echo "prepare.sh: $image cannot run $busybox; it must be statically linked (busybox-static)" >&2
    exit 3
fi
docker save "$image" -o "$out/packages/kv/baton-kv.tar"
echo "$out"
