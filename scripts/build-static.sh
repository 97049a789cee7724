#!/usr/bin/env bash
# Builds corral as a fully static executable, the guest agent that runs in any Linux guest
# (`corral guest install-agent` and `corral image build` put it into guests; see docs/agent.md).
#
#   scripts/build-static.sh [--release]   -> target/static/{debug,release}/corral
#
# Debian's toolchain has no musl target here, so this is the gnu target with glibc linked
# statically (`+crt-static`), libseccomp from libseccomp-dev's libseccomp.a and liblzma from the
# sources lzma-sys bundles. `--target` keeps these flags off build scripts and proc macros and the
# objects in target/x86_64-unknown-linux-gnu/, away from the normal build's.
#
# glibc's static caveat: getpwnam, getaddrinfo and kin still load NSS modules at run time (and
# fail without the matching shared glibc). The agent never calls them: owners travel as numbers,
# and nothing in its paths resolves a name (only the host's jailed VMM looks up a user). The
# script refuses a binary that is not static; `file` calls it `static-pie linked` (the gnu
# target's default for +crt-static, with address randomisation kept).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
cargo_profile=dev
if [ "${1:-}" = --release ]; then
  profile=release
  cargo_profile=release
fi

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
  RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --locked --profile "$cargo_profile" --target "$triple" -p corral --bin corral

built="target/$triple/$profile/corral"
if ! file -L "$built" | grep -Eq 'statically linked|static-pie linked'; then
  echo "build-static.sh: $built is not statically linked: $(file -L "$built")" >&2
  exit 1
fi
mkdir -p "target/static/$profile"
# Without its debug info (135 MB of a debug build's 185): it is copied into guests.
strip --strip-debug -o "target/static/$profile/corral.tmp" "$built"
mv "target/static/$profile/corral.tmp" "target/static/$profile/corral"
echo "target/static/$profile/corral"
