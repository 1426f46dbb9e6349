#!/bin/bash
# Builds the orchestrator image TAG from BINARY, a static baton-orchestrator (built with
# RUSTFLAGS='-C target-feature=+crt-static' and BATON_BUILD_VERSION=<version>, as
# `make bundle-orchestrators` does), and checks that it runs. Prints TAG.
#
# Usage: build.sh BINARY TAG
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ $# -ne 2 ]; then
    echo "usage: $0 BINARY TAG" >&2
    exit 2
fi
binary=$1
tag=$2
if [ ! -x "$binary" ]; then
    echo "build.sh: $binary is missing or not executable (make bundle-orchestrators builds it)" >&2
    exit 2
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$binary" "$ctx/baton-orchestrator"
cp "$here/Dockerfile" "$ctx/Dockerfile"
if ! DOCKER_BUILDKIT=0 docker build --quiet --tag "$tag" "$ctx" >/dev/null 2>"$ctx/log"; then
    cat "$ctx/log" >&2
    exit 1
fi
# FROM scratch only works with a static binary: check it starts.
if ! docker run --rm --network none "$tag" --version >/dev/null; then
    echo "build.sh: $tag does not run; $binary must be statically linked" >&2
    exit 3
fi
echo "$tag"
