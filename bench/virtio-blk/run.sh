#!/usr/bin/env bash
# virtio-blk throughput: corral versus qemu-system-x86_64 -M microvm (virtio-blk-device) with the
# same freestanding guest workload, and the same access pattern on a host file, side by side in
# one run. See README.md here for what the numbers mean on an emulated-KVM host.
#
#   bench/virtio-blk/run.sh [RUNS] [MIB] [RANDOM_OPS] [--format qcow2] [--alloc-mib N]
#   defaults: 3 runs, 64 MiB, 2000 ops, raw images, no rand-alloc phase
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v qemu-system-x86_64 >/dev/null ||
  { echo "run.sh: qemu-system-x86_64 is missing: apt-get install qemu-system-x86" >&2; exit 1; }
cargo build --release --quiet -p corral -p corral-guests
guest="$(ls -td target/release/build/corral-guests-*/out | head -1)/virtio-blk-bench.elf"
python3 bench/virtio-blk/measure.py --corral target/release/corral --guest "$guest" \
  --runs "${1:-3}" --mib "${2:-64}" --ops "${3:-2000}" "${@:4}"
