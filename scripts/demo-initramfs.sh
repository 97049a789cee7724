#!/usr/bin/env bash
# Packs the busybox root filesystem at ROOTFS into an uncompressed initramfs for the quickstart's
# demo VM: /init mounts the kernel filesystems and runs a shell on the serial console.
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
echo "corral demo VM: $(uname -sr), $(grep -c ^processor /proc/cpuinfo) vCPUs; type 'poweroff -f' to stop"
exec setsid cttyhack /bin/sh
INIT
chmod +x "$staging/init"
# Uncompressed: gunzip inside an emulated guest kernel costs a minute on some hosts.
(cd "$staging" && find . -print0 | cpio --null --create --format=newc --quiet) > "$output.tmp"
mv "$output.tmp" "$output"
