#!/usr/bin/env bash
# REST API benchmark: `corral serve` answering `GET /1.0/instances` for a root of INSTANCES
# containers (default 100; stopped, so the numbers are the API's and the store's, not the
# supervisors'), with 1 and with 4 keep-alive connections sending requests back to back for
# SECONDS each (default 10): requests per second, p50 and p99 latency (api_load, the
# corral-api example); the server's resident memory idle (100 instances defined, no request
# yet) and its peak under load (VmHWM).
#
#   bench/api/run.sh [INSTANCES] [SECONDS]   (needs root, busybox-static; builds release corral)
set -euo pipefail
cd "$(dirname "$0")/../.."

instances="${1:-100}"
seconds="${2:-10}"
[ "$(id -u)" = 0 ] || { echo "the benchmark creates containers and needs root" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "needs /bin/busybox (bash scripts/deps.sh installs it)" >&2; exit 1; }

nice -n 10 cargo build --release --quiet -p corral --bin corral
nice -n 10 cargo build --release --quiet -p corral-api --example api_load
target="${CARGO_TARGET_DIR:-target}/release"
corral="$PWD/$target/corral"
load="$PWD/$target/examples/api_load"

work="$(mktemp -d -t corral-bench-api.XXXXXX)"
root="$work/root"
socket="$work/api.sock"
server=""
cleanup() {
  set +e
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
c() { CORRAL_ROOT="$root" CORRAL_DEFAULT_NETWORK=none "$corral" "$@"; }

mkdir -p "$work/rootfs/bin" "$work/rootfs/"{proc,sys,dev,etc,tmp}
cp /bin/busybox "$work/rootfs/bin/"
ln -s busybox "$work/rootfs/bin/true"
echo "creating $instances containers"
for i in $(seq "$instances"); do
  c create "c$i" --rootfs "$work/rootfs" -- /bin/true >/dev/null
done

CORRAL_ROOT="$root" "$corral" serve --socket "$socket" 2>/dev/null &
server=$!
for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.1; done
[ -S "$socket" ] || { echo "corral serve did not listen" >&2; exit 1; }
sleep 2
kib() { awk -v field="$1:" '$1 == field { print $2 }' "/proc/$server/status"; }
idle_kib=$(kib VmRSS)

printf '%-12s %10s %10s %10s %10s\n' connections requests "req/s" "p50 ms" "p99 ms"
for connections in 1 4; do
  "$load" "$socket" /1.0/instances "$connections" "$seconds"
done
peak_kib=$(kib VmHWM)
echo
echo "corral serve resident memory: idle $((idle_kib / 1024)) MiB ($idle_kib KiB), peak under load $((peak_kib / 1024)) MiB ($peak_kib KiB)"
echo "($instances instances, ${seconds} s per row, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg))"
