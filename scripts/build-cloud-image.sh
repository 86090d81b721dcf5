#!/bin/bash
# Build a Debian 12 cloud image with cloud-init, from Debian's packages only
# (DESIGN.md §6, issue 3): the image for the end-to-end test in which
# cloudmaster boots a stock-like cloud image and cloud-init applies the
# user-data the master serves as NoCloud.
#
# Usage: build-cloud-image.sh OUT.qcow2        (as root)
#
#   debootstrap --variant=minbase (systemd-sysv, apt), then apt-get install in
#   the chroot of the cloud kernel, cloud-init, ifupdown, isc-dhcp-client and
#   openssh-server; an ext4 partition in a 2 GiB raw file, mapped with
#   losetup -o (udev does not run on the build machines, so no -P); extlinux
#   as boot loader; qemu-img convert to a compressed qcow2.
#
# The image boots on a serial console (ttyS0), takes its seed from SMBIOS
# type 1 serial only (datasource_list: [ NoCloud, None ]), e.g.
#   -smbios 'type=1,serial=ds=nocloud-net;s=http://10.0.2.2:8107/nocloud/UUID/'
# and has no password and no SSH key: access is what the user-data gives.
#
# Cached: when OUT.qcow2 exists and OUT.qcow2.stamp holds this script's
# sha256, it exits at once. Otherwise it builds in a temporary directory next
# to OUT (removed on any exit, with its mounts and loop device) and renames the
# result into place at the end. Packages fetched are kept in
# OUTDIR/.cache/NAME-debs for the next build. Nothing prompts.
#
# Environment: CM_DEBIAN_MIRROR (default http://deb.debian.org/debian),
#              CM_DEBIAN_SECURITY (default http://deb.debian.org/debian-security),
#              CM_IMAGE_SIZE (default 2G).
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUT.qcow2" >&2
    exit 2
fi
out=$1
case $out in /*) ;; *) out=$PWD/$out ;; esac
outdir=$(dirname "$out")
name=$(basename "$out" .qcow2)
stamp=$out.stamp
script_sum=$(sha256sum "$0" | cut -d' ' -f1)

cached() { [ -f "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$script_sum" ]; }
if cached; then
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "build-cloud-image: needs root (debootstrap, chroot, loop devices)" >&2
    exit 1
fi
for tool in debootstrap extlinux sfdisk mkfs.ext4 losetup qemu-img flock; do
    if ! command -v "$tool" >/dev/null; then
        echo "build-cloud-image: $tool missing; run scripts/install-deps.sh" >&2
        exit 1
    fi
done
mbr=/usr/lib/syslinux/mbr/mbr.bin
if [ ! -f "$mbr" ]; then
    echo "build-cloud-image: $mbr missing (package syslinux-common)" >&2
    exit 1
fi

mirror=${CM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${CM_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
size=${CM_IMAGE_SIZE:-2G}
suite=bookworm

mkdir -p "$outdir"
# One build at a time per output (the tests may call this concurrently); the
# wait is bounded, and the winner's result is used by the others.
exec 9>"$out.lock"
if ! flock -w 1800 9; then
    echo "build-cloud-image: $out.lock held for 30 minutes; giving up" >&2
    exit 1
fi
if cached; then
    exit 0
fi

start=$SECONDS
lap=$SECONDS
step() {
    echo "build-cloud-image: [$((SECONDS - start))s, +$((SECONDS - lap))s] $*"
    lap=$SECONDS
}

debs=$outdir/.cache/$name-debs
mkdir -p "$debs"
work=$(mktemp -d "$outdir/.build-$name.XXXXXX")
root=$work/root
mnt=$work/mnt
log=$work/build.log
loop=""
mounts=()   # mount points, unmounted in reverse order

cleanup() {
    local rc=$? i
    set +e
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        umount "${mounts[$i]}" 2>/dev/null || umount -l "${mounts[$i]}"
    done
    [ -n "$loop" ] && losetup -d "$loop"
    if [ $rc -ne 0 ]; then
        echo "build-cloud-image: FAILED (exit $rc) after $((SECONDS - start))s; last lines of the log:" >&2
        tail -n 40 "$log" >&2 2>/dev/null
    fi
    # Never remove through a mount that is still there (/dev is bound in).
    if findmnt -rn -o TARGET | grep -q "^$work/"; then
        echo "build-cloud-image: mounts left under $work; not removing it" >&2
    else
        rm -rf --one-file-system "$work"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bind() { # bind SRC DST: a bind mount, undone by cleanup
    mkdir -p "$2"
    mount --bind "$1" "$2"
    mounts+=("$2")
}
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true "$@"; }

step "building $out ($suite from $mirror, log in $log)"

# 1. The base system.
: >"$log"
debootstrap --variant=minbase --include=systemd-sysv,apt --cache-dir="$debs" \
    "$suite" "$root" "$mirror" >>"$log" 2>&1
step "debootstrap done"

# 2. Packages, inside the chroot. No documentation, no translations; no
#    daemon starts in the chroot.
mkdir -p "$root/proc" "$root/sys" "$root/dev"
mount -t proc proc "$root/proc"; mounts+=("$root/proc")
mount -t sysfs sysfs "$root/sys"; mounts+=("$root/sys")
bind /dev "$root/dev"
bind /dev/pts "$root/dev/pts"
bind "$debs" "$root/var/cache/apt/archives"
cat >"$root/usr/sbin/policy-rc.d" <<'EOF'
#!/bin/sh
exit 101
EOF
chmod 755 "$root/usr/sbin/policy-rc.d"
cat >"$root/etc/dpkg/dpkg.cfg.d/01-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security $suite-security main
EOF
cat >"$root/etc/apt/apt.conf.d/90cloudmaster" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
# Kernel symlinks in /boot (/boot/vmlinuz, /boot/initrd.img) for extlinux.conf.
cat >"$root/etc/kernel-img.conf" <<'EOF'
do_symlinks = yes
link_in_boot = yes
EOF
# A small initramfs (faster to unpack and start under TCG): the drivers for
# virtio, SCSI and IDE/SATA disks and ext4 rather than MODULES=most.
mkdir -p "$root/etc/initramfs-tools/conf.d"
echo "MODULES=list" >"$root/etc/initramfs-tools/conf.d/cloudmaster.conf"
cat >"$root/etc/initramfs-tools/modules" <<'EOF'
virtio_pci
virtio_blk
virtio_scsi
sd_mod
ata_piix
ahci
ext4
EOF
# cloud-init's default locale, generated now so that first boot does not run
# locale-gen (slow under TCG).
cat >"$root/tmp/debconf" <<'EOF'
locales locales/locales_to_be_generated multiselect en_US.UTF-8 UTF-8
locales locales/default_environment_locale select en_US.UTF-8
EOF
in_root debconf-set-selections /tmp/debconf
rm -f "$root/tmp/debconf"

in_root apt-get update -q >>"$log" 2>&1
in_root apt-get -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    dist-upgrade >>"$log" 2>&1
in_root apt-get -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install \
    linux-image-cloud-amd64 cloud-init cloud-guest-utils ifupdown isc-dhcp-client \
    openssh-server sudo netbase locales >>"$log" 2>&1
step "packages installed"

# 3. Configuration.
#    cloud-init: NoCloud only (the seed is in SMBIOS type 1 serial), so it
#    never probes the EC2/OpenStack metadata addresses.
cat >"$root/etc/cloud/cloud.cfg.d/90_cloudmaster.cfg" <<'EOF'
# cloudmaster: the seed comes from SMBIOS type 1 serial,
#   ds=nocloud-net;s=http://MASTER:8107/nocloud/{uuid}/
datasource_list: [ NoCloud, None ]
# Faster first boot under TCG: no RSA/DSA host keys (RSA-3072 takes seconds),
# no grub (the boot loader is extlinux).
ssh_genkeytypes: [ ed25519, ecdsa ]
grub_dpkg:
  enabled: false
EOF
grep -q '^LANG=en_US.UTF-8' "$root/etc/default/locale" 2>/dev/null ||
    echo "LANG=en_US.UTF-8" >"$root/etc/default/locale"
# Networking: ifupdown reads interfaces.d, where cloud-init writes its
# (fallback: DHCP on the first NIC) configuration.
cat >"$root/etc/network/interfaces" <<'EOF'
# Interfaces are configured by cloud-init in /etc/network/interfaces.d/.
auto lo
iface lo inet loopback

source /etc/network/interfaces.d/*
EOF
mkdir -p "$root/etc/network/interfaces.d"
# Bounded wait for the network: network-online.target (cloud-config,
# cloud-final) must never hang for minutes when DHCP gets nothing.
if [ -f "$root/lib/systemd/system/ifupdown-wait-online.service" ]; then
    mkdir -p "$root/etc/systemd/system/ifupdown-wait-online.service.d"
    cat >"$root/etc/systemd/system/ifupdown-wait-online.service.d/timeout.conf" <<'EOF'
[Service]
TimeoutStartSec=30
EOF
fi
echo localhost >"$root/etc/hostname"
cat >"$root/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF
# Per-instance identity is made on first boot: machine-id by systemd, SSH host
# keys by cloud-init.
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
rm -f "$root"/etc/ssh/ssh_host_*
# Periodic jobs and extra consoles only slow a test VM down (getty-static
# starts gettys on tty2..6 when there is no logind).
in_root systemctl disable apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    e2scrub_reap.service >>"$log" 2>&1 || true
in_root systemctl mask getty-static.service >>"$log" 2>&1
# Clean up.
in_root apt-get -y -q autoclean >>"$log" 2>&1
rm -f "$root/usr/sbin/policy-rc.d"
rm -rf "$root"/var/lib/apt/lists/* "$root"/tmp/* "$root"/var/tmp/* "$root"/var/log/*.log \
    "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
: >"$root/etc/resolv.conf"
for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[$i]}"; done
mounts=()
rm -rf "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
kver=$(readlink "$root/boot/vmlinuz" || true)
if [ -z "$kver" ] || [ ! -f "$root/boot/$kver" ] || [ ! -f "$root/boot/$(readlink "$root/boot/initrd.img")" ]; then
    echo "build-cloud-image: no kernel or initrd in /boot" >&2
    ls -l "$root/boot" >&2
    exit 1
fi
step "configured ($kver)"

# 4. The disk: an MBR with one bootable partition from 1 MiB; ext4 on it
#    through a loop device at that offset; the root copied in; extlinux.
raw=$work/disk.raw
truncate -s "$size" "$raw"
echo 'start=2048, type=83, bootable' | sfdisk -q "$raw" >>"$log" 2>&1
dd if="$mbr" of="$raw" bs=440 count=1 conv=notrunc status=none
bytes=$(stat -c %s "$raw")
loop=$(losetup -f --show -o 1048576 --sizelimit $((bytes - 1048576)) "$raw")
fsuuid=$(cat /proc/sys/kernel/random/uuid)
mkfs.ext4 -q -F -L cloudimg-rootfs -U "$fsuuid" -O ^64bit "$loop" >>"$log" 2>&1
mkdir -p "$mnt"
mount "$loop" "$mnt"
mounts+=("$mnt")
cp -a "$root/." "$mnt/"
cat >"$mnt/etc/fstab" <<EOF
UUID=$fsuuid / ext4 errors=remount-ro 0 1
EOF
mkdir -p "$mnt/boot/extlinux"
cat >"$mnt/boot/extlinux/extlinux.conf" <<EOF
DEFAULT debian
PROMPT 0
TIMEOUT 0
LABEL debian
  LINUX /boot/vmlinuz
  INITRD /boot/initrd.img
  APPEND root=UUID=$fsuuid ro console=tty0 console=ttyS0,115200n8
EOF
extlinux --install "$mnt/boot/extlinux" >>"$log" 2>&1
sync
umount "$mnt"
mounts=()
losetup -d "$loop"
loop=""
step "disk written"

# 5. qcow2, into place.
qemu-img convert -c -O qcow2 "$raw" "$work/out.qcow2"
rm -f "$stamp"
mv -f "$work/out.qcow2" "$out"
echo "$script_sum" >"$stamp"
step "done: $out ($(du -h "$out" | cut -f1), $size virtual)"
