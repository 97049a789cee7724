#!/usr/bin/env bash
# Builds corral's Debian package from the workspace:
#
#   scripts/package.sh [--binary PATH] [--out DIR] [--no-lint]   -> DIR/corral_VERSION_ARCH.deb
#
# The release binaries are built (cargo build --release) unless --binary names one (the package
# test packages the binary under test; the corral-vmm and corral-monitor beside it go with it). The
# package holds /usr/bin/corral, /usr/bin/corral-vmm (the VMM-only executable VMs run in) and
# /usr/bin/corral-monitor (the monitor-only executable containers are supervised by), the corral-oci
# symlink, the systemd unit (packaging/systemd/), the completion scripts and man pages the binary
# generates (`corral __generate`), and the maintainer scripts of packaging/debian/. Then lintian checks it
# (errors fail, warnings are printed) unless --no-lint. DIR defaults to target/debian. The
# package's path is the only line on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

binary=""
out="$repo/target/debian"
lint=yes
while (($#)); do
  case "$1" in
    --binary) binary="$(realpath "${2:?--binary needs a path}")"; shift 2 ;;
    --out) out="$(realpath -m "${2:?--out needs a directory}")"; shift 2 ;;
    --no-lint) lint=""; shift ;;
    *) echo "usage: scripts/package.sh [--binary PATH] [--out DIR] [--no-lint]" >&2; exit 2 ;;
  esac
done

if [ -z "$binary" ]; then
  cargo build --release --locked --quiet -p corral -p corral-vmm-cli >&2
  binary="$repo/target/release/corral"
fi

vmm="$(dirname "$binary")/corral-vmm"
[ -x "$vmm" ] || { echo "package.sh: $vmm is missing: cargo build --release -p corral-vmm-cli builds it" >&2; exit 1; }
monitor="$(dirname "$binary")/corral-monitor"
[ -x "$monitor" ] || { echo "package.sh: $monitor is missing: cargo build --release -p corral builds it" >&2; exit 1; }
version="$("$binary" --version | awk '{print $2}')"
arch="$(dpkg --print-architecture)"
maintainer="${CORRAL_PACKAGE_MAINTAINER:-corral maintainers <maintainers@corral.invalid>}"

work="$(mktemp -d -t corral-package.XXXXXX)"
trap 'rm -rf "$work"' EXIT
stage="$work/corral"

install -d -m 0755 "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/usr/share/man/man1" \
  "$stage/usr/share/doc/corral" "$stage/usr/share/bash-completion/completions" \
  "$stage/usr/share/zsh/vendor-completions" "$stage/usr/share/fish/vendor_completions.d" \
  "$stage/DEBIAN"
install -m 0755 "$binary" "$stage/usr/bin/corral"
install -m 0755 "$vmm" "$stage/usr/bin/corral-vmm"
install -m 0755 "$monitor" "$stage/usr/bin/corral-monitor"
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
  "$stage/usr/bin/corral" "$stage/usr/bin/corral-vmm" "$stage/usr/bin/corral-monitor"
# `podman --runtime corral-oci`: corral answers as the OCI runtime when called by this name.
ln -s corral "$stage/usr/bin/corral-oci"
install -m 0644 packaging/systemd/*.service "$stage/lib/systemd/system/"

"$binary" __generate completions "$work/completions"
install -m 0644 "$work/completions/corral" "$stage/usr/share/bash-completion/completions/corral"
install -m 0644 "$work/completions/_corral" "$stage/usr/share/zsh/vendor-completions/_corral"
install -m 0644 "$work/completions/corral.fish" "$stage/usr/share/fish/vendor_completions.d/corral.fish"
"$binary" __generate man "$work/man"
for page in "$work"/man/*.1; do
  gzip -9n <"$page" >"$stage/usr/share/man/man1/$(basename "$page").gz"
done
chmod 0644 "$stage"/usr/share/man/man1/*

install -m 0644 packaging/debian/copyright "$stage/usr/share/doc/corral/copyright"
{
  echo "corral ($version) unstable; urgency=medium"
  echo
  echo "  * Built from the corral workspace by scripts/package.sh."
  echo
  echo " -- $maintainer  $(date -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")"
} | gzip -9n >"$stage/usr/share/doc/corral/changelog.gz" # a native package's name
chmod 0644 "$stage"/usr/share/doc/corral/*
install -D -m 0644 packaging/debian/lintian-overrides "$stage/usr/share/lintian/overrides/corral"

# The shared libraries the binary links, as dpkg-shlibdeps names their packages.
mkdir -p "$work/shlibs/debian"
echo "Source: corral" >"$work/shlibs/debian/control"
shlibs="$(cd "$work/shlibs" &&
  dpkg-shlibdeps -O -e"$stage/usr/bin/corral" -e"$stage/usr/bin/corral-vmm" \
    -e"$stage/usr/bin/corral-monitor" 2>/dev/null |
  sed -n 's/^shlibs:Depends=//p')"
size="$(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
  -e "s|@SIZE@|$size|" -e "s|@SHLIBS@|$shlibs|" \
  packaging/debian/control.in >"$stage/DEBIAN/control"
install -m 0755 packaging/debian/postinst packaging/debian/postrm "$stage/DEBIAN/"
(cd "$stage" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) \
  >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/md5sums"

mkdir -p "$out"
deb="$out/corral_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"

if [ -n "$lint" ]; then
  if ! command -v lintian >/dev/null; then
    echo "package.sh: lintian is missing (scripts/deps.sh installs it); or pass --no-lint" >&2
    exit 1
  fi
  lintian --fail-on error "$deb" >&2
fi
