#!/usr/bin/env bash
# Boot-to-first-debug-exit-write benchmark: corral vmm run versus qemu-system-x86_64 -M microvm,
# same test guest (guests/exit.c, PVH ELF: writes 42 to port 0xf4 at once), same memory, side by
# side in one run. Prints wall time, CPU time and peak RSS of the VMM process, and the ratios.
#
#   bench/vmm-start/run.sh [RUNS]        (default 20 runs of each, interleaved)
set -euo pipefail
cd "$(dirname "$0")/../.."

runs="${1:-20}"
command -v qemu-system-x86_64 >/dev/null ||
  { echo "run.sh: qemu-system-x86_64 is missing: apt-get install qemu-system-x86" >&2; exit 1; }

cargo build --release --quiet -p corral -p corral-guests
guest="$(ls -td target/release/build/corral-guests-*/out | head -1)/exit.elf"

exec python3 bench/vmm-start/measure.py --runs "$runs" --guest "$guest" \
  --corral target/release/corral
