#!/usr/bin/env bash
# Builds the real-Linux test guest: a small 6.1 kernel (ELF vmlinux, booted through PVH) and an
# uncompressed initramfs holding corral's own static init.
#
#   guests/linux/build.sh OUTDIR [FRAGMENT...]   -> OUTDIR/vmlinux, OUTDIR/initramfs.cpio
#
# FRAGMENTs are extra config files merged after guest.config (e.g. guest-full.config).
# The kernel comes from Debian's linux-source-6.1 package: `make tinyconfig`, then guest.config
# merged in, then emulated-kvm.patch (see README.md here for why each piece exists). The ~5 minute
# kernel build is cached under ${XDG_CACHE_HOME:-$HOME/.cache}/corral/guest-linux/<key>/, keyed by
# the config, the patch, the source package version and `recipe` below (bump it when the kernel
# build steps change), so later runs take seconds.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: build.sh OUTDIR [FRAGMENT...]}"
shift
fragments=("$here/guest.config")
for fragment in "$@"; do
  fragments+=("$(cd "$(dirname "$fragment")" && pwd)/$(basename "$fragment")")
done
mkdir -p "$out"

source_tarball=/usr/src/linux-source-6.1.tar.xz
if [ ! -f "$source_tarball" ]; then
  echo "build.sh: $source_tarball is missing; install it with: apt-get install linux-source-6.1" >&2
  exit 1
fi
source_version="$(dpkg-query -W -f '${Version}' linux-source-6.1)"

recipe=1
key="$(cat "${fragments[@]}" "$here/emulated-kvm.patch" <(echo "$source_version recipe=$recipe") |
  sha256sum | cut -c1-16)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/corral/guest-linux/$key"
mkdir -p "$cache"

# Several test processes may ask for the kernel at once: one builds, the others wait.
exec 9>"$cache/.lock"
flock 9

if [ ! -f "$cache/vmlinux" ]; then
  build="$cache/build"
  log="$cache/build.log"
  rm -rf "$build"
  mkdir -p "$build"
  echo "building the guest kernel (about 5 minutes on 2 cores; log: $log)" >&2
  {
    tar -xJf "$source_tarball" -C "$build" --strip-components=1
    cd "$build"
    patch -p1 <"$here/emulated-kvm.patch"
    make tinyconfig
    scripts/kconfig/merge_config.sh -m .config "${fragments[@]}"
    make olddefconfig
    make -j"$(nproc)" vmlinux
  } >"$log" 2>&1 || {
    echo "build.sh: the kernel build failed; the last lines of $log:" >&2
    tail -20 "$log" >&2
    exit 1
  }
  cp "$build/vmlinux" "$cache/vmlinux.tmp"
  cp "$build/.config" "$cache/config"
  mv "$cache/vmlinux.tmp" "$cache/vmlinux"
  rm -rf "$build"
fi
ln -sf "$cache/vmlinux" "$out/vmlinux"

# The init is tiny and changes with the tests, so it is rebuilt every time (well under a second).
gcc -static -Os -Wall -Werror -o "$out/init" "$here/init.c"
root="$out/initramfs"
rm -rf "$root"
mkdir -p "$root/dev"
cp "$out/init" "$root/init"
(cd "$root" && find . | LC_ALL=C sort | cpio --quiet -o -H newc --owner 0:0) >"$out/initramfs.cpio"
