#!/usr/bin/env bash
# Sets up a fresh Debian host for corral (apt packages, release build), checks the host, and
# launches the default instance: a system container from a busybox root filesystem. Run again,
# it reuses what exists. Set CORRAL_ROOT to keep corral's state somewhere other than
# /var/lib/corral.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo build --release --quiet --bin corral
corral=target/release/corral

echo "== corral host check"
"$corral" host check || { echo "this host cannot run instances; see the FAIL lines above" >&2; exit 1; }

cache=${XDG_CACHE_HOME:-$HOME/.cache}/corral
rootfs=$cache/busybox-rootfs
[ -x "$rootfs/bin/busybox" ] || scripts/busybox-rootfs.sh "$rootfs"

echo "== the default instance: demo (a busybox system container)"
if ! "$corral" info demo >/dev/null 2>&1; then
  "$corral" create demo --rootfs "$rootfs" --init --memory 128M --pids-limit 200
fi
if ! "$corral" list | grep -q '^demo '; then
  "$corral" start demo
fi

echo "== corral list"
"$corral" list
echo
echo "attach with: $corral console demo   (Ctrl-] detaches)"
