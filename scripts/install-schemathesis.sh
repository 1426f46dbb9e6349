#!/bin/sh
# Installs schemathesis (PyPI), the schema-driven fuzzer the API test runs against
# /openapi.json, into a virtual environment of its own; a second run installs nothing.
# The test finds it at $BATON_SCHEMATHESIS, else $BATON_VENV/bin/schemathesis.
set -eu

VENV="${BATON_VENV:-/var/cache/baton-venv}"
VERSION="${BATON_SCHEMATHESIS_VERSION:-4.32.5}"

if [ -x "$VENV/bin/schemathesis" ] && "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$VERSION"; then
    echo "schemathesis $VERSION: present in $VENV"
    exit 0
fi
if ! python3 -m venv "$VENV"; then
    echo "error: python3 cannot make a virtual environment; install Debian's python3-venv and re-run" >&2
    exit 1
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION"
"$VENV/bin/schemathesis" --version
