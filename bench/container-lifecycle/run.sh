#!/usr/bin/env bash
# Container lifecycle benchmark: create + start + delete of /bin/true from a busybox bundle,
# corral against runc and crun (whichever are installed), interleaved round by round in one run.
# Prints per-runtime mean and median milliseconds and each peer's time relative to corral.
#
#   bench/container-lifecycle/run.sh [ROUNDS]      (default 50; needs root, busybox-static)
#
# CORRAL_BENCH_BASELINE=PATH adds an earlier corral binary as runtime `corral-base`, so the cost of
# a change is measured in the same interleaved run.
set -euo pipefail
cd "$(dirname "$0")/../.."

rounds="${1:-50}"
[ "$(id -u)" = 0 ] || { echo "the benchmark creates containers and needs root" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "needs /bin/busybox (apt-get install busybox-static)" >&2; exit 1; }

cargo build --release -q -p corral
work="$(mktemp -d -t corral-bench.XXXXXX)"
trap 'rm -rf "$work"' EXIT

# One bundle for all runtimes: a busybox rootfs and a config.json whose process is /bin/true.
mkdir -p "$work/bundle/rootfs/bin" "$work/bundle/rootfs/"{proc,sys,dev,etc,tmp}
cp /bin/busybox "$work/bundle/rootfs/bin/"
ln -s busybox "$work/bundle/rootfs/bin/true"
ln -s busybox "$work/bundle/rootfs/bin/sh"
target/release/corral oci spec --bundle "$work/bundle"
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["process"]["args"] = ["/bin/true"]
config["process"]["terminal"] = False
json.dump(config, open(path, "w"), indent=1)
PY

declare -A binaries=([corral]="$PWD/target/release/corral oci")
command -v runc >/dev/null && binaries[runc]="$(command -v runc)"
command -v crun >/dev/null && binaries[crun]="$(command -v crun)"
runtimes=(corral)
if [ -n "${CORRAL_BENCH_BASELINE:-}" ]; then
  binaries[corral-base]="$CORRAL_BENCH_BASELINE oci"
  runtimes+=(corral-base)
fi
for peer in runc crun; do
  [ -n "${binaries[$peer]:-}" ] || { echo "$peer: not installed, skipped"; continue; }
  # A peer that cannot run containers on this host (crun 1.8 refuses hybrid cgroups) is
  # reported and left out rather than timed.
  if ${binaries[$peer]} --root "$work/probe-$peer" create --bundle "$work/bundle" probe </dev/null >"$work/probe" 2>&1; then
    ${binaries[$peer]} --root "$work/probe-$peer" delete --force probe >/dev/null 2>&1
    runtimes+=("$peer")
  else
    echo "$peer: does not run on this host, skipped: $(tail -1 "$work/probe")"
  fi
done

# One lifecycle; prints its duration in microseconds.
lifecycle() {
  local runtime=$1 id=$2 bin=${binaries[$1]} root="$work/state-$1"
  local start end
  start=$(date +%s%N)
  $bin --root "$root" create --bundle "$work/bundle" "$id" </dev/null >/dev/null 2>"$work/err" &&
    $bin --root "$root" start "$id" </dev/null >/dev/null 2>"$work/err" &&
    $bin --root "$root" delete --force "$id" </dev/null >/dev/null 2>"$work/err" ||
    { echo "$runtime failed on $id: $(cat "$work/err")" >&2; exit 1; }
  end=$(date +%s%N)
  echo $(((end - start) / 1000))
}

for runtime in "${runtimes[@]}"; do
  for warm in 1 2 3; do lifecycle "$runtime" "warm-$warm" >/dev/null; done
  : >"$work/times-$runtime"
done
for round in $(seq 1 "$rounds"); do
  for runtime in "${runtimes[@]}"; do
    lifecycle "$runtime" "bench-$round" >>"$work/times-$runtime"
  done
done

stats() { # mean and median in ms of a file of microsecond samples
  sort -n "$1" | awk '{v[NR]=$1; s+=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%.2f %.2f\n", s/NR/1000, m/1000}'
}
read -r corral_mean corral_median < <(stats "$work/times-corral")
echo "create + start + delete of /bin/true, $rounds rounds (interleaved), $(nproc) cores"
printf "%-11s %10s %10s %18s\n" runtime "mean ms" "median ms" "median vs corral"
for runtime in "${runtimes[@]}"; do
  read -r mean median < <(stats "$work/times-$runtime")
  ratio=$(awk -v a="$median" -v b="$corral_median" 'BEGIN {printf "%.2fx", a/b}')
  printf "%-11s %10s %10s %18s\n" "$runtime" "$mean" "$median" "$ratio"
done
