#!/bin/bash
# Builds the Baton simulated-host image: Debian bookworm (debootstrap) with
# systemd as PID 1, D-Bus, and the simulated bootloader, imported into the
# local Docker Engine as baton-simhost:<hash> (nothing is pulled).
#
# <hash> is a content hash of every file in this folder (paths and
# contents), so the image is built once and reused while the recipe is
# unchanged. This script is the only place computing it; the Rust harness
# (tests/src/simhost_image.rs) calls `build.sh ensure`.
#
# Usage:
#   build.sh tag      print the image tag for the current recipe
#   build.sh ensure   build the image unless it exists, then print the tag
#                     (the default). Concurrent callers serialise on a lock
#                     file; the second one finds the image and skips.
#
# Progress goes to stderr; stdout carries only the tag.
# Needs root, debootstrap and docker. Environment overrides:
#   BATON_DEBIAN_MIRROR   (default http://deb.debian.org/debian)
#   BATON_SIMHOST_LOCK    (default /tmp/baton-simhost-build.lock)
#   BATON_SIMHOST_CACHE   debootstrap package cache
#                         (default /var/cache/baton-simhost/debootstrap)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=baton-simhost
suite=bookworm
mirror=${BATON_DEBIAN_MIRROR:-http://deb.debian.org/debian}
lock=${BATON_SIMHOST_LOCK:-/tmp/baton-simhost-build.lock}
cache=${BATON_SIMHOST_CACHE:-/var/cache/baton-simhost/debootstrap}

# The release of the kernel the image ships and boots by default
# (/boot/vmlinuz-<release>, /boot/baton/default). The Rust side mirrors it
# as simhost_image::BASE_KERNEL_RELEASE; the fleet test checks they agree.
base_kernel=6.1.0-baton-sim

packages=systemd,systemd-sysv,dbus,iproute2,procps,ca-certificates

# Units that cannot work in an unprivileged container (no udev, read-only
# /sys, no kernel modules, no consoles, no block devices of its own) or that
# would reach the network (apt timers). Masked so that `systemctl is-system-running` says
# "running", not "degraded".
masked_units=(
    systemd-udevd.service
    systemd-udevd-control.socket
    systemd-udevd-kernel.socket
    systemd-udev-trigger.service
    systemd-udev-settle.service
    systemd-hwdb-update.service
    systemd-modules-load.service
    kmod-static-nodes.service
    systemd-remount-fs.service
    systemd-firstboot.service
    systemd-binfmt.service
    proc-sys-fs-binfmt_misc.automount
    proc-sys-fs-binfmt_misc.mount
    sys-kernel-config.mount
    sys-kernel-debug.mount
    sys-kernel-tracing.mount
    sys-fs-fuse-connections.mount
    dev-hugepages.mount
    getty.target
    getty@.service
    serial-getty@.service
    console-getty.service
    systemd-networkd-wait-online.service
    apt-daily.timer
    apt-daily-upgrade.timer
    e2scrub_all.timer
    e2scrub_reap.service
    fstrim.timer
)

recipe_hash() {
    (cd "$here" && find . -type f -print0 | LC_ALL=C sort -z |
        xargs -0 sha256sum | sha256sum | cut -c1-16)
}

tag="$repo:$(recipe_hash)"

image_exists() {
    docker image inspect "$tag" >/dev/null 2>&1
}

build() {
    local started work rootfs tool
    for tool in debootstrap docker tar; do
        if ! command -v "$tool" >/dev/null; then
            echo "simhost: $tool is missing (Debian: apt-get install debootstrap docker.io)" >&2
            exit 3
        fi
    done
    if [ "$(id -u)" != 0 ]; then
        echo "simhost: debootstrap needs root" >&2
        exit 3
    fi
    started=$(date +%s)
    work=$(mktemp -d /var/tmp/baton-simhost.XXXXXX)
    rootfs=$work/rootfs
    # debootstrap mounts /proc and /sys inside the chroot; never let rm
    # cross into them if it was interrupted.
    trap 'umount -R "'"$rootfs"'/proc" "'"$rootfs"'/sys" 2>/dev/null || true; rm -rf --one-file-system "'"$work"'"' EXIT

    echo "simhost: building $tag (debootstrap $suite from $mirror)" >&2
    mkdir -p "$cache"
    debootstrap --variant=minbase --include="$packages" --cache-dir="$cache" \
        "$suite" "$rootfs" "$mirror" >&2

    # Our files: the simulated bootloader, its unit, the docs.
    cp -a "$here/rootfs/." "$rootfs/"
    chmod 0755 "$rootfs/usr/lib/baton-sim/bootloader"
    chmod 0644 "$rootfs/usr/lib/systemd/system/baton-sim-bootloader.service"
    install -D -m 0644 "$here/README.md" "$rootfs/usr/share/doc/baton-sim/README.md"
    mkdir -p "$rootfs/usr/lib/systemd/system/sysinit.target.wants"
    ln -sf ../baton-sim-bootloader.service \
        "$rootfs/usr/lib/systemd/system/sysinit.target.wants/baton-sim-bootloader.service"

    for unit in "${masked_units[@]}"; do
        ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
    done

    # The base kernel and its default boot entry.
    mkdir -p "$rootfs/boot/baton"
    printf 'simulated kernel %s\n' "$base_kernel" >"$rootfs/boot/vmlinuz-$base_kernel"
    printf '%s\n' "$base_kernel" >"$rootfs/boot/baton/default"

    # The host paths Baton uses (bind-mounted per host by the fleet harness,
    # which seeds them from the image).
    mkdir -p "$rootfs/var/lib/baton" "$rootfs/etc/baton" "$rootfs/usr/local/bin" "$rootfs/run/dbus"

    # Every container gets its own machine id on first boot (systemd fills
    # the empty file; it then persists in the container across reboots); the
    # hostname comes from Docker.
    : >"$rootfs/etc/machine-id"
    rm -f "$rootfs/var/lib/dbus/machine-id" "$rootfs/etc/hostname"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
    # A persistent journal: logs of earlier boots stay readable after a
    # simulated reboot (journalctl -b -1).
    mkdir -p "$rootfs/var/log/journal"

    echo "simhost: importing into docker as $tag" >&2
    tar --numeric-owner -C "$rootfs" -c . |
        docker import \
            -c 'CMD ["/sbin/init"]' \
            -c 'ENV container=docker' \
            -c "LABEL baton.simhost.recipe=$tag" \
            - "$tag" >&2
    echo "simhost: built $tag in $(($(date +%s) - started)) s" >&2

    # Images of older recipes are 200 MB each of dead weight; remove those
    # older than a day that no container uses (prune keeps images in use).
    # Recent ones are kept: another checkout may be using another recipe.
    docker image prune --all --force --filter label=baton.simhost.recipe \
        --filter until=24h >/dev/null 2>&1 || true
}

case ${1:-ensure} in
tag)
    echo "$tag"
    ;;
ensure)
    if ! image_exists; then
        exec 9>"$lock"
        flock 9
        # Another process may have built it while we waited for the lock.
        if ! image_exists; then
            build
        fi
    fi
    echo "$tag"
    ;;
*)
    echo "usage: $0 [tag|ensure]" >&2
    exit 2
    ;;
esac
