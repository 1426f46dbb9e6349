#!/bin/bash
# Builds the Baton virtual-machine host disk: a raw GPT disk image for a UEFI
# VM booting with systemd-boot, holding Debian bookworm (debootstrap) with
# systemd as PID 1, the Docker Engine, and a real Debian cloud kernel
# installed by apt inside the chroot (so its initramfs and its Boot Loader
# Specification entry are the ones Debian's own tools make).
#
# Output, in $BATON_VMHOST_CACHE/<hash>/ (<hash>: a content hash of every file
# in this folder but the README, paths and contents, so the disk is built once
# and reused while the recipe is unchanged):
#   disk.raw             the disk (sparse; copy it per VM with cp --sparse=always)
#   kernels/*.deb        the kernel packages of $kernels (the first is installed
#                        on the disk; the others are for bundles that upgrade it)
#   kernel-releases      one line per kernel release, installed one first
#   esp.list             the files on the ESP (mdir listing), for reading
#
# This script is the only place computing <hash>; the Rust harness
# (tests/src/vm.rs) calls `build.sh ensure`.
#
# Usage:
#   build.sh path     print the output folder for the current recipe
#   build.sh ensure   build the disk unless it exists, then print the folder
#                     (the default). Concurrent callers serialise on a lock
#                     file; the second one finds the disk and skips.
#
# Progress goes to stderr; stdout carries only the folder.
# Needs root, debootstrap, mount (proc, sysfs, bind), mkfs.ext4 (e2fsprogs),
# mkfs.vfat (dosfstools), mtools and sfdisk (fdisk); no loop device.
# Environment overrides:
#   BATON_DEBIAN_MIRROR            (default http://deb.debian.org/debian)
#   BATON_DEBIAN_SECURITY_MIRROR   (default http://deb.debian.org/debian-security)
#   BATON_VMHOST_CACHE             (default /var/cache/baton-vmhost)
#   BATON_VMHOST_LOCK              (default /tmp/baton-vmhost-build.lock)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
suite=bookworm
mirror=${BATON_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${BATON_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
cache=${BATON_VMHOST_CACHE:-/var/cache/baton-vmhost}
lock=${BATON_VMHOST_LOCK:-/tmp/baton-vmhost-build.lock}

# The kernels: two adjacent ABIs Debian serves side by side. The first is
# installed on the disk and boots by default; the .deb of each is kept beside
# the disk. The Rust side mirrors them as vm::BASE_KERNEL_RELEASE and
# vm::NEXT_KERNEL_RELEASE (the boot test checks the image agrees).
kernels=(6.1.0-50-cloud-amd64 6.1.0-51-cloud-amd64)

# debootstrap's set; the rest (systemd-boot, the kernel, the Docker Engine)
# goes in with apt inside the chroot, so their maintainer scripts run.
bootstrap_packages=systemd,systemd-sysv,dbus,udev,kmod,iproute2,procps,ca-certificates
apt_packages=(systemd-boot docker.io "linux-image-${kernels[0]}")

# Partition table: fixed partition UUIDs (every VM is a copy of one disk), so
# the kernel command line and fstab name the partitions, not the disk.
esp_uuid=6b1c2a6e-5d0f-4b5e-9e7a-0c0ffee0e5f1
root_uuid=6b1c2a6e-5d0f-4b5e-9e7a-0c0ffee0f001
esp_mib=256
root_mib=4096
# Boot Loader Specification entries are named <token>-<release>.conf, their
# kernels live in <ESP>/<token>/<release>/ (kernel-install's bls layout).
entry_token=debian
# console=ttyS0: the serial console is the tests' window; panic=10: a kernel
# that cannot mount its root reboots (into the previous entry, once the
# one-shot is consumed) instead of hanging.
kernel_cmdline="root=PARTUUID=$root_uuid ro console=ttyS0,115200 panic=10 systemd.show_status=1"

# Units that would reach the network or run maintenance during a test.
masked_units=(
    apt-daily.timer
    apt-daily-upgrade.timer
    e2scrub_all.timer
    e2scrub_reap.service
    fstrim.timer
)

# The README is left out: editing the documentation does not rebuild a disk.
recipe_hash() {
    (cd "$here" && find . -type f ! -name README.md -print0 | LC_ALL=C sort -z |
        xargs -0 sha256sum | sha256sum | cut -c1-16)
}

out=$cache/$(recipe_hash)

disk_exists() {
    [ -f "$out/disk.raw" ]
}

need_tools() {
    local tool missing=""
    for tool in debootstrap mkfs.ext4 mkfs.vfat mcopy mmd mdir sfdisk mount chroot; do
        command -v "$tool" >/dev/null || missing="$missing $tool"
    done
    if [ -n "$missing" ]; then
        echo "vmhost: missing:$missing (install them with scripts/install-deps.sh)" >&2
        exit 3
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "vmhost: debootstrap and chroot need root" >&2
        exit 3
    fi
}

# Runs a command in the chroot with the ESP path systemd's tools should use:
# at build time /boot/efi is a tmpfs, not a FAT partition, and
# SYSTEMD_ESP_PATH makes bootctl and kernel-install accept it as the ESP.
in_root() {
    chroot "$rootfs" /usr/bin/env -i \
        PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive SYSTEMD_ESP_PATH=/boot/efi "$@"
}

build() {
    local started work unit tmp_out sectors esp_start root_start
    need_tools
    started=$(date +%s)
    mkdir -p "$cache/debootstrap" "$cache/apt-archives"
    work=$(mktemp -d /var/tmp/baton-vmhost.XXXXXX)
    rootfs=$work/rootfs
    esp=$rootfs/boot/efi
    tmp_out=$(mktemp -d "$cache/.build.XXXXXX")
    # Unmount whatever is mounted inside the chroot before removing it; never
    # let rm cross into a mount if something was left.
    trap 'for m in boot/efi var/cache/apt/archives dev/pts dev proc sys; do umount -l "'"$rootfs"'/$m" 2>/dev/null || true; done
          rm -rf --one-file-system "'"$work"'" "'"$tmp_out"'"' EXIT

    echo "vmhost: building $out (debootstrap $suite from $mirror)" >&2
    debootstrap --variant=minbase --include="$bootstrap_packages" \
        --cache-dir="$cache/debootstrap" "$suite" "$rootfs" "$mirror" >&2

    # The kernel of the second ABI may only be on the security archive.
    cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main
EOF
    # Packages installed in the chroot start no services.
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod 0755 "$rootfs/usr/sbin/policy-rc.d"

    # What kernel-install reads when the kernel package's hooks call it: the
    # entry token, the bls layout, the command line (otherwise it would copy
    # the build machine's /proc/cmdline).
    mkdir -p "$rootfs/etc/kernel" "$esp"
    echo "$entry_token" >"$rootfs/etc/kernel/entry-token"
    echo "layout=bls" >"$rootfs/etc/kernel/install.conf"
    echo "$kernel_cmdline" >"$rootfs/etc/kernel/cmdline"
    cat >"$rootfs/etc/fstab" <<EOF
PARTUUID=$root_uuid  /          ext4  errors=remount-ro  0  1
PARTUUID=$esp_uuid  /boot/efi  vfat  umask=0077         0  2
EOF

    mount -t proc proc "$rootfs/proc"
    mount -t sysfs sysfs "$rootfs/sys"
    mount --bind /dev "$rootfs/dev"
    mount --bind /dev/pts "$rootfs/dev/pts"
    mount --bind "$cache/apt-archives" "$rootfs/var/cache/apt/archives"
    # The ESP's content is staged on a tmpfs at /boot/efi: kernel-install
    # writes entry paths relative to the file system holding the ESP.
    mount -t tmpfs -o size=$((esp_mib))m,mode=0700 baton-esp "$esp"
    mkdir -p "$esp/loader/entries" "$esp/$entry_token"

    echo "vmhost: apt-get install ${apt_packages[*]}" >&2
    in_root apt-get update -qq >&2
    # systemd-boot first: its postinst installs the boot loader into the ESP
    # (bootctl install), after which the kernel's hooks add its entry.
    in_root apt-get install -y -qq --no-install-recommends systemd-boot >&2
    in_root apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >&2
    mkdir -p "$tmp_out/kernels"
    in_root sh -c "cd /tmp && apt-get download -q $(printf 'linux-image-%s ' "${kernels[@]:1}")" >&2
    mv "$rootfs"/tmp/linux-image-*.deb "$tmp_out/kernels/"
    cp "$cache/apt-archives/linux-image-${kernels[0]}_"*.deb "$tmp_out/kernels/"
    printf '%s\n' "${kernels[@]}" >"$tmp_out/kernel-releases"

    # The boot loader's own settings: show the menu briefly (a human at the
    # console can pick an entry), default to the newest entry.
    cat >"$esp/loader/loader.conf" <<EOF
timeout 1
console-mode keep
editor no
EOF
    if [ ! -f "$esp/EFI/BOOT/BOOTX64.EFI" ] ||
        [ ! -f "$esp/loader/entries/$entry_token-${kernels[0]}.conf" ]; then
        echo "vmhost: the ESP lacks systemd-boot or the entry of ${kernels[0]}:" >&2
        (cd "$esp" && find . >&2)
        exit 1
    fi
    echo "vmhost: boot entry:" >&2
    sed 's/^/    /' "$esp/loader/entries/$entry_token-${kernels[0]}.conf" >&2
    # Paths in an entry are relative to the ESP's root.
    if ! grep -Eq "^linux +/$entry_token/${kernels[0]}/linux\$" \
        "$esp/loader/entries/$entry_token-${kernels[0]}.conf"; then
        echo "vmhost: the entry's kernel path is not /$entry_token/${kernels[0]}/linux" >&2
        exit 1
    fi

    for m in var/cache/apt/archives dev/pts dev sys proc; do umount "$rootfs/$m"; done
    rm -f "$rootfs/usr/sbin/policy-rc.d"

    # Our files: the units that report on the serial console, networking.
    cp -a "$here/rootfs/." "$rootfs/"
    mkdir -p "$rootfs/etc/systemd/system/multi-user.target.wants"
    ln -sf /usr/lib/systemd/system/baton-vm-ready.service \
        "$rootfs/etc/systemd/system/multi-user.target.wants/baton-vm-ready.service"
    ln -sf /lib/systemd/system/systemd-networkd.service \
        "$rootfs/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
    mkdir -p "$rootfs/etc/systemd/system/sockets.target.wants"
    ln -sf /lib/systemd/system/systemd-networkd.socket \
        "$rootfs/etc/systemd/system/sockets.target.wants/systemd-networkd.socket"
    for unit in "${masked_units[@]}"; do
        ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
    done
    echo baton-vm >"$rootfs/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tbaton-vm\n' >"$rootfs/etc/hosts"
    # QEMU's user network: DHCP from 10.0.2.2, DNS at 10.0.2.3.
    echo "nameserver 10.0.2.3" >"$rootfs/etc/resolv.conf"
    # Root logs in on the serial console without a password; there is no SSH.
    chroot "$rootfs" passwd -d root >/dev/null
    # Every VM gets its own machine id on first boot.
    : >"$rootfs/etc/machine-id"
    rm -f "$rootfs/var/lib/dbus/machine-id"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
    mkdir -p "$rootfs/var/log/journal"

    echo "vmhost: filesystems" >&2
    # The ESP: a FAT file filled with mtools, from what bootctl and
    # kernel-install put in the chroot's /boot/efi.
    mkfs.vfat -C -F 32 -n ESP "$work/esp.img" $((esp_mib * 1024)) >&2
    (cd "$esp" && MTOOLS_SKIP_CHECK=1 mcopy -s -p -i "$work/esp.img" ./* ::/)
    MTOOLS_SKIP_CHECK=1 mdir -/ -i "$work/esp.img" ::/ >"$tmp_out/esp.list"
    umount "$esp"
    mkfs.ext4 -q -L baton-root -d "$rootfs" "$work/root.img" "${root_mib}M" >&2

    # The disk: 1 MiB for the GPT, the ESP, the root, 1 MiB for the backup GPT.
    esp_start=2048
    root_start=$((esp_start + esp_mib * 2048))
    sectors=$((root_start + root_mib * 2048 + 2048))
    truncate -s $((sectors * 512)) "$tmp_out/disk.raw"
    sfdisk --quiet "$tmp_out/disk.raw" >&2 <<EOF
label: gpt
unit: sectors
start=$esp_start, size=$((esp_mib * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$esp_uuid, name="ESP"
start=$root_start, size=$((root_mib * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$root_uuid, name="root"
EOF
    dd if="$work/esp.img" of="$tmp_out/disk.raw" bs=1M seek=$((esp_start / 2048)) conv=notrunc,sparse status=none
    dd if="$work/root.img" of="$tmp_out/disk.raw" bs=1M seek=$((root_start / 2048)) conv=notrunc,sparse status=none

    rm -rf "$out"
    mv "$tmp_out" "$out"
    echo "vmhost: built $out in $(($(date +%s) - started)) s" >&2

    # Disks of older recipes are gigabytes of dead weight; remove those older
    # than a day (another checkout may be using a recent one).
    find "$cache" -mindepth 1 -maxdepth 1 -type d -name '????????????????' \
        ! -path "$out" -mtime +0 -exec rm -rf {} + 2>/dev/null || true
}

case ${1:-ensure} in
path)
    echo "$out"
    ;;
ensure)
    if ! disk_exists; then
        mkdir -p "$cache"
        exec 9>"$lock"
        flock 9
        # Another process may have built it while we waited for the lock.
        if ! disk_exists; then
            build
        fi
    fi
    echo "$out"
    ;;
*)
    echo "usage: $0 [path|ensure]" >&2
    exit 2
    ;;
esac
