#!/usr/bin/env bash
# Builds corral's executables fully static:
#
#   scripts/build-static.sh [--release]   -> target/static/{debug,release}/corral
#   scripts/build-static.sh --vmm         -> target/static/vmm/corral-vmm
#
# corral itself is the guest agent that runs in any Linux guest (`corral guest install-agent` and
# `corral image build` put it into guests; see docs/agent.md). Debian's toolchain has no musl
# build of libseccomp (the container engine's), so corral is built for the gnu target with glibc
# linked statically (`+crt-static`), libseccomp from libseccomp-dev's libseccomp.a and liblzma
# from the sources lzma-sys bundles. `--target` keeps these flags off build scripts and proc
# macros and the objects in target/<triple>/, away from the normal build's.
#
# glibc's static caveat: getpwnam, getaddrinfo and kin still load NSS modules at run time (and
# fail without the matching shared glibc). The agent never calls them: owners travel as numbers,
# and nothing in its paths resolves a name. The script refuses a binary that is not static;
# `file` calls the agent `static-pie linked` (the gnu target's default for +crt-static, with
# address randomisation kept).
#
# `--vmm` builds the VMM-only `corral-vmm` (package corral-vmm-cli, which links no C library) as
# bench/vmm-start measures it and as Firecracker ships: against musl (a libc that pages in a
# fraction of static glibc's code and has no start-up relocations of its own), with the `vmm`
# profile (the whole program optimised at once, for size) and not position-independent (nothing
# to relocate at start), its code laid out in the order a VM's run executes it (lld's
# --symbol-ordering-file from scripts/vmm-symbol-order.py, which watches test guests run under
# valgrind), so a VM's process pages in the least (docs/vmm.md). The musl target is added with
# rustup when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
cargo_profile=dev
case "${1:-}" in
  --release) profile=release cargo_profile=release ;;
  --vmm) profile=vmm cargo_profile=vmm ;;
esac

if [ "$profile" = vmm ]; then
  bin=corral-vmm
  triple=x86_64-unknown-linux-musl
  if ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
    rustup target add "$triple" >&2 ||
      { echo "build-static.sh: the $triple target is missing and rustup could not add it" >&2; exit 1; }
  fi
  export RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static"
  cargo build --locked --profile vmm --target "$triple" -p corral-vmm-cli --bin corral-vmm
  # Then linked again (by lld, the gnu target's linker, which rustup ships) with the functions a
  # VM's run executes first (scripts/vmm-symbol-order.py): the code the process pages in is then
  # side by side instead of spread through the text.
  lld_dir="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/gcc-ld"
  order="$PWD/target/$triple/vmm/symbol-order.txt"
  if ! command -v valgrind >/dev/null || [ ! -w /dev/kvm ] || [ ! -x "$lld_dir/ld.lld" ]; then
    echo "build-static.sh: corral-vmm keeps the compiler's layout: ordering its code needs valgrind (apt-get install valgrind), /dev/kvm and rustup's lld" >&2
  else
    cargo build --locked --release --quiet -p corral-guests
    guests="$(ls -td target/release/build/corral-guests-*/out | head -1)"
    python3 scripts/vmm-symbol-order.py "target/$triple/vmm/corral-vmm" "$guests" "$order"
    cargo rustc --locked --profile vmm --target "$triple" -p corral-vmm-cli --bin corral-vmm -- \
      -C link-arg=-fuse-ld=lld -C "link-arg=-B$lld_dir" \
      -C "link-arg=-Wl,--symbol-ordering-file=$order" -C link-arg=-Wl,--no-warn-symbol-ordering
  fi
else
  bin=corral
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
fi

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
