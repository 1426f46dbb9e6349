#!/bin/sh
# Installs what Baton's build, tests and demo need on a Debian machine, and nothing that is
# already there: a second run installs nothing.
set -eu

need=""
have() { command -v "$1" >/dev/null 2>&1; }
want() { # want COMMAND PACKAGE
    if have "$1"; then :; else need="$need $2"; fi
}

want protoc protobuf-compiler
want etcd etcd-server
want etcdctl etcd-client
want docker-registry docker-registry
want debootstrap debootstrap
want curl curl
want openssl openssl
want docker docker.io
# A static /bin/busybox for FROM-scratch sample images (the dynamic `busybox` package does
# not run there).
if ! dpkg -s busybox-static >/dev/null 2>&1; then need="$need busybox-static"; fi
# The virtual-machine tier (images/vmhost, `make test-vm`): QEMU (alone: `qemu-utils` may
# conflict with it and a raw disk needs no qemu-img; SeaBIOS comes with it), UEFI firmware,
# the tools that make the disk images (the UEFI one from plain files, the BIOS one on a
# loop device for grub-install), and setpriv, which ties each QEMU to the test's life.
want qemu-system-x86_64 qemu-system-x86
if [ ! -e /usr/share/OVMF/OVMF_CODE.fd ]; then need="$need ovmf"; fi
want mkfs.vfat dosfstools
want mcopy mtools
want sfdisk fdisk
want mkfs.ext4 e2fsprogs
want losetup mount
want partx util-linux
want setpriv util-linux
want dpkg-deb dpkg
# The fleet page's browser test (tests/tests/orchestrator/web.rs): headless Chromium and its
# WebDriver server.
want chromium chromium
want chromedriver chromium-driver

if [ -n "$need" ]; then
    echo "installing:$need"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    # The Debian etcd-server and docker-registry packages try to start their services;
    # we run our own instances, so keep the packaged ones from starting.
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $need
    $SUDO rm -f /usr/sbin/policy-rc.d
else
    echo "dependencies: all present"
fi

if ! docker info >/dev/null 2>&1; then
    echo "error: the Docker Engine is not answering on its socket; start it (e.g. 'systemctl start docker') and re-run" >&2
    exit 1
fi
