#!/usr/bin/env bash
# Image benchmark, corral beside the tools people use, in one run:
#   1. import of a ~100 MB root filesystem tarball: `corral image import` vs `tar -x`
#   2. import of an OCI image (3 layers, built with umoci): `corral image import` vs `umoci unpack`
#   3. container create from an image: corral on ext4 (copy) vs on XFS with reflink=1 (FICLONE)
#   4. VM create from an image: linked clone (qcow2 overlay) vs --full (flattened copy)
# Each is timed ROUNDS times (median, ms) and the results are checked to hold the same files.
#
#   bench/images/run.sh [ROUNDS]      (default 5; needs root, umoci, xfsprogs, qemu-utils)
set -euo pipefail
cd "$(dirname "$0")/../.."

rounds="${1:-5}"
[ "$(id -u)" = 0 ] || { echo "the benchmark mounts filesystems and needs root" >&2; exit 1; }
for tool in umoci mkfs.xfs qemu-img; do
  command -v "$tool" >/dev/null || { echo "needs $tool (bash scripts/deps.sh installs it)" >&2; exit 1; }
done

cargo build --release -q -p corral
corral="$PWD/target/release/corral"
# The instances measured have no nics, on no network of the host's.
export CORRAL_DEFAULT_NETWORK=none
work="$(mktemp -d -t corral-bench-images.XXXXXX)"
cleanup() {
  mountpoint -q "$work/xfs" 2>/dev/null && umount "$work/xfs"
  rm -rf "$work"
}
trap cleanup EXIT

# A ~100 MB tree of real files: the host's /usr/lib up to that size, plus busybox.
tree="$work/tree"
mkdir -p "$tree/bin" "$tree/etc"
cp /bin/busybox "$tree/bin/" 2>/dev/null || true
(cd / && find usr/lib -xdev \( -type f -o -type l \) -printf '%s %p\n' 2>/dev/null) >"$work/sizes"
awk '{ total += $1; if (total > 100 * 1024 * 1024) exit; print $2 }' "$work/sizes" >"$work/files"
tar -C / --no-recursion -cf - -T "$work/files" 2>/dev/null | tar -C "$tree" -xf -
tarball="$work/rootfs.tar"
tar --numeric-owner --xattrs -C "$tree" -cf "$tarball" .
size_mb=$(du -sm "$tree" | cut -f1)

median() { sort -n | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.1f", m}'; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
same_tree() { # files, modes, owners, link targets and content
  diff -r --no-dereference "$1" "$2" >/dev/null || { echo "trees differ: $1 $2" >&2; exit 1; }
  (cd "$1" && find . -printf '%p %m %U %G %l\n' | sort) >"$work/a"
  (cd "$2" && find . -printf '%p %m %U %G %l\n' | sort) >"$work/b"
  cmp -s "$work/a" "$work/b" || { echo "metadata differs: $1 $2" >&2; diff "$work/a" "$work/b" | head >&2; exit 1; }
}
report() { # name, corral times file, peer name, peer times file
  local c p
  c=$(median <"$2"); p=$(median <"$4")
  printf "%-34s corral %8s ms   %-14s %8s ms   corral/peer %s\n" "$1" "$c" "$3" "$p" \
    "$(awk -v a="$c" -v b="$p" 'BEGIN {printf "%.2f", a/b}')"
}

# 1. rootfs tarball
: >"$work/t-import"; : >"$work/t-tar"
for i in $(seq 1 "$rounds"); do
  rm -rf "$work/root" "$work/untar"; mkdir -p "$work/untar"
  sync; s=$(date +%s%N); "$corral" --root "$work/root" image import "$tarball" --alias bench >/dev/null; e=$(date +%s%N)
  ms "$s" "$e" >>"$work/t-import"
  sync; s=$(date +%s%N); tar --numeric-owner --xattrs -xf "$tarball" -C "$work/untar"; e=$(date +%s%N)
  ms "$s" "$e" >>"$work/t-tar"
done
fp=$("$corral" --root "$work/root" image info bench -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["fingerprint"])')
same_tree "$work/root/images/$fp/rootfs" "$work/untar"

# 2. OCI image: three layers
oci="$work/oci"
umoci init --layout "$oci" >/dev/null
umoci new --image "$oci:bench" >/dev/null
umoci unpack --image "$oci:bench" "$work/bundle" >/dev/null
cp -a "$tree/." "$work/bundle/rootfs/"
umoci repack --image "$oci:bench" "$work/bundle" >/dev/null
echo layer2 >"$work/bundle/rootfs/etc/layer2"; rm -rf "$work/bundle/rootfs/usr/lib/os-release"
umoci repack --image "$oci:bench" "$work/bundle" >/dev/null
echo layer3 >"$work/bundle/rootfs/etc/layer3"
umoci repack --image "$oci:bench" "$work/bundle" >/dev/null
: >"$work/t-oci"; : >"$work/t-umoci"
for i in $(seq 1 "$rounds"); do
  rm -rf "$work/root-oci" "$work/umoci-out"
  sync; s=$(date +%s%N); "$corral" --root "$work/root-oci" image import "$oci" --alias oci >/dev/null; e=$(date +%s%N)
  ms "$s" "$e" >>"$work/t-oci"
  sync; s=$(date +%s%N); umoci unpack --image "$oci:bench" "$work/umoci-out" >/dev/null; e=$(date +%s%N)
  ms "$s" "$e" >>"$work/t-umoci"
done
fp=$("$corral" --root "$work/root-oci" image info oci -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["fingerprint"])')
same_tree "$work/root-oci/images/$fp/rootfs" "$work/umoci-out/rootfs"

# 3. container create from the image: ext4 (copy) vs XFS reflink
truncate -s 2G "$work/xfs.img"
mkfs.xfs -q -m reflink=1 "$work/xfs.img"
mkdir -p "$work/xfs"
mount -o loop "$work/xfs.img" "$work/xfs"
"$corral" --root "$work/xfs/root" image import "$tarball" --alias bench >/dev/null
: >"$work/t-copy"; : >"$work/t-reflink"
for i in $(seq 1 "$rounds"); do
  sync; s=$(date +%s%N); out=$("$corral" --root "$work/root" create "c$i" --image bench); e=$(date +%s%N)
  [[ "$out" == *"(copy)"* ]] || { echo "expected a copy: $out" >&2; exit 1; }
  ms "$s" "$e" >>"$work/t-copy"
  sync; s=$(date +%s%N); out=$("$corral" --root "$work/xfs/root" create "c$i" --image bench); e=$(date +%s%N)
  [[ "$out" == *"(reflink copy)"* ]] || { echo "expected a reflink copy: $out" >&2; exit 1; }
  ms "$s" "$e" >>"$work/t-reflink"
done

# 4. VM create from an image: linked clone vs full copy of a 1 GiB disk with 256 MiB written
qemu-img create -q -f qcow2 "$work/vm.qcow2" 1G
qemu-io -f qcow2 -c 'write -P 7 0 256M' "$work/vm.qcow2" >/dev/null
"$corral" --root "$work/root" image import "$work/vm.qcow2" --format disk --kernel /bin/true --alias vm >/dev/null
: >"$work/t-linked"; : >"$work/t-full"
for i in $(seq 1 "$rounds"); do
  sync; s=$(date +%s%N); "$corral" --root "$work/root" create "l$i" --image vm >/dev/null; e=$(date +%s%N)
  ms "$s" "$e" >>"$work/t-linked"
  sync; s=$(date +%s%N); "$corral" --root "$work/root" create "f$i" --image vm --full >/dev/null; e=$(date +%s%N)
  ms "$s" "$e" >>"$work/t-full"
done

echo "images: a ${size_mb} MB tree ($(wc -l <"$work/files") files from /usr/lib), $rounds rounds, median, $(nproc) cores"
report "import rootfs tarball" "$work/t-import" "tar -x" "$work/t-tar"
report "import OCI image (3 layers)" "$work/t-oci" "umoci unpack" "$work/t-umoci"
report "container create, reflink (XFS)" "$work/t-reflink" "copy (ext4)" "$work/t-copy"
report "VM create, linked clone" "$work/t-linked" "--full copy" "$work/t-full"
