#!/bin/bash
# Build the tiny test guest (DESIGN.md §6) from Debian packages:
#   the Debian cloud kernel (apt-get download + dpkg -x), an initramfs with
#   busybox-static, the virtio modules, and cm-guest.
# Usage: build-test-image.sh CM_GUEST_BINARY OUTDIR
# Writes OUTDIR/vmlinuz, OUTDIR/initrd.img and OUTDIR/VERSION. Skips the work
# when its inputs (this script, the kernel package, cm-guest) are unchanged.
set -euo pipefail

guest_bin=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
cache=$(dirname "$out")/.cache
mkdir -p "$out" "$cache"

# The kernel: the current linux-image-cloud-amd64, resolved to its versioned package.
meta=linux-image-cloud-amd64
kpkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$kpkg" ]; then
    echo "build-test-image: cannot resolve $meta (apt-get update?)" >&2
    exit 1
fi
kver=$(apt-cache show "$kpkg" | awk '/^Version:/{print $2; exit}')

guest_sum=none
[ -f "$guest_bin" ] && guest_sum=$(sha256sum "$guest_bin" | cut -d' ' -f1)
key=$(printf '%s\n' "$(sha256sum "$0" | cut -d' ' -f1)" "$kpkg" "$kver" "$guest_sum" | sha256sum | cut -d' ' -f1)
if [ -f "$out/VERSION" ] && [ "$(cat "$out/VERSION")" = "$key" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ]; then
    exit 0
fi
echo "building the test image ($kpkg $kver)"

deb=$(ls "$cache/${kpkg}_"*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ] || ! dpkg-deb -f "$deb" Version | grep -qx "$kver"; then
    rm -f "$cache/${kpkg}_"*.deb
    (cd "$cache" && apt-get download -q "$kpkg=$kver" 2>/dev/null >/dev/null) || (cd "$cache" && apt-get download "$kpkg=$kver")
    deb=$(ls "$cache/${kpkg}_"*.deb | head -n1)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg -x "$deb" "$work/kernel"
kdir=$(ls -d "$work"/kernel/lib/modules/*/kernel | head -n1)
root=$work/root
mkdir -p "$root"/{bin,sbin,etc/init.d,etc/acpi/PWRF,lib/modules,proc,sys,dev,tmp,run,root,mnt,var/log,usr/share/udhcpc}

# busybox-static, with a link per applet; /init is busybox's init.
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
for applet in init poweroff reboot halt; do ln -sf ../bin/busybox "$root/sbin/$applet"; done
ln -s bin/busybox "$root/init"

# Modules, in load order (dependencies first).
modules="drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev
drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci net/core/failover
drivers/net/net_failover drivers/net/virtio_net drivers/block/virtio_blk
drivers/char/virtio_console drivers/char/hw_random/virtio-rng drivers/acpi/button drivers/input/evdev
drivers/firmware/qemu_fw_cfg"
: > "$root/etc/modules"
for m in $modules; do
    cp "$kdir/$m.ko" "$root/lib/modules/"
    basename "$m" >> "$root/etc/modules"
done

# A module and, first, what it depends on (read from the .ko's modinfo
# section: the package ships no modules.dep, and depmod/modinfo may be absent).
add_module() {
    local name=$1 ko dep
    grep -qx "$name" "$root/etc/modules" && return 0
    ko=$(find "$kdir" \( -name "$name.ko" -o -name "$(echo "$name" | tr _ -).ko" \) | head -n1)
    if [ -z "$ko" ]; then
        echo "build-test-image: no module $name in $kpkg" >&2
        exit 1
    fi
    for dep in $(tr '\0' '\n' < "$ko" | grep -a -m1 '^depends=' | cut -d= -f2 | tr , ' '); do
        add_module "$dep"
    done
    cp "$ko" "$root/lib/modules/$name.ko"
    echo "$name" >> "$root/etc/modules"
}

# Volumes (docs/storage.md): a hot-plugged disk is seen only with ACPI PCI
# hot-plug (the seed's UEC image lacked acpiphp); since Linux 3.12 it is a
# bool, so it must be built in. virtio_blk (above) takes the new PCI device.
# A file system on a volume: busybox's mke2fs makes ext2, which the ext4
# driver mounts (CONFIG_EXT4_USE_FOR_EXT2). Debian's cloud kernel builds
# all of these in; a kernel that has them as modules gets them loaded.
config=$(ls "$work"/kernel/boot/config-* | head -n1)
kconf() { sed -n "s/^CONFIG_$1=//p" "$config"; }
if [ "$(kconf HOTPLUG_PCI_ACPI)" != y ]; then
    echo "build-test-image: $kpkg lacks CONFIG_HOTPLUG_PCI_ACPI=y: hot-plugged volumes would be invisible" >&2
    exit 1
fi
case "$(kconf EXT4_FS)" in
    y) ;;
    m) add_module ext4 ;;
    *) echo "build-test-image: $kpkg has no ext4" >&2; exit 1 ;;
esac
[ "$(kconf CRYPTO_CRC32C)" = m ] && add_module crc32c_generic
if [ "$(kconf EXT4_USE_FOR_EXT2)" != y ]; then
    case "$(kconf EXT2_FS)" in
        y) ;;
        m) add_module ext2 ;;
        *) echo "build-test-image: $kpkg cannot mount ext2 (busybox mke2fs)" >&2; exit 1 ;;
    esac
fi

if [ -f "$guest_bin" ]; then
    cp "$guest_bin" "$root/sbin/cm-guest"
fi

# --- rsync, for cm-guest's [[sync]] (docs/guest.md) -----------------------
# Debian's dynamically linked rsync, with the shared libraries ldd lists and
# the dynamic loader, each at the path ldd gives (the loader looks there).
rsync_bin=$(command -v rsync || true)
if [ -z "$rsync_bin" ]; then
    echo "build-test-image: rsync is not installed (apt-get install rsync)" >&2
    exit 1
fi
mkdir -p "$root/usr/bin"
cp -L "$rsync_bin" "$root/usr/bin/rsync"
for lib in $(ldd "$rsync_bin" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
# --- end of rsync -----------------------------------------------------------
# cm-guest's settings (docs/guest.md) and a demo handler for configs in
# other formats: it keeps the config and reports two parameters.
mkdir -p "$root/usr/libexec"
cat > "$root/etc/cm-guest.toml" <<'EOF'
handler = "/usr/libexec/cm-guest-handler"
heartbeat_secs = 2
state_dir = "/run/cm-guest"
EOF
cat > "$root/usr/libexec/cm-guest-handler" <<'EOF'
#!/bin/sh
# Applies nothing: keeps the config in /run/handled-config for a look.
cat > /run/handled-config || exit 1
echo handled=yes
echo bytes=$(wc -c < /run/handled-config)
EOF
chmod +x "$root/usr/libexec/cm-guest-handler"

cat > "$root/etc/inittab" <<'EOF'
::sysinit:/etc/init.d/rcS
ttyS0::respawn:-/bin/sh
::ctrlaltdel:/sbin/poweroff
::shutdown:/bin/sync
EOF

cat > "$root/etc/init.d/rcS" <<'EOF'
#!/bin/sh
# The test guest's boot: filesystems, modules, network, ACPI, then cm-guest.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
for m in $(cat /etc/modules); do insmod "/lib/modules/$m.ko" 2>/dev/null; done
hostname cm-guest
ip link set lo up
if ip link show eth0 >/dev/null 2>&1; then
    ip link set eth0 up
    udhcpc -i eth0 -q -n -t 10 -T 1 -s /usr/share/udhcpc/default.script >/dev/null 2>&1
fi
acpid -c /etc/acpi -l /var/log/acpid.log
# The guest agent; what it says goes to the serial console (and so to the
# host's console log, where tests and `cm instance console` read it).
[ -x /sbin/cm-guest ] && /sbin/cm-guest >/dev/console 2>&1 </dev/null &
mem=$(awk '/^MemTotal:/{print $2}' /proc/meminfo)
addr=$(ip -4 -o addr show eth0 2>/dev/null | awk '{print $4}')
echo "cm-init: ready uptime=$(cut -d' ' -f1 /proc/uptime) mem_total_kb=$mem nproc=$(nproc) addr=$addr"
EOF
chmod +x "$root/etc/init.d/rcS"

# ACPI power button (QMP system_powerdown) -> a clean poweroff.
printf 'PWRF PWRF/00000080\n' > "$root/etc/acpid.conf"
printf '#!/bin/sh\nexec /sbin/poweroff\n' > "$root/etc/acpi/PWRF/00000080"
chmod +x "$root/etc/acpi/PWRF/00000080"

cat > "$root/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
case "$1" in
    bound|renew)
        ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}"
        if [ -n "$router" ]; then
            ip route del default 2>/dev/null
            ip route add default via "${router%% *}" dev "$interface"
        fi
        : > /etc/resolv.conf
        for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
        ;;
    deconfig)
        ifconfig "$interface" 0.0.0.0
        ;;
esac
EOF
chmod +x "$root/usr/share/udhcpc/default.script"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"

(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -6) > "$out/initrd.img.tmp"
cp "$work"/kernel/boot/vmlinuz-* "$out/vmlinuz.tmp"
mv "$out/initrd.img.tmp" "$out/initrd.img"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
echo "$key" > "$out/VERSION"
echo "test image: $out ($(du -h "$out/initrd.img" | cut -f1) initrd, kernel $kpkg)"
