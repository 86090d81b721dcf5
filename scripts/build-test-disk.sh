#!/bin/bash
# Build the tiny test guest as a bootable disk (docs/testing.md, "The two
# test guests"): the test image's root tree (scripts/build-test-image.sh:
# busybox-static, cm-guest, its rcS, inittab, acpid and udhcpc set-up) on an
# ext4 partition, booted by extlinux with the same Debian cloud kernel and a
# tiny initramfs that loads the virtio block driver, mounts /dev/vda1
# read-write and switch_roots to it. What the guest writes stays on its disk.
#
# Usage: build-test-disk.sh OUT.qcow2 [TEST_IMAGE_DIR]      (as root)
#
#   TEST_IMAGE_DIR is the test image's directory (default: cm-test next to
#   OUT, as `make image` lays them out); its initrd.img is the root tree and
#   its vmlinuz the kernel. The kernel's modules come from its Debian package
#   (the one build-test-image.sh caches in OUTDIR/.cache, downloaded when
#   missing), found from the version string inside vmlinuz.
#
# The disk: 256 MiB (CM_TEST_DISK_SIZE), an MBR with one bootable partition
# from 1 MiB, ext4 through a loop device at that offset (losetup -o: udev does
# not run on the build machines), syslinux's mbr.bin and extlinux. The kernel
# command line: root=/dev/vda1 rw console=ttyS0 no_timer_check quiet.
#
# Cached: when OUT exists and OUT.stamp holds the sha256 of this script, the
# test image's vmlinuz and its initrd.img, it exits at once. Otherwise it
# builds in a temporary directory next to OUT (removed on any exit, with its
# mount and loop device) and renames the result into place. Nothing prompts.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 OUT.qcow2 [TEST_IMAGE_DIR]" >&2
    exit 2
fi
out=$1
case $out in /*) ;; *) out=$PWD/$out ;; esac
outdir=$(dirname "$out")
name=$(basename "$out" .qcow2)
image=${2:-$outdir/cm-test}
stamp=$out.stamp
size=${CM_TEST_DISK_SIZE:-256M}
say() { echo "build-test-disk: $*"; }
die() { echo "build-test-disk: $*" >&2; exit 1; }

for f in vmlinuz initrd.img; do
    [ -f "$image/$f" ] || die "$image/$f missing: build the test image first (make image)"
done
key=$(cat "$0" "$image/vmlinuz" "$image/initrd.img" | sha256sum | cut -d' ' -f1)
cached() { [ -f "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; }
if cached; then
    exit 0
fi

[ "$(id -u)" = 0 ] || die "needs root (loop device, mount, extlinux)"
for tool in sfdisk mkfs.ext4 losetup extlinux qemu-img cpio gzip flock dpkg-deb apt-get od; do
    command -v "$tool" >/dev/null || die "$tool missing; run scripts/install-deps.sh"
done
mbr=/usr/lib/syslinux/mbr/mbr.bin
[ -f "$mbr" ] || die "$mbr missing (package syslinux-common)"
[ -x /bin/busybox ] || die "/bin/busybox missing (package busybox-static)"

mkdir -p "$outdir"
# One build at a time per output (tests may call this concurrently); the
# wait is bounded, and the winner's result is used by the others.
exec 9>"$out.lock"
flock -w 600 9 || die "$out.lock held for 10 minutes; giving up"
if cached; then
    exit 0
fi
start=$SECONDS

work=$(mktemp -d "$outdir/.build-$name.XXXXXX")
mnt=$work/mnt
loop=""
mounted=""
cleanup() {
    local rc=$?
    set +e
    [ -n "$mounted" ] && { umount "$mnt" 2>/dev/null || umount -l "$mnt"; }
    [ -n "$loop" ] && losetup -d "$loop"
    [ $rc -ne 0 ] && echo "build-test-disk: FAILED (exit $rc)" >&2
    if findmnt -rn -o TARGET | grep -q "^$work/"; then
        echo "build-test-disk: a mount is left under $work; not removing it" >&2
    else
        rm -rf --one-file-system "$work"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. The kernel: which one vmlinuz is, from the version string its boot
#    header points to ("6.1.0-57-cloud-amd64 (...) #1 SMP ... Debian
#    6.1.192-3 (...)"), then that package, for its modules.
kernel=$image/vmlinuz
ptr=$(od -An -tu2 -j $((0x20E)) -N2 "$kernel" | tr -d ' ')
[ -n "$ptr" ] && [ "$ptr" -gt 0 ] || die "$kernel: no kernel version in its boot header"
kstring=$(dd if="$kernel" bs=1 skip=$((ptr + 0x200)) count=256 status=none | tr '\0' '\n' | head -n1)
krel=${kstring%% *}
kver=$(printf '%s\n' "$kstring" | sed -n 's/.* Debian \([^ ]*\) .*/\1/p')
[ -n "$krel" ] && [ -n "$kver" ] || die "$kernel: cannot read its release and Debian version from '$kstring'"
kpkg=linux-image-$krel
say "building $out from $image ($kpkg $kver)"

cache=$outdir/.cache
mkdir -p "$cache"
deb=""
for d in "$cache/${kpkg}_"*.deb; do
    [ -f "$d" ] && [ "$(dpkg-deb -f "$d" Version)" = "$kver" ] && deb=$d
done
if [ -z "$deb" ]; then
    (cd "$cache" && apt-get download -q "$kpkg=$kver" >/dev/null 2>&1) ||
        (cd "$cache" && apt-get download "$kpkg=$kver") ||
        die "cannot download $kpkg=$kver (apt-get update?)"
    deb=$(ls "$cache/${kpkg}_${kver}_"*.deb | head -n1)
fi
dpkg -x "$deb" "$work/kernel"
cmp -s "$work/kernel/boot/vmlinuz-$krel" "$kernel" ||
    die "$kernel is not the vmlinuz of $deb"
kmods=$work/kernel/lib/modules/$krel

# 2. The initramfs: busybox, the modules that reach the root (virtio's PCI
#    transport, virtio_blk, ext4 unless built in) after their dependencies
#    (each .ko's modinfo "depends="), and /init.
initramfs=$work/initramfs
mkdir -p "$initramfs"/{bin,dev,proc,sys,newroot,lib/modules,etc}
cp /bin/busybox "$initramfs/bin/busybox"
for applet in sh mount umount insmod sleep cat switch_root; do
    ln -s busybox "$initramfs/bin/$applet"
done
declare -A ko_of=() loaded=()
while IFS= read -r f; do
    m=$(basename "$f" .ko)
    ko_of[${m//-/_}]=$f
done < <(find "$kmods/kernel" -name '*.ko')
: >"$initramfs/etc/modules"
add_module() { # add_module NAME: its dependencies first, then itself
    local m=${1//-/_} d deps
    [ -n "${loaded[$m]:-}" ] && return 0
    loaded[$m]=1
    if [ -z "${ko_of[$m]:-}" ]; then
        grep -q "/$1.ko\$" "$kmods/modules.builtin" || grep -q "/$m.ko\$" "$kmods/modules.builtin" ||
            die "module $1 is neither in $kpkg nor built in"
        return 0
    fi
    deps=$(tr '\0' '\n' <"${ko_of[$m]}" | sed -n 's/^depends=//p' | head -n1)
    for d in ${deps//,/ }; do add_module "$d"; done
    cp "${ko_of[$m]}" "$initramfs/lib/modules/$m.ko"
    echo "$m" >>"$initramfs/etc/modules"
}
for m in virtio_pci virtio_blk ext4; do add_module "$m"; done
cat >"$initramfs/init" <<'EOF'
#!/bin/sh
# The test disk's initramfs: the block driver, then the root (root= on the
# kernel command line, read-write), then its /sbin/init.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /etc/modules); do
    insmod "/lib/modules/$m.ko" || echo "cm-initramfs: insmod $m failed"
done
root=/dev/vda1
for arg in $(cat /proc/cmdline); do
    case $arg in root=/dev/*) root=${arg#root=} ;; esac
done
i=0
while [ ! -b "$root" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if ! mount -t ext4 -o rw "$root" /newroot; then
    echo "cm-initramfs: cannot mount $root; a shell:"
    exec sh
fi
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
EOF
chmod 755 "$initramfs/init"

# 3. The root: the test image's tree as it is, plus what a root on a disk
#    needs: console and null nodes (before devtmpfs), an fstab, a shutdown
#    step that leaves the file system clean, and /boot.
root=$work/root
mkdir -p "$root"
magic=$(od -An -tx1 -N2 "$image/initrd.img" | tr -d ' ')
case $magic in
    1f8b) gzip -dc "$image/initrd.img" ;;
    3037) cat "$image/initrd.img" ;;
    *) die "$image/initrd.img: not a gzip'd or plain cpio archive" ;;
esac | (cd "$root" && cpio -idm --quiet --no-absolute-filenames)
[ -e "$root/sbin/init" ] && [ -f "$root/etc/inittab" ] || die "$image/initrd.img has no /sbin/init or /etc/inittab"
rm -f "$root/init"
mkdir -p "$root/dev" "$root/boot/extlinux"
[ -e "$root/dev/console" ] || mknod -m 600 "$root/dev/console" c 5 1
[ -e "$root/dev/null" ] || mknod -m 666 "$root/dev/null" c 1 3
printf '/dev/vda1 / ext4 rw 0 1\n' >"$root/etc/fstab"
# busybox init runs the shutdown actions before it signals every process:
# stop the writers on the root, then make it read-only (a clean journal).
cat >"$root/etc/init.d/rcK" <<'EOF'
#!/bin/sh
# The test disk's shutdown: the daemons, then / read-only.
killall acpid cm-guest 2>/dev/null
sleep 0.2
sync
mount -o remount,ro / || echo "cm-init: / stays read-write"
EOF
chmod 755 "$root/etc/init.d/rcK"
echo '::shutdown:/etc/init.d/rcK' >>"$root/etc/inittab"
cp "$kernel" "$root/boot/vmlinuz"
(cd "$initramfs" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -6) >"$root/boot/initrd.img"
cat >"$root/boot/extlinux/extlinux.conf" <<'EOF'
DEFAULT cm-test
PROMPT 0
TIMEOUT 0
LABEL cm-test
  LINUX /boot/vmlinuz
  INITRD /boot/initrd.img
  APPEND root=/dev/vda1 rw console=ttyS0 no_timer_check quiet
EOF

# 4. The disk.
raw=$work/disk.raw
truncate -s "$size" "$raw"
echo 'start=2048, type=83, bootable' | sfdisk -q "$raw"
dd if="$mbr" of="$raw" bs=440 count=1 conv=notrunc status=none
bytes=$(stat -c %s "$raw")
loop=$(losetup -f --show -o 1048576 --sizelimit $((bytes - 1048576)) "$raw")
mkfs.ext4 -q -F -L cm-test-root -O ^64bit "$loop"
mkdir -p "$mnt"
mount "$loop" "$mnt"
mounted=1
cp -a "$root/." "$mnt/"
# (extlinux warns that a loop device has no geometry: harmless here.)
if ! said=$(extlinux --install "$mnt/boot/extlinux" 2>&1) || [ ! -f "$mnt/boot/extlinux/ldlinux.sys" ]; then
    die "extlinux --install failed: $said"
fi
sync
umount "$mnt"
mounted=""
losetup -d "$loop"
loop=""

# 5. qcow2, into place.
qemu-img convert -c -O qcow2 "$raw" "$work/out.qcow2"
rm -f "$stamp"
mv -f "$work/out.qcow2" "$out"
echo "$key" >"$stamp"
say "done in $((SECONDS - start))s: $out ($(du -h "$out" | cut -f1), $size virtual; modules: $(paste -sd' ' "$initramfs/etc/modules"))"
