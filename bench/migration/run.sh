#!/usr/bin/env bash
# Live migration and snapshot benchmark: corral's VMM against QEMU's microvm on the same guest
# (guests/migration-bench.c), the same TCP link and the same downtime limit, interleaved. Prints
# total time, downtime, bytes sent and passes of each migration, save and restore times and file
# sizes of each snapshot, medians and corral/QEMU ratios.
#
#   bench/migration/run.sh [RUNS] [measure.py flags]   default 5 runs, TCP on loopback
#   bench/migration/run.sh 3 --veth --veth-rate 1gbit  between two network namespaces joined by
#                                                      a veth shaped with tc tbf (root)
#
# measure.py --help lists the rest (--scenarios, --downtime-ms, --max-seconds, --skip-qemu).
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v qemu-system-x86_64 >/dev/null ||
  { echo "run.sh: qemu-system-x86_64 is missing: apt-get install qemu-system-x86" >&2; exit 1; }

runs="${1:-5}"
shift || true
cargo build --release --quiet -p corral -p corral-guests
target="${CARGO_TARGET_DIR:-target}"
guest="$(ls -td "$target"/release/build/corral-guests-*/out | head -1)/migration-bench.elf"
python3 bench/migration/measure.py --runs "$runs" --corral "$target/release/corral" \
  --guest "$guest" "$@"
