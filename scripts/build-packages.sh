#!/bin/bash
# Builds the Debian packages of Baton from binaries already built:
#   baton-orchestrator_<version>_amd64.deb  the orchestrator, its systemd unit, a default
#                                           /etc/baton/orchestrator.toml and the `baton` user
#   batonctl_<version>_amd64.deb            batonctl, its shell completions and man pages
# <version> is what the binaries report (`batonctl --version`), so a package never claims
# a version its binary does not.
#
# Usage: build-packages.sh BIN_DIR OUT_DIR
#   BIN_DIR  holds baton-orchestrator and batonctl (e.g. target/release)
#   OUT_DIR  receives the .deb files (created; older Baton packages in it are removed)
# The binaries are installed without their debugging information, as Debian's own are.
# Needs dpkg-deb (Debian's dpkg) and strip (binutils). Prints the path of each package on stdout.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin_dir=${1:?usage: build-packages.sh BIN_DIR OUT_DIR}
out_dir=${2:?usage: build-packages.sh BIN_DIR OUT_DIR}
pkg=$here/packaging

for b in baton-orchestrator batonctl; do
    [ -x "$bin_dir/$b" ] || { echo "build-packages.sh: $bin_dir/$b is missing: build it first (make packages does)" >&2; exit 1; }
done
command -v dpkg-deb >/dev/null || { echo "build-packages.sh: dpkg-deb is missing: apt-get install dpkg" >&2; exit 1; }

version=$("$bin_dir/batonctl" --version | awk '{print $2}')
orchestrator_version=$("$bin_dir/baton-orchestrator" --version | awk '{print $2}')
if [ "$version" != "$orchestrator_version" ]; then
    echo "build-packages.sh: batonctl is $version but baton-orchestrator is $orchestrator_version: build both as one version" >&2
    exit 1
fi
arch=$(dpkg --print-architecture)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out_dir"
rm -f "$out_dir"/baton-orchestrator_*.deb "$out_dir"/batonctl_*.deb

# control FILE PACKAGE DESCRIPTION DEPENDS: the package's DEBIAN/control.
control() {
    local root=$1 name=$2 summary=$3 depends=$4 size
    size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
    {
        echo "Package: $name"
        echo "Version: $version"
        echo "Architecture: $arch"
        echo "Maintainer: Baton <baton@localhost>"
        echo "Installed-Size: $size"
        [ -n "$depends" ] && echo "Depends: $depends"
        echo "Section: admin"
        echo "Priority: optional"
        echo "Description: $summary"
        sed 's/^/ /' "$pkg/$name.description"
    } >"$root/DEBIAN/control"
}

# docs ROOT PACKAGE FILE...: /usr/share/doc/PACKAGE with the copyright and FILEs.
docs() {
    local root=$1 name=$2
    shift 2
    install -d "$root/usr/share/doc/$name"
    install -m 0644 "$pkg/copyright" "$root/usr/share/doc/$name/copyright"
    for f in "$@"; do
        install -m 0644 "$here/$f" "$root/usr/share/doc/$name/"
    done
}

# --- baton-orchestrator ---
root=$work/baton-orchestrator
install -d "$root/DEBIAN"
install -D -m 0755 "$bin_dir/baton-orchestrator" "$root/usr/bin/baton-orchestrator"
strip --strip-debug "$root/usr/bin/baton-orchestrator"
install -D -m 0644 "$pkg/orchestrator/baton-orchestrator.service" "$root/lib/systemd/system/baton-orchestrator.service"
install -D -m 0644 "$pkg/orchestrator/sysusers.conf" "$root/usr/lib/sysusers.d/baton-orchestrator.conf"
install -D -m 0644 "$pkg/orchestrator/orchestrator.toml" "$root/etc/baton/orchestrator.toml"
install -m 0755 "$pkg/orchestrator/postinst" "$pkg/orchestrator/prerm" "$pkg/orchestrator/postrm" "$root/DEBIAN/"
echo /etc/baton/orchestrator.toml >"$root/DEBIAN/conffiles"
docs "$root" baton-orchestrator README.md docs/operations.md docs/security.md docs/api.md docs/keyspace.md
control "$root" baton-orchestrator "Baton orchestrator: fleet upgrades from update bundles, coordinated through etcd" "systemd"
dpkg-deb --root-owner-group -Zgzip --build "$root" "$out_dir/baton-orchestrator_${version}_${arch}.deb" >/dev/null
echo "$out_dir/baton-orchestrator_${version}_${arch}.deb"

# --- batonctl ---
root=$work/batonctl
install -d "$root/DEBIAN"
install -D -m 0755 "$bin_dir/batonctl" "$root/usr/bin/batonctl"
strip --strip-debug "$root/usr/bin/batonctl"
install -d "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
    "$root/usr/share/fish/vendor_completions.d" "$root/usr/share/man/man1"
"$bin_dir/batonctl" completion bash >"$root/usr/share/bash-completion/completions/batonctl"
"$bin_dir/batonctl" completion zsh >"$root/usr/share/zsh/vendor-completions/_batonctl"
"$bin_dir/batonctl" completion fish >"$root/usr/share/fish/vendor_completions.d/batonctl.fish"
"$bin_dir/batonctl" manpages "$work/man" >/dev/null
for page in "$work"/man/*.1; do
    gzip -9n <"$page" >"$root/usr/share/man/man1/$(basename "$page").gz"
done
chmod 0644 "$root"/usr/share/*/*/batonctl* "$root"/usr/share/zsh/vendor-completions/_batonctl "$root"/usr/share/man/man1/*
docs "$root" batonctl README.md docs/api.md
control "$root" batonctl "batonctl: the command line of Baton, fleet upgrades from update bundles" ""
dpkg-deb --root-owner-group -Zgzip --build "$root" "$out_dir/batonctl_${version}_${arch}.deb" >/dev/null
echo "$out_dir/batonctl_${version}_${arch}.deb"
