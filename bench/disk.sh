#!/usr/bin/env bash
# corral-disk against qemu's block layer on the same patterns: `qemu-img bench` (depth 1, page
# cache, like corral) versus corral's examples/disk_bench, each on its own fresh qcow2 image for
# writes and on a fully written image for reads. Write runs end with one flush (fsync) on both
# sides; stride-write-4k-f, every write a new cluster, also flushes after every 16 writes (a guest
# that syncs often: the metadata ordering's fsyncs show there). Each case runs REPEAT times
# (default 3) per side and the best time counts, to damp the noise of a shared host. Prints seconds
# and the ratio corral/qemu (below 1 = corral faster). CORRAL_DISK_BENCH names another disk_bench
# binary (e.g. one built from an older commit) instead of building this tree's.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v qemu-img >/dev/null || { echo "bench/disk.sh needs qemu-img (apt-get install qemu-utils)" >&2; exit 1; }
repeat=${REPEAT:-3}

corral=${CORRAL_DISK_BENCH:-target/release/examples/disk_bench}
[ -n "${CORRAL_DISK_BENCH:-}" ] || cargo build -q --release -p corral-disk --example disk_bench
work=$(mktemp -d -t corral-disk-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

# name  mode  count  size  step  flush-every (0: once, at the end)
cases=(
  "seq-write-4k      write 65536  4096    4096    0"
  "seq-write-1M      write 512    1048576 1048576 0"
  "stride-write-4k   write 16384  4096    1052672 0"
  "stride-write-4k-f write 4096   4096    1052672 16"
  "seq-read-64k      read  8192   65536   65536   0"
  "stride-read-4k    read  16384  4096    1052672 0"
)

# One timed run of one side; prints seconds.
run_once() {
  local side=$1 mode=$2 count=$3 size=$4 step=$5 flush=$6 image="$work/$1.qcow2"
  if [ "$mode" = write ]; then
    rm -f "$image"
    qemu-img create -q -f qcow2 "$image" 1G
  elif [ ! -e "$image.full" ]; then
    rm -f "$image"
    qemu-img create -q -f qcow2 "$image" 1G
    qemu-img bench -q -w -t writeback -c 16384 -s 65536 "$image" >/dev/null
    touch "$image.full"
  fi
  if [ "$side" = qemu ]; then
    local flags=()
    [ "$mode" = write ] && flags=(-w "--flush-interval=$([ "$flush" = 0 ] && echo "$count" || echo "$flush")")
    # qemu's own timing of the run, without process start and image open, like corral's.
    qemu-img bench "${flags[@]}" -t writeback -d 1 -c "$count" -s "$size" -S "$step" "$image" |
      sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p'
  else
    "$corral" "$image" "$mode" "$count" "$size" "$step" "$flush"
  fi
}

best() { sort -g | head -1; }

printf '%-18s %10s %10s %8s\n' case qemu-s corral-s ratio
for line in "${cases[@]}"; do
  read -r name mode count size step flush <<<"$line"
  [ "$mode" = write ] && rm -f "$work"/*.full
  qemu_s=$(for _ in $(seq "$repeat"); do run_once qemu "$mode" "$count" "$size" "$step" "$flush"; done | best)
  corral_s=$(for _ in $(seq "$repeat"); do run_once corral "$mode" "$count" "$size" "$step" "$flush"; done | best)
  qemu-img check -q "$work/corral.qcow2"
  printf '%-18s %10.3f %10.3f %8.2f\n' "$name" "$qemu_s" "$corral_s" "$(echo "$corral_s / $qemu_s" | bc -l)"
done
