#!/usr/bin/env bash
# Builds corral's executables fully static:
#
#   scripts/build-static.sh [--release]   -> target/static/{debug,release}/corral
#   scripts/build-static.sh --vmm         -> target/static/vmm/corral-vmm
#
# corral itself is the guest agent that runs in any Linux guest (`corral guest install-agent` and
# `corral image build` put it into guests; see docs/agent.md). `--vmm` builds the VMM-only
# `corral-vmm` as bench/vmm-start measures it: the `vmm` profile (the whole program optimised at
# once) and not position-independent (nothing to relocate at start), so a VM's process pages in
# the least (docs/vmm.md).
#
# Debian's toolchain has no musl target here, so this is the gnu target with glibc linked
# statically (`+crt-static`), libseccomp from libseccomp-dev's libseccomp.a and liblzma from the
# sources lzma-sys bundles. `--target` keeps these flags off build scripts and proc macros and the
# objects in target/x86_64-unknown-linux-gnu/, away from the normal build's.
#
# glibc's static caveat: getpwnam, getaddrinfo and kin still load NSS modules at run time (and
# fail without the matching shared glibc). The agent never calls them: owners travel as numbers,
# and nothing in its paths resolves a name (only the host's jailed VMM looks up a user, on the
# host, whose glibc is there). The script refuses a binary that is not static; `file` calls the
# agent `static-pie linked` (the gnu target's default for +crt-static, with address
# randomisation kept).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
cargo_profile=dev
bin=corral
rustflags="-C target-feature=+crt-static"
case "${1:-}" in
  --release) profile=release cargo_profile=release ;;
  --vmm)
    profile=vmm cargo_profile=vmm bin=corral-vmm
    rustflags="$rustflags -C relocation-model=static"
    ;;
esac

triple="$(rustc -vV | sed -n 's/^host: //p')"
case "$triple" in
  *-linux-gnu) ;;
  *) echo "build-static.sh: expected a *-linux-gnu host toolchain, not $triple" >&2; exit 1 ;;
esac
libdir="$(gcc -print-file-name=libseccomp.a)"
if [ "$libdir" = libseccomp.a ]; then
  echo "build-static.sh: libseccomp.a is missing; install it with: apt-get install libseccomp-dev" >&2
  exit 1
fi

LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH="$(dirname "$libdir")" LZMA_API_STATIC=1 \
  RUSTFLAGS="$rustflags" \
  cargo build --locked --profile "$cargo_profile" --target "$triple" -p corral --bin "$bin"

built="target/$triple/$profile/$bin"
if ! file -L "$built" | grep -Eq 'statically linked|static-pie linked'; then
  echo "build-static.sh: $built is not statically linked: $(file -L "$built")" >&2
  exit 1
fi
mkdir -p "target/static/$profile"
# Without its debug info (135 MB of a debug build's 185): it is copied into guests.
strip --strip-debug -o "target/static/$profile/$bin.tmp" "$built"
mv "target/static/$profile/$bin.tmp" "target/static/$profile/$bin"
echo "target/static/$profile/$bin"
