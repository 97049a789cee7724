#!/usr/bin/env bash
# Clone benchmark, corral beside the tools people use, in one run:
#   1. linked clone of a VM template at 1, 10 and 100 GiB virtual size (an ext4 root holding
#      ~100 MiB of files): `corral clone --linked` with the identity reset (the default), with the
#      reset but no new SSH host keys (--ssh-hostkeys remove) and with --keep-identity, against `qemu-img create -b` (an overlay, what a linked clone is by hand)
#   2. full clone of the 10 GiB template (a standalone qcow2 holding ~100 MiB): `corral clone`
#      against virt-clone's way (`qemu-img convert -O qcow2`) and `cp --reflink=auto
#      --sparse=always`, on the work directory's filesystem (corral must say when it copies)
#   3. full clone of a VM whose disk holds 2 GiB of data on a loop-mounted XFS with reflink=1:
#      corral against the same two peers, and `filefrag -v` of the clone's disk (shared extents)
# Each is timed ROUNDS times (median, ms): the wall time of the whole command, process start
# included, and of a `sync` after it, so every side is timed until its result is on disk (corral
# fsyncs what it writes; qemu-img and cp leave it in the page cache). The space the result takes
# on disk is du's (median).
#
#   bench/clone/run.sh [ROUNDS]      (default 3; needs root, e2fsprogs, qemu-utils, xfsprogs)
set -euo pipefail
cd "$(dirname "$0")/../.."

rounds="${1:-3}"
[ "$(id -u)" = 0 ] || { echo "the benchmark mounts an XFS image and needs root" >&2; exit 1; }
for tool in mkfs.ext4 qemu-img qemu-io ssh-keygen; do
  command -v "$tool" >/dev/null || { echo "needs $tool (bash scripts/deps.sh installs it)" >&2; exit 1; }
done

cargo build --release -q -p corral
corral="$PWD/target/release/corral"
# The clones measured are of instances without nics, on no network of the host's.
export CORRAL_DEFAULT_NETWORK=none
work="$(mktemp -d -t corral-bench-clone.XXXXXX)"
cleanup() {
  mountpoint -q "$work/xfs" 2>/dev/null && umount "$work/xfs"
  rm -rf "$work"
}
trap cleanup EXIT
root="$work/root"
c() { "$corral" --root "$root" "$@"; }

median() { sort -g | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.1f", m}'; }
# Runs a command and a sync, appending their wall time in ms to file $1.
timed() {
  local out=$1; shift
  sync
  local s e
  s=$(date +%s%N); "$@" >"$work/last.out"; sync; e=$(date +%s%N)
  awk -v s="$s" -v e="$e" 'BEGIN {printf "%.2f\n", (e - s) / 1e6}' >>"$out"
}
# Appends the bytes the files or directories take on disk to file $1.
space() { local out=$1; shift; du -scB1 "$@" | tail -1 | cut -f1 >>"$out"; }
size() { # bytes, human
  awk -v b="$1" 'BEGIN {
    if (b < 1048576) printf "%.0f KiB", b / 1024; else printf "%.1f MiB", b / 1048576 }'
}
ratio() { awk -v a="$(median <"$1")" -v b="$(median <"$2")" 'BEGIN {printf "%.2f", a / b}'; }
row() { # what, times file, space file, corral's times file (for the ratio corral/this)
  printf "| %-40s | %8s | %11s | %7s |\n" "$1" "$(median <"$2")" "$(size "$(median <"$3")")" "$(ratio "$4" "$2")"
}
disk_of() { # instance name: its first disk's file
  local dir="$1/instances/$2"
  echo "$dir/$(sed -n 's/^path = "\(.*\)"$/\1/p' "$dir/instance.toml" | head -1)"
}

# The template's root filesystem: ~100 MiB of the host's /usr/lib and the identity a clone must
# not carry (machine-id, SSH host keys, hostname, a lease, logs).
tree="$work/tree"
mkdir -p "$tree/etc/ssh" "$tree/var/lib/dhcp" "$tree/var/log" "$tree/tmp"
(cd / && find usr/lib -xdev -type f -printf '%s %p\n' 2>/dev/null) >"$work/sizes"
awk '{ total += $1; if (total > 100 * 1024 * 1024) exit; print $2 }' "$work/sizes" >"$work/files"
tar -C / --no-recursion -cf - -T "$work/files" 2>/dev/null | tar -C "$tree" -xf -
echo 3d1219c7c4c5404aaa1f6d2a48adfda4 >"$tree/etc/machine-id"
echo template >"$tree/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\ttemplate\n' >"$tree/etc/hosts"
ssh-keygen -q -A -f "$tree" >/dev/null
echo 'lease { fixed-address 10.0.0.5; }' >"$tree/var/lib/dhcp/dhclient.eth0.leases"
echo "the template's log" >"$tree/var/log/syslog"
tree_mb=$(du -sm "$tree" | cut -f1)

# 1. linked clones of a template at three sizes
echo "| linked clone | ms | on disk | corral --keep-identity / this |" >"$work/linked.md"
echo "| --- | ---: | ---: | ---: |" >>"$work/linked.md"
for gib in 1 10 100; do
  truncate -s "${gib}G" "$work/fs.raw"
  mkfs.ext4 -q -F -d "$tree" "$work/fs.raw"
  c image import "$work/fs.raw" --format disk --kernel /bin/true --alias "t$gib" >/dev/null
  rm -f "$work/fs.raw"
  c create "tmpl$gib" --image "t$gib" --memory 64M >/dev/null
  tmpl_disk=$(disk_of "$root" "tmpl$gib")
  for kind in reset nokeys keep qemu; do : >"$work/t-$kind"; : >"$work/s-$kind"; done
  for i in $(seq 1 "$rounds"); do
    timed "$work/t-reset" c clone "tmpl$gib" "r$gib-$i" --linked
    space "$work/s-reset" "$root/instances/r$gib-$i"
    c delete "r$gib-$i" >/dev/null
    timed "$work/t-nokeys" c clone "tmpl$gib" "n$gib-$i" --linked --ssh-hostkeys remove
    space "$work/s-nokeys" "$root/instances/n$gib-$i"
    c delete "n$gib-$i" >/dev/null
    timed "$work/t-keep" c clone "tmpl$gib" "k$gib-$i" --linked --keep-identity
    space "$work/s-keep" "$root/instances/k$gib-$i"
    c delete "k$gib-$i" >/dev/null
    timed "$work/t-qemu" qemu-img create -q -f qcow2 -F qcow2 -b "$tmpl_disk" "$work/q.qcow2"
    space "$work/s-qemu" "$work/q.qcow2"
    rm -f "$work/q.qcow2"
  done
  {
    row "corral, identity reset, ${gib} GiB" "$work/t-reset" "$work/s-reset" "$work/t-keep"
    row "corral, reset, --ssh-hostkeys remove, ${gib} GiB" "$work/t-nokeys" "$work/s-nokeys" "$work/t-keep"
    row "corral --keep-identity, ${gib} GiB" "$work/t-keep" "$work/s-keep" "$work/t-keep"
    row "qemu-img create -b (no reset), ${gib} GiB" "$work/t-qemu" "$work/s-qemu" "$work/t-keep"
  } >>"$work/linked.md"
done

# 2. full clones of the 10 GiB template: a standalone qcow2 with ~100 MiB of data
c create full10 --image t10 --full --memory 64M >/dev/null
src=$(disk_of "$root" full10)
src_mb=$(du -m "$src" | cut -f1)
cp --reflink=always "$src" "$work/reflink-probe" 2>/dev/null && work_reflinks=yes || work_reflinks=no
rm -f "$work/reflink-probe"
for kind in reset keep convert cp; do : >"$work/t-$kind"; : >"$work/s-$kind"; done
for i in $(seq 1 "$rounds"); do
  timed "$work/t-keep" c clone full10 "f$i" --keep-identity
  space "$work/s-keep" "$root/instances/f$i"
  cp "$work/last.out" "$work/full-clone.out"
  if [ "$work_reflinks" = no ] && ! grep -q "copied (its data only)" "$work/full-clone.out"; then
    echo "corral clone did not say it copied on a filesystem without reflinks:" >&2
    cat "$work/full-clone.out" >&2
    exit 1
  fi
  c delete "f$i" >/dev/null
  timed "$work/t-reset" c clone full10 "g$i"
  space "$work/s-reset" "$root/instances/g$i"
  c delete "g$i" >/dev/null
  timed "$work/t-convert" qemu-img convert -f qcow2 -O qcow2 "$src" "$work/v.qcow2"
  space "$work/s-convert" "$work/v.qcow2"
  rm -f "$work/v.qcow2"
  timed "$work/t-cp" cp --reflink=auto --sparse=always "$src" "$work/c.qcow2"
  space "$work/s-cp" "$work/c.qcow2"
  rm -f "$work/c.qcow2"
done
fs_type=$(findmnt -no FSTYPE -T "$work")
{
  echo "| full clone, 10 GiB, ${src_mb} MiB allocated ($fs_type, reflink: $work_reflinks) | ms | on disk | corral --keep-identity / this |"
  echo "| --- | ---: | ---: | ---: |"
  row "corral clone --keep-identity" "$work/t-keep" "$work/s-keep" "$work/t-keep"
  row "corral clone (identity reset)" "$work/t-reset" "$work/s-reset" "$work/t-keep"
  row "qemu-img convert -O qcow2 (virt-clone)" "$work/t-convert" "$work/s-convert" "$work/t-keep"
  row "cp --reflink=auto --sparse=always" "$work/t-cp" "$work/s-cp" "$work/t-keep"
} >"$work/full.md"
said=$(grep -m1 "^disk " "$work/full-clone.out" || true)

# 3. a 2 GiB disk full of data on XFS with reflink=1
if ! command -v mkfs.xfs >/dev/null; then
  echo "skipped the XFS part: needs mkfs.xfs (bash scripts/deps.sh installs xfsprogs)" >"$work/xfs.md"
elif ! truncate -s 8G "$work/xfs.img" || ! mkfs.xfs -q -m reflink=1 "$work/xfs.img" ||
  ! mkdir -p "$work/xfs" || ! mount -o loop "$work/xfs.img" "$work/xfs"; then
  echo "skipped the XFS part: cannot make and loop-mount an XFS image here" >"$work/xfs.md"
else
  xroot="$work/xfs/root"
  qemu-img create -q -f qcow2 "$work/xfs/data.qcow2" 2G
  # (qemu-io writes at most 2 GiB - 1 per request)
  qemu-io -f qcow2 -c 'write -P 0x5a 0 1G' -c 'write -P 0x5a 1G 1G' "$work/xfs/data.qcow2" >/dev/null
  "$corral" --root "$xroot" image import "$work/xfs/data.qcow2" --format disk --kernel /bin/true --alias d2 >/dev/null
  rm -f "$work/xfs/data.qcow2"
  "$corral" --root "$xroot" create big --image d2 --full --memory 64M >/dev/null
  big=$(disk_of "$xroot" big)
  for kind in corral convert cp; do : >"$work/t-$kind"; : >"$work/s-$kind"; done
  for i in $(seq 1 "$rounds"); do
    timed "$work/t-corral" "$corral" --root "$xroot" clone big "x$i" --keep-identity
    grep -q ": reflinked" "$work/last.out" || { echo "expected a reflink:" >&2; cat "$work/last.out" >&2; exit 1; }
    x_disk=$(disk_of "$xroot" "x$i")
    shared=$(filefrag -v "$x_disk" | grep -c shared || true)
    extents=$(filefrag -v "$x_disk" | grep -cE '^ +[0-9]+:' || true)
    "$corral" --root "$xroot" delete "x$i" >/dev/null
    timed "$work/t-convert" qemu-img convert -f qcow2 -O qcow2 "$big" "$work/xfs/v.qcow2"
    space "$work/s-convert" "$work/xfs/v.qcow2"
    rm -f "$work/xfs/v.qcow2"
    timed "$work/t-cp" cp --reflink=auto --sparse=always "$big" "$work/xfs/c.qcow2"
    rm -f "$work/xfs/c.qcow2"
  done
  {
    echo "| full clone, 2 GiB of data, XFS reflink=1 | ms | shared extents | corral / this |"
    echo "| --- | ---: | ---: | ---: |"
    xrow() { printf "| %-40s | %8s | %14s | %7s |\n" "$1" "$(median <"$2")" "$3" "$(ratio "$work/t-corral" "$2")"; }
    xrow "corral clone --keep-identity" "$work/t-corral" "$shared of $extents"
    xrow "qemu-img convert -O qcow2 (virt-clone)" "$work/t-convert" "none: $(size "$(median <"$work/s-convert")") copied"
    xrow "cp --reflink=auto --sparse=always" "$work/t-cp" "all"
  } >"$work/xfs.md"
fi

echo "clone: a ${tree_mb} MiB template tree, $rounds rounds, median; $(nproc) cores; work on $fs_type"
echo
cat "$work/linked.md"
echo
cat "$work/full.md"
echo
echo "on $fs_type (reflink: $work_reflinks) corral clone said: $said"
echo
cat "$work/xfs.md"
