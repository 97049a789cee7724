#!/usr/bin/env bash
# Boot benchmark: corral-vmm (the VMM the instance manager runs) versus qemu-system-x86_64 -M
# microvm on the same guest, side by side in one run (interleaved). Prints wall time, CPU time and
# peak RSS of the VMM process and the corral/qemu ratios.
#
#   bench/vmm-start/run.sh [RUNS]           test guest (guests/exit.c, PVH ELF) writing to the
#                                           debug-exit port at once; default 20 runs each
#                                           (as root, also corral without seccomp filters,
#                                           jailed with --jail, and through the instance layer:
#                                           `corral start`, always jailed)
#   bench/vmm-start/run.sh --linux [RUNS]   the real-Linux guest (guests/linux, ACPI variant)
#                                           booted to its init, which reboots (the end all
#                                           three VMMs share, see measure.py); 2 vCPUs;
#                                           default 3 runs each (15-20 s a boot)
#
# CORRAL_BENCH_BASELINE=PATH adds an earlier corral-vmm binary as a row of its own (e.g. one
# built from the commit before a change), so the change's cost is measured in the same
# interleaved run.
# FIRECRACKER=PATH (a binary from bench/peers/firecracker.sh) adds Firecracker beside corral on the
# guest that resets through the i8042 (guests/reset.c), and the corral/fc ratios; as root, with the
# jailer beside it, Firecracker jailed as well (against corral's jailed VMM); with --linux,
# Firecracker boots the same vmlinux and initramfs (PVH) with the same command line.
# CORRAL_BENCH_KVM_EVENTS=1 runs each VMM once more under `perf stat` after the timed runs and
# prints KVM's exits and emulated instructions by kind for each (measure.py --kvm-events).
set -euo pipefail
cd "$(dirname "$0")/../.."

linux=false
if [ "${1:-}" = "--linux" ]; then
  linux=true
  shift
fi
command -v qemu-system-x86_64 >/dev/null ||
  { echo "run.sh: qemu-system-x86_64 is missing: apt-get install qemu-system-x86" >&2; exit 1; }
[ -x /usr/bin/time ] ||
  { echo "run.sh: GNU time (peak RSS) is missing: apt-get install time" >&2; exit 1; }

cargo build --release --quiet -p corral -p corral-vmm-cli -p corral-guests
# corral-vmm as it is built to be measured: static, the whole program optimised (build-static.sh).
vmm="$(bash scripts/build-static.sh --vmm | tail -1)"
if $linux; then
  guest_dir="$(mktemp -d -t corral-bench-linux.XXXXXX)"
  trap 'rm -rf "$guest_dir"' EXIT
  bash guests/linux/build.sh "$guest_dir" guests/linux/guest-full.config
  python3 bench/vmm-start/measure.py --runs "${1:-3}" --corral target/release/corral --vmm "$vmm" \
    --memory-mib 256 --linux-dir "$guest_dir" \
    --cmdline "$(cat guests/linux/cmdline) lapic=notscdeadline" \
    ${CORRAL_BENCH_BASELINE:+--baseline "$CORRAL_BENCH_BASELINE"} \
    ${FIRECRACKER:+--firecracker "$FIRECRACKER"} ${CORRAL_BENCH_KVM_EVENTS:+--kvm-events}
else
  guest="$(ls -td target/release/build/corral-guests-*/out | head -1)/exit.elf"
  python3 bench/vmm-start/measure.py --runs "${1:-20}" --corral target/release/corral --vmm "$vmm" \
    --guest "$guest" $([ "$(id -u)" = 0 ] && echo --sandbox) \
    ${CORRAL_BENCH_BASELINE:+--baseline "$CORRAL_BENCH_BASELINE"} \
    ${FIRECRACKER:+--firecracker "$FIRECRACKER" --reset-guest "$(dirname "$guest")/reset.elf"} \
    $([ -n "${FIRECRACKER:-}" ] && [ "$(id -u)" = 0 ] && [ -x "$(dirname "$FIRECRACKER")/jailer" ] &&
      echo --firecracker-jailer "$(dirname "$FIRECRACKER")/jailer") \
    ${CORRAL_BENCH_KVM_EVENTS:+--kvm-events}
fi
