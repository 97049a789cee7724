#!/usr/bin/env bash
# OVF benchmark: `corral export` and `corral import` of a VM whose 1 GiB raw disk holds 200 MiB
# of data, against `qemu-img convert` alone (the floor: the disk conversion without the envelope,
# manifest, tar and digests), in one run:
#   export  corral export NAME X.ova (streamOptimized VMDK streamed into the OVA)
#           corral export NAME X.ova --format qcow2 (qcow2 staged beside the OVA, then copied in)
#           qemu-img convert -O vmdk -o subformat=streamOptimized (the floor)
#   import  corral import X.ova (manifest checked, VMDK converted to qcow2 in the instance)
#           qemu-img convert -f vmdk -O qcow2 (the floor)
# Each is timed ROUNDS times (median, ms): the wall time of the whole command, process start
# included, plus a `sync`, so every side is timed until its result is on disk. Peak extra space
# is the most the work filesystem's used space (df, sampled every 20 ms) rose above where it was
# before the command, less the size of the result: what the command needed beyond its output.
# The work filesystem is a loop-mounted ext4 of its own, so other programs' writes do not count.
#
#   bench/ovf/run.sh [ROUNDS]      (default 3; needs root, qemu-utils, e2fsprogs)
set -euo pipefail
cd "$(dirname "$0")/../.."

rounds="${1:-3}"
[ "$(id -u)" = 0 ] || { echo "the benchmark mounts an ext4 image and needs root" >&2; exit 1; }
for tool in qemu-img mkfs.ext4; do
  command -v "$tool" >/dev/null || { echo "needs $tool (bash scripts/deps.sh installs it)" >&2; exit 1; }
done

cargo build --release -q -p corral
corral="$PWD/target/release/corral"
export CORRAL_DEFAULT_NETWORK=none
scratch="$(mktemp -d -t corral-bench-ovf.XXXXXX)"
work="$scratch/fs"
cleanup() {
  mountpoint -q "$work" 2>/dev/null && umount "$work"
  rm -rf "$scratch"
}
trap cleanup EXIT
truncate -s 6G "$scratch/fs.img"
mkfs.ext4 -q -F "$scratch/fs.img"
mkdir "$work"
mount -o loop "$scratch/fs.img" "$work"
export CORRAL_ROOT="$work/root"
c() { "$corral" "$@"; }

median() { sort -g | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.0f", m}'; }
used() { df --output=used -B1 "$work" | tail -1; }
# Runs a command and a sync with the filesystem sampled: appends the wall time in ms to $1 and
# the peak rise of used space (bytes) to $2.
timed() {
  local times=$1 peaks=$2; shift 2
  sync
  local base s e
  base=$(used)
  echo "$base" >"$work/peak"
  (peak=$base; while :; do u=$(used); ((u > peak)) && peak=$u && echo "$peak" >"$work/peak"; sleep 0.02; done) &
  local sampler=$!
  s=$(date +%s%N); "$@" >/dev/null; sync; e=$(date +%s%N)
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  awk -v s="$s" -v e="$e" 'BEGIN {printf "%.2f\n", (e - s) / 1e6}' >>"$times"
  echo $(( $(cat "$work/peak") - base )) >>"$peaks"
  rm -f "$work/peak"
}
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
# what, times file, peaks file, result size in bytes
row() {
  local extra=$(( $(median <"$3") - $4 ))
  ((extra < 0)) && extra=0
  printf "| %-52s | %7s | %10s | %10s |\n" "$1" "$(median <"$2")" "$(mib "$4")" "$(mib "$extra")"
}

# The disk: 1 GiB, sparse, with 200 MiB of the host's files (binaries, libraries, text) in 20
# pieces of 10 MiB spread over it: data that compresses as a real root filesystem's does.
disk="$work/disk.raw"
truncate -s 1G "$disk"
# (head ends the pipe early: tar's SIGPIPE is expected)
tar -C / -cf - usr/bin usr/lib usr/share/doc 2>/dev/null | head -c $((200 << 20)) >"$work/data" || true
for i in $(seq 0 19); do
  dd if="$work/data" of="$disk" bs=1M count=10 skip=$((i * 10)) seek=$((i * 50)) conv=notrunc,sparse status=none
done
rm "$work/data"
echo "a kernel" >"$work/vmlinux"
c create bench --kernel "$work/vmlinux" --disk "$disk" >/dev/null

for r in $(seq 1 "$rounds"); do
  timed "$work/t.export" "$work/p.export" c export bench "$work/out.ova"
  timed "$work/t.export-qcow2" "$work/p.export-qcow2" c export bench "$work/out-qcow2.ova" --format qcow2
  timed "$work/t.floor-export" "$work/p.floor-export" \
    qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$disk" "$work/floor.vmdk"
  timed "$work/t.import" "$work/p.import" c import "$work/out.ova" imported --network none --kernel "$work/vmlinux"
  timed "$work/t.floor-import" "$work/p.floor-import" \
    qemu-img convert -f vmdk -O qcow2 "$work/floor.vmdk" "$work/floor.qcow2"
  ova_size=$(stat -c %s "$work/out.ova")
  ova_qcow2_size=$(stat -c %s "$work/out-qcow2.ova")
  vmdk_size=$(stat -c %s "$work/floor.vmdk")
  imported_size=$(du -sB1 "$CORRAL_ROOT/instances/imported" | cut -f1)
  floor_qcow2_size=$(du -B1 "$work/floor.qcow2" | cut -f1)
  if ((r < rounds)); then
    c delete imported >/dev/null
    rm -f "$work/out.ova" "$work/out-qcow2.ova" "$work/floor.vmdk" "$work/floor.qcow2"
  fi
done

echo "ovf: a 1 GiB raw disk holding 200 MiB, $rounds rounds, median; $(nproc) cores"
echo
echo "| command | ms | result | peak extra space |"
echo "| --- | ---: | ---: | ---: |"
row "corral export (vmdk, streamed)" "$work/t.export" "$work/p.export" "$ova_size"
row "corral export --format qcow2 (staged)" "$work/t.export-qcow2" "$work/p.export-qcow2" "$ova_qcow2_size"
row "qemu-img convert -O vmdk streamOptimized (floor)" "$work/t.floor-export" "$work/p.floor-export" "$vmdk_size"
row "corral import of the OVA" "$work/t.import" "$work/p.import" "$imported_size"
row "qemu-img convert -f vmdk -O qcow2 (floor)" "$work/t.floor-import" "$work/p.floor-import" "$floor_qcow2_size"
