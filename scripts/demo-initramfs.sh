#!/usr/bin/env bash
# Packs the busybox root filesystem at ROOTFS into an uncompressed initramfs for the quickstart's
# demo VM: /init mounts the kernel filesystems and hands over to busybox init, which runs a shell on
# the serial console and shuts down cleanly on Ctrl-Alt-Del (how `corral stop` asks a VM to stop).
# Usage: scripts/demo-initramfs.sh ROOTFS OUTPUT.cpio
set -euo pipefail
rootfs=${1:?usage: $0 ROOTFS OUTPUT.cpio}
output=${2:?usage: $0 ROOTFS OUTPUT.cpio}
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
cp -a "$rootfs/." "$staging/"
cat > "$staging/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec /sbin/init
INIT
chmod +x "$staging/init"
# busybox init turns Ctrl-Alt-Del into a SIGINT for itself (reboot(RB_DISABLE_CAD)) and runs the
# ctrlaltdel action. The demo kernel has no power-off method (no ACPI), so the action reboots:
# after a stop request the VMM ends the VM at that reboot instead of restarting it. The shutdown
# note goes through the kernel log: output the UART has not sent yet when init kills the shell is
# discarded with the hung-up terminal's buffer.
cat > "$staging/etc/inittab" <<'TAB'
::sysinit:/bin/hostname -F /etc/hostname
::sysinit:/bin/sh -c 'echo "corral demo VM: $(uname -sr), $(grep -c ^processor /proc/cpuinfo) vCPUs; corral stop shuts it down"'
::respawn:/bin/cttyhack /bin/sh
::ctrlaltdel:/bin/reboot
::shutdown:/bin/sh -c 'echo "corral demo: shutting down" > /dev/kmsg'
TAB
# Uncompressed: gunzip inside an emulated guest kernel costs a minute on some hosts.
(cd "$staging" && find . -print0 | cpio --null --create --format=newc --quiet) > "$output.tmp"
mv "$output.tmp" "$output"
