#!/bin/bash
# Builds the Baton virtual-machine host disks: Debian bookworm (debootstrap)
# with systemd as PID 1, the Docker Engine and a real Debian cloud kernel
# installed by apt inside the chroot (so its initramfs and its boot entries
# are the ones Debian's own tools make), in two variants of one root:
#   disk-uefi.raw   GPT, an ESP with systemd-boot, for UEFI firmware (OVMF)
#   disk-bios.raw   MBR, GRUB (grub-pc) in the MBR gap, for a BIOS (SeaBIOS)
#
# Output, in $BATON_VMHOST_CACHE/<hash>/ (<hash>: a content hash of every file
# in this folder but the README, paths and contents, so the disks are built
# once and reused while the recipe is unchanged):
#   disk-uefi.raw, disk-bios.raw
#                        the disks (sparse; copy one per VM with cp --sparse=always)
#   kernels/*.deb        the kernel packages of $kernels (the first is installed
#                        on the disks; the others are for bundles that upgrade them)
#   kernels/broken/*.deb the second kernel's package without virtio_blk: its
#                        initramfs cannot find the root disk, so it never boots
#   kernel-releases      one line per kernel release, installed one first
#   esp.list             the files on the UEFI disk's ESP (mdir listing), for reading
#   grub-entries         the menu lines of the BIOS disk's grub.cfg, for reading
#
# This script is the only place computing <hash>; the Rust harness
# (tests/src/vm.rs) calls `build.sh ensure`.
#
# Usage:
#   build.sh path     print the output folder for the current recipe
#   build.sh ensure   build the disks unless they exist, then print the folder
#                     (the default). Concurrent callers serialise on a lock
#                     file; the second one finds the disks and skips.
#
# Progress goes to stderr; stdout carries only the folder.
# Needs root, debootstrap, mount (proc, sysfs, bind, loop), losetup and partx
# (util-linux), mkfs.ext4 (e2fsprogs), mkfs.vfat (dosfstools), mtools, sfdisk
# (fdisk) and dpkg-deb.
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
# installed on the disks and boots by default; the .deb of each is kept beside
# the disks. The Rust side mirrors them as vm::BASE_KERNEL_RELEASE and
# vm::NEXT_KERNEL_RELEASE (the boot test checks the image agrees).
kernels=(6.1.0-50-cloud-amd64 6.1.0-51-cloud-amd64)

# debootstrap's set; the rest goes in with apt inside the chroot, so the
# maintainer scripts run: the Docker Engine and the kernel in the root both
# variants share, then each variant's boot loader, whose postinst registers
# the installed kernel with it.
bootstrap_packages=systemd,systemd-sysv,dbus,udev,kmod,iproute2,procps,ca-certificates
# apparmor: Debian's kernel enables AppArmor, and then dockerd runs containers
# under its docker-default profile, which it loads with apparmor_parser; without
# the package every unprivileged container (the downloader job) fails to start.
apt_packages=(docker.io apparmor "linux-image-${kernels[0]}")

# Fixed identifiers (every VM is a copy of one disk), so the kernel command
# line and fstab name the partitions, not the disk.
esp_uuid=6b1c2a6e-5d0f-4b5e-9e7a-0c0ffee0e5f1
root_uuid=6b1c2a6e-5d0f-4b5e-9e7a-0c0ffee0f001
# The BIOS disk: an MBR (disk id 0c0ffee0) and the root file system's UUID,
# which update-grub writes as root=UUID=….
bios_disk_id=0x0c0ffee0
bios_root_fs_uuid=6b1c2a6e-5d0f-4b5e-9e7a-0c0ffee0f002
esp_mib=256
root_mib=4096
# Boot Loader Specification entries are named <token>-<release>.conf, their
# kernels live in <ESP>/<token>/<release>/ (kernel-install's bls layout).
entry_token=debian
# Boot counting: kernel-install names the entries of kernels installed later
# <token>-<release>+<tries>.conf; systemd-boot counts the tries down and
# systemd-bless-boot drops the counter once a boot succeeded.
boot_tries=3
# console=ttyS0: the serial console is the tests' window; panic=10: a kernel
# that cannot mount its root reboots (into the previous entry, once the
# one-shot is consumed) instead of hanging. The same on both variants.
console_cmdline="console=ttyS0,115200 panic=10 systemd.show_status=1"
kernel_cmdline="root=PARTUUID=$root_uuid ro $console_cmdline"

# Units that would reach the network or run maintenance during a test.
masked_units=(
    apt-daily.timer
    apt-daily-upgrade.timer
    e2scrub_all.timer
    e2scrub_reap.service
    fstrim.timer
)
# The chroot's mounts, innermost first (unmounted in this order).
chroot_mounts=(boot/efi var/cache/apt/archives dev/pts dev sys proc)
# No lazy initialisation: the guest's kernel would otherwise spend its first
# boot zeroing inode tables in the background.
mkfs_ext4_opts=(-q -L baton-root -E lazy_itable_init=0,lazy_journal_init=0)

# The README is left out: editing the documentation does not rebuild a disk.
recipe_hash() {
    (cd "$here" && find . -type f ! -name README.md -print0 | LC_ALL=C sort -z |
        xargs -0 sha256sum | sha256sum | cut -c1-16)
}

out=$cache/$(recipe_hash)

disks_exist() {
    [ -f "$out/disk-uefi.raw" ] && [ -f "$out/disk-bios.raw" ]
}

need_tools() {
    local tool missing=""
    for tool in debootstrap mkfs.ext4 mkfs.vfat mcopy mmd mdir sfdisk mount chroot \
        losetup partx dpkg-deb; do
        command -v "$tool" >/dev/null || missing="$missing $tool"
    done
    if [ -n "$missing" ]; then
        echo "vmhost: missing:$missing (install them with scripts/install-deps.sh)" >&2
        exit 3
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "vmhost: debootstrap, chroot and losetup need root" >&2
        exit 3
    fi
}

# Runs a command in chroot $1 with the ESP path systemd's tools should use:
# at build time /boot/efi is a tmpfs, not a FAT partition, and
# SYSTEMD_ESP_PATH makes bootctl and kernel-install accept it as the ESP.
in_root() {
    local root=$1
    shift
    chroot "$root" /usr/bin/env -i \
        PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive SYSTEMD_ESP_PATH=/boot/efi "$@"
}

mount_chroot() {
    mount -t proc proc "$1/proc"
    mount -t sysfs sysfs "$1/sys"
    mount --bind /dev "$1/dev"
    mount --bind /dev/pts "$1/dev/pts"
    mount --bind "$cache/apt-archives" "$1/var/cache/apt/archives"
}

umount_chroot() {
    local m
    for m in "${chroot_mounts[@]}"; do
        if mountpoint -q "$1/$m"; then umount "$1/$m"; fi
    done
}

# What a root needs once its packages are in: no package database caches, no
# apt lists, no service policy, its own machine id on first boot.
finish_root() {
    rm -f "$1/usr/sbin/policy-rc.d"
    rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin
}

# The root both variants share: Debian, the Docker Engine, the base kernel
# (its initramfs made by initramfs-tools), our units and settings.
build_base() {
    local root=$1 unit
    echo "vmhost: debootstrap $suite from $mirror" >&2
    debootstrap --variant=minbase --include="$bootstrap_packages" \
        --cache-dir="$cache/debootstrap" "$suite" "$root" "$mirror" >&2

    # The kernel of the second ABI may only be on the security archive.
    cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main
EOF
    # Packages installed in the chroot start no services.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"

    mount_chroot "$root"
    echo "vmhost: apt-get install ${apt_packages[*]}" >&2
    in_root "$root" apt-get update -qq >&2
    in_root "$root" apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >&2
    mkdir -p "$tmp_out/kernels"
    in_root "$root" sh -c "cd /tmp && apt-get download -q $(printf 'linux-image-%s ' "${kernels[@]:1}")" >&2
    mv "$root"/tmp/linux-image-*.deb "$tmp_out/kernels/"
    cp "$cache/apt-archives/linux-image-${kernels[0]}_"*.deb "$tmp_out/kernels/"
    printf '%s\n' "${kernels[@]}" >"$tmp_out/kernel-releases"
    umount_chroot "$root"

    # Our files: the units that install the seed and report on the serial
    # console, Docker's settings, networking.
    cp -a "$here/rootfs/." "$root/"
    mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
    for unit in baton-vm-seed.service baton-vm-ready.service; do
        ln -sf "/usr/lib/systemd/system/$unit" \
            "$root/etc/systemd/system/multi-user.target.wants/$unit"
    done
    ln -sf /lib/systemd/system/systemd-networkd.service \
        "$root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
    mkdir -p "$root/etc/systemd/system/sockets.target.wants"
    ln -sf /lib/systemd/system/systemd-networkd.socket \
        "$root/etc/systemd/system/sockets.target.wants/systemd-networkd.socket"
    for unit in "${masked_units[@]}"; do
        ln -sf /dev/null "$root/etc/systemd/system/$unit"
    done
    echo baton-vm >"$root/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tbaton-vm\n' >"$root/etc/hosts"
    # QEMU's user network: DHCP from 10.0.2.2, DNS at 10.0.2.3.
    echo "nameserver 10.0.2.3" >"$root/etc/resolv.conf"
    # Root logs in on the serial console without a password; there is no SSH.
    chroot "$root" passwd -d root >/dev/null
    # Every VM gets its own machine id on first boot.
    : >"$root/etc/machine-id"
    rm -f "$root/var/lib/dbus/machine-id"
    mkdir -p "$root/var/log/journal"
}

# The second kernel's package without virtio_blk: same name and version, so
# `dpkg -i` installs it like the good one, but its initramfs has no driver
# for the root disk, and initramfs-tools gives up waiting for the root and
# reboots (panic=10).
build_broken_kernel() {
    local deb name unpacked=$work/broken-kernel
    deb=$(echo "$tmp_out/kernels/linux-image-${kernels[1]}_"*.deb)
    name=$(basename "$deb")
    dpkg-deb -R "$deb" "$unpacked"
    if [ -z "$(find "$unpacked/lib/modules" -name 'virtio_blk.ko*')" ]; then
        echo "vmhost: $name has no virtio_blk module to remove" >&2
        exit 1
    fi
    find "$unpacked/lib/modules" -name 'virtio_blk.ko*' -delete
    sed -i '/\/virtio_blk\.ko/d' "$unpacked/DEBIAN/md5sums"
    mkdir -p "$tmp_out/kernels/broken"
    # gzip: xz would take a minute of the build for a file only tests read.
    dpkg-deb -Zgzip -b "$unpacked" "$tmp_out/kernels/broken/$name" >/dev/null
    rm -rf "$unpacked"
}

# The UEFI variant, made from the base root in place: systemd-boot, whose
# postinst installs the boot loader into the ESP (bootctl install) and adds
# the installed kernel's entry with kernel-install.
build_uefi() {
    local root=$1 esp=$1/boot/efi sectors esp_start root_start
    # What kernel-install reads when systemd-boot's hooks call it: the entry
    # token, the bls layout, the command line (otherwise it would copy the
    # build machine's /proc/cmdline).
    mkdir -p "$root/etc/kernel" "$esp"
    echo "$entry_token" >"$root/etc/kernel/entry-token"
    echo "layout=bls" >"$root/etc/kernel/install.conf"
    echo "$kernel_cmdline" >"$root/etc/kernel/cmdline"
    cat >"$root/etc/fstab" <<EOF
PARTUUID=$root_uuid  /          ext4  errors=remount-ro  0  1
PARTUUID=$esp_uuid  /boot/efi  vfat  umask=0077         0  2
EOF
    mount_chroot "$root"
    # The ESP's content is staged on a tmpfs at /boot/efi: kernel-install
    # writes entry paths relative to the file system holding the ESP.
    mount -t tmpfs -o size=$((esp_mib))m,mode=0700 baton-esp "$esp"
    mkdir -p "$esp/loader/entries" "$esp/$entry_token"
    echo "vmhost: uefi: apt-get install systemd-boot" >&2
    in_root "$root" apt-get install -y -qq --no-install-recommends systemd-boot >&2
    # Only now: the base kernel's entry stays without a counter (it is the
    # known-good fallback); kernels installed later get one.
    echo "$boot_tries" >"$root/etc/kernel/tries"

    # The menu stays hidden (a key pressed at the console shows it); the
    # default is the newest entry.
    cat >"$esp/loader/loader.conf" <<EOF
timeout 0
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
        "$esp/loader/entries/$entry_token-${kernels[0]}.conf" ||
        ! grep -Eq "^initrd +/$entry_token/${kernels[0]}/initrd" \
            "$esp/loader/entries/$entry_token-${kernels[0]}.conf"; then
        echo "vmhost: the entry's kernel or initrd is not in /$entry_token/${kernels[0]}/" >&2
        exit 1
    fi
    umount "$root/var/cache/apt/archives" "$root/dev/pts" "$root/dev" "$root/sys" "$root/proc"
    finish_root "$root"

    echo "vmhost: uefi: filesystems" >&2
    # The ESP: a FAT file filled with mtools, from what bootctl and
    # kernel-install put in the chroot's /boot/efi.
    mkfs.vfat -C -F 32 -n ESP "$work/esp.img" $((esp_mib * 1024)) >&2
    (cd "$esp" && MTOOLS_SKIP_CHECK=1 mcopy -s -p -i "$work/esp.img" ./* ::/)
    MTOOLS_SKIP_CHECK=1 mdir -/ -i "$work/esp.img" ::/ >"$tmp_out/esp.list"
    umount "$esp"
    mkfs.ext4 "${mkfs_ext4_opts[@]}" -d "$root" "$work/root.img" "${root_mib}M" >&2

    # The disk: 1 MiB for the GPT, the ESP, the root, 1 MiB for the backup GPT.
    esp_start=2048
    root_start=$((esp_start + esp_mib * 2048))
    sectors=$((root_start + root_mib * 2048 + 2048))
    truncate -s $((sectors * 512)) "$tmp_out/disk-uefi.raw"
    sfdisk --quiet "$tmp_out/disk-uefi.raw" >&2 <<EOF
label: gpt
unit: sectors
start=$esp_start, size=$((esp_mib * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$esp_uuid, name="ESP"
start=$root_start, size=$((root_mib * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$root_uuid, name="root"
EOF
    dd if="$work/esp.img" of="$tmp_out/disk-uefi.raw" bs=1M seek=$((esp_start / 2048)) conv=notrunc,sparse status=none
    dd if="$work/root.img" of="$tmp_out/disk-uefi.raw" bs=1M seek=$((root_start / 2048)) conv=notrunc,sparse status=none
    rm -f "$work/esp.img" "$work/root.img"
}

# The BIOS variant: an MBR disk with one root partition, made on a loop
# device because grub-install and update-grub probe the block device holding
# /boot (a chroot on a plain folder would show them the build machine's).
build_bios() {
    local base=$1 disk=$tmp_out/disk-bios.raw part
    truncate -s $(((root_mib + 1) * 1024 * 1024)) "$disk"
    sfdisk --quiet "$disk" >&2 <<EOF
label: dos
label-id: $bios_disk_id
unit: sectors
start=2048, type=83, bootable
EOF
    loopdev=$(losetup -P -f --show "$disk")
    # No udev here: ask for the partitions and make their node if missing.
    partx -a "$loopdev" 2>/dev/null || true
    part=${loopdev}p1
    if [ ! -b "$part" ]; then
        mknod "$part" b $(tr : ' ' <"/sys/block/${loopdev#/dev/}/${loopdev#/dev/}p1/dev")
        made_node=$part
    fi
    mkfs.ext4 "${mkfs_ext4_opts[@]}" -U "$bios_root_fs_uuid" "$part" >&2
    # update-grub writes root=UUID=… only if udev's link to the file system
    # exists (otherwise it names the loop device); without udev, make it.
    if [ ! -e "/dev/disk/by-uuid/$bios_root_fs_uuid" ]; then
        mkdir -p /dev/disk/by-uuid
        ln -s "$part" "/dev/disk/by-uuid/$bios_root_fs_uuid"
        made_link=/dev/disk/by-uuid/$bios_root_fs_uuid
    fi
    bios_root=$work/bios
    mkdir -p "$bios_root"
    mount "$part" "$bios_root"
    echo "vmhost: bios: copying the root" >&2
    cp -a "$base/." "$bios_root/"
    rm -rf "$bios_root/boot/efi"
    cat >"$bios_root/etc/fstab" <<EOF
UUID=$bios_root_fs_uuid  /  ext4  errors=remount-ro  0  1
EOF
    mkdir -p "$bios_root/etc/default"
    # saved: grub-set-default and grub-reboot choose the entry (in
    # /boot/grub/grubenv); quiet would hide the kernel's banner the tests
    # read, so no default options beyond the console's.
    cat >"$bios_root/etc/default/grub" <<EOF
GRUB_DEFAULT=saved
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="$console_cmdline"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
GRUB_DISABLE_RECOVERY=true
EOF
    mount_chroot "$bios_root"
    # A later upgrade of grub-pc in the guest reinstalls it on the VM's disk.
    echo "grub-pc grub-pc/install_devices multiselect /dev/vda" |
        in_root "$bios_root" debconf-set-selections
    echo "vmhost: bios: apt-get install grub-pc" >&2
    in_root "$bios_root" apt-get install -y -qq --no-install-recommends grub-pc >&2
    in_root "$bios_root" grub-install --target=i386-pc "$loopdev" >&2
    in_root "$bios_root" update-grub >&2
    # grub-install makes it; grub-reboot and grub-set-default write it.
    [ -f "$bios_root/boot/grub/grubenv" ] || in_root "$bios_root" grub-editenv /boot/grub/grubenv create
    grep -E "^[[:space:]]*(menuentry|submenu) " "$bios_root/boot/grub/grub.cfg" >"$tmp_out/grub-entries"
    echo "vmhost: bios: grub menu:" >&2
    sed 's/^/    /' "$tmp_out/grub-entries" >&2
    if ! grep -q "vmlinuz-${kernels[0]} root=UUID=$bios_root_fs_uuid " "$bios_root/boot/grub/grub.cfg"; then
        echo "vmhost: grub.cfg does not boot ${kernels[0]} from UUID=$bios_root_fs_uuid" >&2
        exit 1
    fi
    umount_chroot "$bios_root"
    finish_root "$bios_root"
    umount "$bios_root"
    detach_loop
}

detach_loop() {
    if [ -n "${made_link:-}" ]; then
        rm -f "$made_link"
        rmdir /dev/disk/by-uuid /dev/disk 2>/dev/null || true
    fi
    made_link=
    if [ -n "${made_node:-}" ]; then rm -f "$made_node"; fi
    made_node=
    if [ -n "${loopdev:-}" ]; then losetup -d "$loopdev"; fi
    loopdev=
}

# Undoes whatever a failed build left: mounts inside the chroots, the loop
# device, the work folders (never letting rm cross into a mount).
cleanup() {
    local r
    for r in "${bios_root:-}" "${rootfs:-}"; do
        if [ -n "$r" ]; then
            for m in "${chroot_mounts[@]}"; do umount -l "$r/$m" 2>/dev/null || true; done
        fi
    done
    if [ -n "${bios_root:-}" ]; then umount -l "$bios_root" 2>/dev/null || true; fi
    detach_loop 2>/dev/null || true
    rm -rf --one-file-system "$work" "$tmp_out"
}

build() {
    local started
    need_tools
    started=$(date +%s)
    mkdir -p "$cache/debootstrap" "$cache/apt-archives"
    work=$(mktemp -d /var/tmp/baton-vmhost.XXXXXX)
    rootfs=$work/rootfs
    tmp_out=$(mktemp -d "$cache/.build.XXXXXX")
    trap cleanup EXIT

    echo "vmhost: building $out" >&2
    build_base "$rootfs"
    build_broken_kernel
    # BIOS first: it copies the shared root, which the UEFI variant then
    # changes in place.
    build_bios "$rootfs"
    build_uefi "$rootfs"

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
    if ! disks_exist; then
        mkdir -p "$cache"
        exec 9>"$lock"
        flock 9
        # Another process may have built them while we waited for the lock.
        if ! disks_exist; then
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
