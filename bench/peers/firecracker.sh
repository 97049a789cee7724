#!/usr/bin/env bash
# Builds Firecracker for the side-by-side benchmarks (bench/vmm-start) from checkouts you provide,
# into a directory beside them: nothing of Firecracker enters this repository.
#
#   bench/peers/firecracker.sh FIRECRACKER_DIR MICRO_HTTP_DIR [OUT_DIR]
#
# FIRECRACKER_DIR: a checkout of github.com/firecracker-microvm/firecracker (any commit; its
# newest is what the benchmarks are meant for; its test resources are not needed, so a checkout
# that lacks one, e.g. a clone of a mirror without the blob of
# src/vmm/src/test_utils/mock_resources/test_noisy_elf.bin, checked out with that path excluded
# (`git sparse-checkout set --no-cone '/*' '!/PATH'`), builds). MICRO_HTTP_DIR: a checkout of
# github.com/firecracker-microvm/micro-http, which Firecracker takes by git; it is patched in by
# path, so the build needs no network beyond crates.io. OUT_DIR defaults to
# FIRECRACKER_DIR/../firecracker-build. Prints the binary's path last; its jailer (the
# chroot, namespaces and user a production Firecracker runs in) is built beside it, as OUT_DIR/jailer.
#
# Built as Firecracker releases are: static musl, release profile, with its default seccomp
# filters compiled in (so the benchmark's Firecracker pays for its filters as corral does). Its
# rust-toolchain.toml pins a toolchain that may not be installed; the stable one builds it.
# Needs musl-tools (musl-gcc, for aws-lc-sys's C) and libclang-dev (bindgen, for
# userfaultfd-sys): installed with apt-get when run as root, else named. musl-gcc has no kernel
# headers of its own; userfaultfd-sys's C needs <linux/userfaultfd.h>, so the system's
# (linux-libc-dev) are searched after musl's.
set -euo pipefail
firecracker=$(realpath "${1:?usage: $0 FIRECRACKER_DIR MICRO_HTTP_DIR [OUT_DIR]}")
micro_http=$(realpath "${2:?usage: $0 FIRECRACKER_DIR MICRO_HTTP_DIR [OUT_DIR]}")
out=$(realpath -m "${3:-$firecracker/../firecracker-build}")
[ -f "$firecracker/src/firecracker/Cargo.toml" ] ||
  { echo "firecracker.sh: $firecracker is not a Firecracker checkout (no src/firecracker)" >&2; exit 1; }
[ -f "$micro_http/Cargo.toml" ] ||
  { echo "firecracker.sh: $micro_http is not a micro-http checkout (no Cargo.toml)" >&2; exit 1; }

packages=()
command -v musl-gcc >/dev/null || packages+=(musl-tools)
ldconfig -p | grep -q 'libclang\(-[0-9.]*\)\?\.so' || packages+=(libclang-dev)
if ((${#packages[@]})); then
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y -q "${packages[@]}" >/dev/null ||
      { apt-get update -q >/dev/null && apt-get install -y -q "${packages[@]}" >/dev/null; }
  else
    echo "firecracker.sh: needs ${packages[*]}: sudo apt-get install ${packages[*]}" >&2
    exit 1
  fi
fi
rustup target add --toolchain stable x86_64-unknown-linux-musl >/dev/null

mkdir -p "$out"
(cd "$firecracker" &&
  CC_x86_64_unknown_linux_musl=musl-gcc \
  CFLAGS_x86_64_unknown_linux_musl="-idirafter /usr/include -idirafter /usr/include/x86_64-linux-gnu" \
  RUSTUP_TOOLCHAIN=stable CARGO_TARGET_DIR="$out/target" \
    cargo build --release -p firecracker -p jailer --target x86_64-unknown-linux-musl \
    --config "patch.\"https://github.com/firecracker-microvm/micro-http\".micro_http.path=\"$micro_http\"")
cp "$out/target/x86_64-unknown-linux-musl/release/firecracker" "$out/firecracker"
cp "$out/target/x86_64-unknown-linux-musl/release/jailer" "$out/jailer"
echo "$out/firecracker"
