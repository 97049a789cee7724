#!/usr/bin/env bash
# Density benchmark: N instances started at once and left running, corral beside its peers, for
# each N given (default 10 50 100):
#   VMs         N microVMs of a freestanding test guest that keeps running (guests/counter.c,
#               which spins printing its count; DENSITY_GUEST=ticks for guests/ticks.c, which
#               halts between timer interrupts), 32 MiB and 1 vCPU each: `corral create` +
#               `corral start` one after the other (each VM's process is the `corral-vmm` beside
#               corral, as installed), against Firecracker (with FIRECRACKER=PATH, a
#               binary from bench/peers/firecracker.sh): one process per VM, configured from a
#               JSON file (--no-api --config-file), launched one after the other.
#   containers  N busybox containers running `sleep 1000`: `corral create --rootfs` + `corral
#               start` against `runc run -d` on bundles of the same busybox rootfs; corral once
#               one `corral start` after the other (as runc's are run), once all N names given to
#               one `corral start` (row corral-many, which starts them 16 at a time).
# Measured per runtime and N: the time from the first start until all N run ("up": every `corral
# start` or `runc run -d` has returned and `corral list` / `runc list` shows N running; for
# Firecracker, every process launched) and, for VMs, until every guest has printed its first
# console line ("printed", the criterion both VMMs are compared on: corral's console.log, the
# Firecracker process's stdout); instances started per second (N / printed for VMs, N / up for
# containers); the resident memory of the processes each instance leaves running, summed (VmRSS,
# and PSS, which shares the pages of one binary among the processes mapping it); the guest memory
# those processes actually touched (the resident part of the guest-RAM mapping); the host's
# memory used (MemAvailable before the starts minus after, once all run). Then everything is
# stopped (corral delete --force, runc delete --force, SIGKILL to the Firecracker pids started)
# and the teardown is timed too (row corral-many: all N names to one `corral delete --force`).
#
#   bench/density/run.sh [N...]    (default 10 50 100; needs root, /dev/kvm, busybox-static, runc;
#                                   builds release corral and the test guests)
#
# FIRECRACKER=PATH adds Firecracker to the VM rows; DENSITY_KINDS="vm container" (the default)
# picks what is measured; DENSITY_GUEST=counter|ticks the VM guest; DENSITY_FULL_BINARY=1 adds a
# row "corral-full" whose VMs run as `corral vmm run` (no corral-vmm beside corral), the VMM that
# instances ran before the VMM-only executable, and whose containers' monitors are `corral
# monitor` (no corral-monitor beside it); CORRAL_VMM=PATH puts that corral-vmm beside corral
# instead of the one `scripts/build-static.sh --vmm` builds (e.g. a release build's);
# DENSITY_JOBS=K runs K `corral start`s at a time (default 1: one after the other, as runc's).
set -euo pipefail
cd "$(dirname "$0")/../.."

counts=("$@")
((${#counts[@]})) || counts=(10 50 100)
for n in "${counts[@]}"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: N must be a positive number, not '$n'" >&2; exit 2; }
done
kinds="${DENSITY_KINDS:-vm container}"
guest_name="${DENSITY_GUEST:-counter}"
case "$guest_name" in
  counter) first_line='^count [0-9]' ;;
  ticks) first_line='^tick [0-9]' ;;
  *) echo "run.sh: DENSITY_GUEST is counter or ticks, not '$guest_name'" >&2; exit 2 ;;
esac
memory_mib=32
jobs="${DENSITY_JOBS:-1}"
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: DENSITY_JOBS must be a positive number" >&2; exit 2; }
firecracker="${FIRECRACKER:-}"

[ "$(id -u)" = 0 ] || { echo "run.sh: the benchmark starts VMs and containers and needs root" >&2; exit 1; }
if [[ " $kinds " == *" vm "* ]]; then
  [ -r /dev/kvm ] && [ -w /dev/kvm ] || { echo "run.sh: the VM rows need /dev/kvm" >&2; exit 1; }
  if [ -n "$firecracker" ]; then
    [ -x "$firecracker" ] ||
      { echo "run.sh: FIRECRACKER=$firecracker is not an executable (bench/peers/firecracker.sh builds one)" >&2; exit 1; }
  fi
fi
if [[ " $kinds " == *" container "* ]]; then
  [ -x /bin/busybox ] || { echo "run.sh: needs /bin/busybox (apt-get install busybox-static)" >&2; exit 1; }
  command -v runc >/dev/null || { echo "run.sh: needs runc (apt-get install runc)" >&2; exit 1; }
  command -v python3 >/dev/null || { echo "run.sh: needs python3 (runc's bundles are edited with it)" >&2; exit 1; }
fi

nice -n 10 cargo build --release --quiet -p corral --bin corral --bin corral-monitor
# The VMs' corral-vmm as bench/vmm-start measures it (static, musl, its code laid out for a VM's
# run: scripts/build-static.sh --vmm), unless CORRAL_VMM names another.
[ -n "${CORRAL_VMM:-}" ] || CORRAL_VMM="$PWD/$(nice -n 10 bash scripts/build-static.sh --vmm | tail -1)"
nice -n 10 cargo build --release --quiet -p corral-guests
target="${CARGO_TARGET_DIR:-target}/release"
guest="$PWD/$(ls -td "$target"/build/corral-guests-*/out | head -1)/$guest_name.elf"
[ -f "$guest" ] || { echo "run.sh: the test guest $guest was not built" >&2; exit 1; }
[ -z "${CORRAL_VMM:-}" ] || [ -x "$CORRAL_VMM" ] ||
  { echo "run.sh: CORRAL_VMM=$CORRAL_VMM is not an executable" >&2; exit 1; }

work="$(mktemp -d -t corral-bench-density.XXXXXX)"
# Copies of the binaries: a rebuild of target/release during the run (other work in the same
# checkout) must not change what the next `corral start` runs. VM instances run the VMM-only
# `corral-vmm` found beside `corral` (as installed); with DENSITY_FULL_BINARY=1 a second corral
# row, "corral-full", has no corral-vmm beside it and so runs its VMs as `corral vmm run`.
mkdir "$work/bin" "$work/bin-full"
cp "$target/corral" "$target/corral-monitor" "$work/bin/"
cp "$CORRAL_VMM" "$work/bin/corral-vmm"
cp "$target/corral" "$work/bin-full/"
corral="$work/bin/corral"
runc_root="$work/runc"
fc_pids=()
corral_roots=()
cleanup() {
  set +e
  for pid in "${fc_pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  for pid in "${fc_pids[@]}"; do wait "$pid" 2>/dev/null; done
  for root in "${corral_roots[@]}"; do
    for dir in "$root"/instances/*/; do
      [ -d "$dir" ] && "$corral" --root "$root" delete --force "$(basename "$dir")" >/dev/null 2>&1
    done
  done
  if [ -d "$runc_root" ]; then
    for id in $(runc --root "$runc_root" list -q 2>/dev/null); do
      runc --root "$runc_root" delete --force "$id" >/dev/null 2>&1
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export CORRAL_DEFAULT_NETWORK=none

now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b - a) / 1e9}'; }
div() { awk -v a="$1" -v b="$2" -v f="${3:-%.1f}" 'BEGIN {if (b == 0) print "-"; else printf f, a / b}'; }
mem_available() { awk '$1 == "MemAvailable:" {print $2}' /proc/meminfo; }
state_pid() { grep -oP '"pid":\s*\K[0-9]+' "$1/instances/$2/state.json"; }
# The pid and its descendants, one a line.
tree() {
  local pid=$1 child
  echo "$pid"
  for child in $(ps -o pid= --ppid "$pid"); do tree "$child"; done
}
# "RSS PSS GUEST" in KiB summed over the pids: VmRSS, Pss and the resident part of the guest-RAM
# mapping (the anonymous mapping of exactly the guest's size; 0 for processes without one).
memory_of() {
  local guest_kib=$((memory_mib * 1024)) pid rss=0 pss=0 touched=0
  for pid; do
    rss=$((rss + $(awk '$1 == "VmRSS:" {print $2}' "/proc/$pid/status")))
    pss=$((pss + $(awk '$1 == "Pss:" {print $2}' "/proc/$pid/smaps_rollup")))
    touched=$((touched + $(awk -v want="$guest_kib" '
      /^[0-9a-f]+-[0-9a-f]+ / {anon = (NF == 5); next}
      $1 == "Size:" {size = $2}
      $1 == "Rss:" && anon && size == want {sum += $2}
      END {print sum + 0}' "/proc/$pid/smaps")))
  done
  echo "$rss $pss $touched"
}
# Waits (up to 10 minutes) until every file named holds a line matching $first_line; fails naming
# the first that does not.
wait_printed() {
  local deadline=$(($(date +%s) + 600)) pending=("$@") left file
  while ((${#pending[@]})); do
    left=()
    for file in "${pending[@]}"; do
      grep -qsE "$first_line" "$file" || left+=("$file")
    done
    pending=("${left[@]}")
    ((${#pending[@]})) || break
    if (($(date +%s) > deadline)); then
      echo "run.sh: ${#pending[@]} guests printed nothing in 10 minutes, e.g. ${pending[0]}" >&2
      return 1
    fi
    sleep 0.05
  done
}
# Waits until the host's memory settles after a teardown (what a stopped instance frees is
# returned asynchronously), at most 10 s.
settle() {
  local before after
  before=$(mem_available)
  for _ in $(seq 20); do
    sleep 0.5
    after=$(mem_available)
    (((after - before) * (after - before) < 1024 * 1024)) && return
    before=$after
  done
}

# Starts instances PREFIX1..PREFIXN with `CORRAL... start`: all N names to one `corral start` for
# LABEL corral-many, else one after the other, or DENSITY_JOBS at a time.
start_all() {
  local n=$1 prefix=$2 label=$3 i
  shift 3
  if [ "$label" = corral-many ]; then
    "$@" start $(seq -f "$prefix%.0f" "$n") >/dev/null
  elif [ "$jobs" = 1 ]; then
    for i in $(seq "$n"); do "$@" start "$prefix$i" >/dev/null; done
  else
    seq -f "$prefix%.0f" "$n" | xargs -P "$jobs" -n 1 "$@" start >/dev/null
  fi
}

# Deletes instances PREFIX1..PREFIXN with `CORRAL... delete --force`: all N names to one `corral
# delete` for LABEL corral-many (16 at a time), else one after the other.
delete_all() {
  local n=$1 prefix=$2 label=$3 i
  shift 3
  if [ "$label" = corral-many ]; then
    "$@" delete --force $(seq -f "$prefix%.0f" "$n") >/dev/null
  else
    for i in $(seq "$n"); do "$@" delete --force "$prefix$i" >/dev/null; done
  fi
}

results="$work/results"
: >"$results"
# One result line: kind N runtime up_s printed_s rss_kib pss_kib touched_kib host_kib teardown_s
# processes [monitor_rss_kib monitor_pss_kib]
record() { echo "$*" >>"$results"; }

# corral_vms N LABEL BINARY: the `corral start`s one after the other (DENSITY_JOBS at a time), or
# with LABEL corral-many all N names given to one `corral start`.
corral_vms() {
  local n=$1 label=$2 binary=$3 root="$work/vm-root-$2-$1" i t0 t1 t2 t3 t4 before after
  local pids=() files=()
  corral_roots+=("$root")
  local c=("$binary" --root "$root")
  for i in $(seq "$n"); do
    "${c[@]}" create "vm$i" --kernel "$guest" --memory "${memory_mib}M" --cpus 1 >/dev/null
  done
  settle
  before=$(mem_available)
  t0=$(now)
  start_all "$n" vm "$label" "${c[@]}"
  local running
  running=$("${c[@]}" list | awk '$3 == "running"' | wc -l)
  [ "$running" = "$n" ] || { echo "run.sh: corral list shows $running of $n VMs running" >&2; exit 1; }
  t1=$(now)
  for i in $(seq "$n"); do files+=("$root/instances/vm$i/run/console.log"); done
  wait_printed "${files[@]}"
  t2=$(now)
  sleep 1
  after=$(mem_available)
  for i in $(seq "$n"); do pids+=($(tree "$(state_pid "$root" "vm$i")")); done
  local processes=${#pids[@]}
  read -r rss pss touched < <(memory_of "${pids[@]}")
  t3=$(now)
  delete_all "$n" vm "$label" "${c[@]}"
  t4=$(now)
  record vm "$n" "$label" "$(secs "$t0" "$t1")" "$(secs "$t0" "$t2")" "$rss" "$pss" "$touched" \
    "$((before - after))" "$(secs "$t3" "$t4")" "$processes"
  settle
}

firecracker_vms() {
  local n=$1 dir="$work/fc-$n" i t0 t1 t2 t3 t4 before after pids=() files=()
  mkdir "$dir"
  for i in $(seq "$n"); do
    cat >"$dir/vm$i.json" <<EOF
{"boot-source": {"kernel_image_path": "$guest", "boot_args": "console=ttyS0"},
 "machine-config": {"vcpu_count": 1, "mem_size_mib": $memory_mib}, "drives": []}
EOF
    files+=("$dir/vm$i.out")
  done
  settle
  before=$(mem_available)
  t0=$(now)
  for i in $(seq "$n"); do
    "$firecracker" --no-api --config-file "$dir/vm$i.json" --id "density-$i" --level Error \
      </dev/null >"$dir/vm$i.out" 2>"$dir/vm$i.err" &
    fc_pids+=($!)
    pids+=($!)
  done
  t1=$(now)
  wait_printed "${files[@]}"
  t2=$(now)
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "run.sh: Firecracker $pid ended: $(tail -2 "$dir"/*.err)" >&2; exit 1; }
  done
  sleep 1
  after=$(mem_available)
  local all=()
  for pid in "${pids[@]}"; do all+=($(tree "$pid")); done
  read -r rss pss touched < <(memory_of "${all[@]}")
  t3=$(now)
  for pid in "${pids[@]}"; do kill -KILL "$pid"; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  t4=$(now)
  fc_pids=()
  record vm "$n" firecracker "$(secs "$t0" "$t1")" "$(secs "$t0" "$t2")" "$rss" "$pss" "$touched" \
    "$((before - after))" "$(secs "$t3" "$t4")" "${#all[@]}"
  settle
}

make_rootfs() {
  [ -d "$work/rootfs" ] && return
  mkdir -p "$work/rootfs/bin" "$work/rootfs/"{proc,sys,dev,etc,tmp}
  cp /bin/busybox "$work/rootfs/bin/"
  ln -s busybox "$work/rootfs/bin/sleep"
  ln -s busybox "$work/rootfs/bin/sh"
}

# corral_containers N LABEL BINARY: the `corral start`s one after the other (DENSITY_JOBS at a
# time), or with LABEL corral-many all N names given to one `corral start`.
corral_containers() {
  local n=$1 label=$2 binary=$3 root="$work/ct-root-$2-$1" i t0 t1 t3 t4 before after
  local monitors=() inits=()
  corral_roots+=("$root")
  local c=("$binary" --root "$root")
  make_rootfs
  for i in $(seq "$n"); do
    "${c[@]}" create "ct$i" --rootfs "$work/rootfs" -- /bin/sleep 1000 >/dev/null
  done
  settle
  before=$(mem_available)
  t0=$(now)
  start_all "$n" ct "$label" "${c[@]}"
  local running
  running=$("${c[@]}" list | awk '$3 == "running"' | wc -l)
  [ "$running" = "$n" ] || { echo "run.sh: corral list shows $running of $n containers running" >&2; exit 1; }
  t1=$(now)
  sleep 1
  after=$(mem_available)
  local monitor
  for i in $(seq "$n"); do
    monitor=$(state_pid "$root" "ct$i")
    monitors+=("$monitor")
    inits+=($(tree "$monitor" | tail -n +2))
  done
  read -r rss pss _ < <(memory_of "${monitors[@]}" "${inits[@]}")
  read -r monitor_rss monitor_pss _ < <(memory_of "${monitors[@]}")
  t3=$(now)
  delete_all "$n" ct "$label" "${c[@]}"
  t4=$(now)
  record container "$n" "$label" "$(secs "$t0" "$t1")" - "$rss" "$pss" 0 "$((before - after))" \
    "$(secs "$t3" "$t4")" "$((${#monitors[@]} + ${#inits[@]}))" "$monitor_rss" "$monitor_pss"
  settle
}

runc_containers() {
  local n=$1 dir="$work/runc-bundles-$n" i t0 t1 t3 t4 before after pids=()
  make_rootfs
  mkdir -p "$dir/template" "$runc_root"
  (cd "$dir/template" && runc spec)
  python3 - "$dir/template/config.json" <<'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["process"]["args"] = ["/bin/sleep", "1000"]
config["process"]["terminal"] = False
json.dump(config, open(path, "w"), indent=1)
PY
  # A bundle per container, each with its own copy of the rootfs, as each corral container has.
  for i in $(seq "$n"); do
    mkdir "$dir/rc$i"
    cp "$dir/template/config.json" "$dir/rc$i/"
    cp -a "$work/rootfs" "$dir/rc$i/rootfs"
  done
  settle
  before=$(mem_available)
  t0=$(now)
  for i in $(seq "$n"); do
    runc --root "$runc_root" run -d --bundle "$dir/rc$i" "rc$i" </dev/null >/dev/null 2>"$work/runc.err" ||
      { echo "run.sh: runc run rc$i failed: $(cat "$work/runc.err")" >&2; exit 1; }
  done
  local running
  running=$(runc --root "$runc_root" list | awk '$3 == "running"' | wc -l)
  [ "$running" = "$n" ] || { echo "run.sh: runc list shows $running of $n containers running" >&2; exit 1; }
  t1=$(now)
  sleep 1
  after=$(mem_available)
  for i in $(seq "$n"); do
    pids+=($(tree "$(runc --root "$runc_root" state "rc$i" | grep -oP '"pid":\s*\K[0-9]+')"))
  done
  read -r rss pss _ < <(memory_of "${pids[@]}")
  t3=$(now)
  for i in $(seq "$n"); do runc --root "$runc_root" delete --force "rc$i" >/dev/null; done
  t4=$(now)
  record container "$n" runc "$(secs "$t0" "$t1")" - "$rss" "$pss" 0 "$((before - after))" \
    "$(secs "$t3" "$t4")" "${#pids[@]}" 0 0
  rm -rf "$dir"
  settle
}

for n in "${counts[@]}"; do
  if [[ " $kinds " == *" vm "* ]]; then
    echo "density: $n VMs with corral" >&2
    corral_vms "$n" corral "$corral"
    echo "density: $n VMs with one corral start" >&2
    corral_vms "$n" corral-many "$corral"
    if [ "${DENSITY_FULL_BINARY:-0}" = 1 ]; then
      echo "density: $n VMs with corral, without corral-vmm" >&2
      corral_vms "$n" corral-full "$work/bin-full/corral"
    fi
    if [ -n "$firecracker" ]; then
      echo "density: $n VMs with Firecracker" >&2
      firecracker_vms "$n"
    fi
  fi
  if [[ " $kinds " == *" container "* ]]; then
    echo "density: $n containers with corral" >&2
    corral_containers "$n" corral "$corral"
    echo "density: $n containers with one corral start" >&2
    corral_containers "$n" corral-many "$corral"
    if [ "${DENSITY_FULL_BINARY:-0}" = 1 ]; then
      echo "density: $n containers with corral, without corral-monitor" >&2
      corral_containers "$n" corral-full "$work/bin-full/corral"
    fi
    echo "density: $n containers with runc" >&2
    runc_containers "$n"
  fi
done

# corral's host memory over the peer's, where both drops are clear of the noise (above 100 KiB
# per instance); "-" otherwise.
host_ratio() {
  awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN {if (a > 100 * n && b > 100 * n) printf "%.2f", a / b; else print "-"}'
}
mib() { awk -v k="$1" -v n="${2:-1}" 'BEGIN {printf "%.1f", k / n / 1024}'; }
echo
echo "density: $(nproc) CPUs, $(awk '$1 == "MemTotal:" {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM, $(date -u +%Y-%m-%d)"
if [[ " $kinds " == *" vm "* ]]; then
  echo
  echo "VMs: $guest_name.elf, ${memory_mib} MiB, 1 vCPU each; corral's VMM: $CORRAL_VMM;"
  echo "corral starts $jobs at a time"
  echo "per-instance figures are totals / N"
  printf "%-4s %-14s %7s %10s %7s %9s %9s %11s %11s %10s %9s\n" N runtime "up s" "printed s" "VMs/s" \
    "RSS MiB" "PSS MiB" "guest KiB" "overhead" "host MiB" "teardown"
  for n in "${counts[@]}"; do
    while read -r kind count runtime up printed rss pss touched host teardown processes; do
      [ "$kind" = vm ] && [ "$count" = "$n" ] || continue
      printf "%-4s %-14s %7s %10s %7s %9s %9s %11s %11s %10s %9s\n" "$n" "$runtime" "$up" "$printed" \
        "$(div "$n" "$printed")" "$(mib "$rss" "$n")" "$(mib "$pss" "$n")" "$(div "$touched" "$n" %.0f)" \
        "$(mib "$((rss - touched))" "$n")" "$(mib "$host" "$n")" "$teardown"
    done <"$results"
    if [ -n "$firecracker" ]; then
      read -r _ _ _ _ f_printed f_rss f_pss f_touched f_host _ < <(
        awk -v n="$n" '$1 == "vm" && $2 == n && $3 == "firecracker"' "$results")
      for label in corral corral-many corral-full; do
        grep -q "^vm $n $label " "$results" || continue
        read -r _ _ _ _ c_printed c_rss c_pss c_touched c_host _ < <(
          awk -v n="$n" -v l="$label" '$1 == "vm" && $2 == n && $3 == l' "$results")
        printf "%-4s %-14s %7s %10s %7s %9s %9s %11s %11s %10s\n" "$n" "$label/fc" "-" \
          "$(div "$c_printed" "$f_printed" %.2f)" "$(div "$f_printed" "$c_printed" %.2f)" \
          "$(div "$c_rss" "$f_rss" %.2f)" "$(div "$c_pss" "$f_pss" %.2f)" "-" \
          "$(div "$((c_rss - c_touched))" "$((f_rss - f_touched))" %.2f)" "$(host_ratio "$c_host" "$f_host" "$n")"
      done
    fi
  done
  echo "up: corral: every \`corral start\` returned and \`corral list\` shows all running (one"
  echo "process per VM, the VMM, which is its own supervisor: corral-vmm; corral-full: \`corral vmm"
  echo "run\`; corral-many: one \`corral start vm1 ... vmN\`, 16 at a time); Firecracker: every"
  echo "process launched, one after the other without waiting. printed: every guest's first console line"
  echo "written; VMs/s = N / printed. RSS/PSS/overhead (RSS less the guest memory touched) and host"
  echo "(MemAvailable drop) are per VM."
fi
if [[ " $kinds " == *" container "* ]]; then
  echo
  echo "containers: busybox \`sleep 1000\`; corral starts $jobs at a time; per-instance figures are totals / N"
  printf "%-4s %-14s %7s %8s %9s %9s %12s %10s %9s\n" N runtime "up s" "ct/s" "RSS MiB" "PSS MiB" \
    "monitor RSS" "host MiB" "teardown"
  for n in "${counts[@]}"; do
    while read -r kind count runtime up _ rss pss _ host teardown processes monitor_rss _; do
      [ "$kind" = container ] && [ "$count" = "$n" ] || continue
      printf "%-4s %-14s %7s %8s %9s %9s %12s %10s %9s\n" "$n" "$runtime" "$up" "$(div "$n" "$up")" \
        "$(mib "$rss" "$n")" "$(mib "$pss" "$n")" "$(mib "$monitor_rss" "$n")" "$(mib "$host" "$n")" "$teardown"
    done <"$results"
    read -r _ _ _ r_up _ r_rss r_pss _ r_host _ < <(
      awk -v n="$n" '$1 == "container" && $2 == n && $3 == "runc"' "$results")
    for label in corral corral-many corral-full; do
      grep -q "^container $n $label " "$results" || continue
      read -r _ _ _ c_up _ c_rss c_pss _ c_host _ < <(
        awk -v n="$n" -v l="$label" '$1 == "container" && $2 == n && $3 == l' "$results")
      printf "%-4s %-14s %7s %8s %9s %9s %12s %10s\n" "$n" "$label/runc" "$(div "$c_up" "$r_up" %.2f)" \
        "$(div "$r_up" "$c_up" %.2f)" "$(div "$c_rss" "$r_rss" %.2f)" "$(div "$c_pss" "$r_pss" %.2f)" "-" \
        "$(host_ratio "$c_host" "$r_host" "$n")"
    done
  done
  echo "up: every \`corral start\` / \`runc run -d\` returned and the runtime's list shows all running;"
  echo "corral-many: one \`corral start ct1 ... ctN\` (16 at a time); runc's are always one after the other."
  echo "RSS/PSS: corral's monitor (one per container, the container's parent) plus the container's"
  echo "sleep; runc leaves only the container's sleep. monitor RSS: corral's monitor alone."
fi
