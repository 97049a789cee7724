#!/usr/bin/env bash
# Sets up a fresh Debian host for corral (apt packages, release build), checks the host, builds
# the busybox image (images/busybox.toml) and launches the default instances: a system container
# from that image, and a Linux VM (corral's small guest kernel, built once and cached, with a
# busybox shell on its serial console).
# Run again, it reuses what exists. Set CORRAL_ROOT to keep corral's state somewhere other than
# /var/lib/corral; set CORRAL_NO_VM=1 to skip the VM.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo build --release --quiet --bin corral
corral=target/release/corral

echo "== corral host check"
"$corral" host check || { echo "this host cannot run instances; see the FAIL lines above" >&2; exit 1; }

cache=${XDG_CACHE_HOME:-$HOME/.cache}/corral

echo "== the busybox image (corral image build images/busybox.toml)"
if ! "$corral" image info busybox >/dev/null 2>&1; then
  "$corral" image build images/busybox.toml --var out="$cache/image-outputs"
fi
"$corral" image list

echo "== the default instance: demo (a system container from the busybox image)"
if ! "$corral" info demo >/dev/null 2>&1; then
  "$corral" create demo --image busybox --memory 128M --pids-limit 200
fi
if ! "$corral" list | grep -q '^demo '; then
  "$corral" start demo
fi

if [ -z "${CORRAL_NO_VM:-}" ]; then
  echo "== the demo VM: demo-vm (Linux on corral's VMM)"
  guests/linux/build.sh "$cache/guest-linux" >/dev/null
  rootfs=$cache/busybox-rootfs
  [ -x "$rootfs/bin/busybox" ] || scripts/busybox-rootfs.sh "$rootfs"
  initramfs=$cache/demo-initramfs.cpio
  [ "$initramfs" -nt scripts/demo-initramfs.sh ] || scripts/demo-initramfs.sh "$rootfs" "$initramfs"
  if ! "$corral" info demo-vm >/dev/null 2>&1; then
    "$corral" create demo-vm --kernel "$cache/guest-linux/vmlinux" --initrd "$initramfs" \
      --cmdline "$(cat guests/linux/cmdline)" --cpus 2 --memory 256M
  fi
  if ! "$corral" list | grep -q '^demo-vm '; then
    "$corral" start demo-vm
  fi
  if ! grep -qw -e vmx -e svm /proc/cpuinfo; then
    echo "note: without VT-x/AMD-V this host emulates guest kernel code: demo-vm takes about a minute to boot"
  fi
fi

echo "== corral list"
"$corral" list
echo
echo "attach with: $corral console demo   (or demo-vm; Ctrl-] detaches)"
