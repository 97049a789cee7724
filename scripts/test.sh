#!/usr/bin/env bash
# The whole test suite: lints, unit and integration tests, then the slow real-guest tests.
# Tests that need a facility this host lacks print "SKIPPED <test>: <reason>"; all skips are listed
# at the end so none passes silently.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
# The schemathesis deps.sh installed (the API test runs it).
. scripts/schemathesis.env
export PATH="$schemathesis_venv/bin:$PATH"

# A one-off build of the whole workspace gains nothing from incremental state, which would double
# the target directory on disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

export CORRAL_TEST_SKIP_LOG
CORRAL_TEST_SKIP_LOG="$(mktemp -t corral-skips.XXXXXX)"
trap 'rm -f "$CORRAL_TEST_SKIP_LOG"' EXIT

echo "== format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== the static corral (the guest agent for any Linux guest; a debug build)"
export CORRAL_STATIC_CORRAL
CORRAL_STATIC_CORRAL="$PWD/$(bash scripts/build-static.sh)"

echo "== unit and integration tests"
cargo nextest run --workspace --profile ci

echo "== the VMM as bench/vmm-start measures it and Firecracker ships: the static corral-vmm (musl), run directly and by VM instances"
musl=x86_64-unknown-linux-musl
if rustup target list --installed 2>/dev/null | grep -qx "$musl" || rustup target add "$musl" >/dev/null 2>&1; then
  static_vmm="$PWD/$(bash scripts/build-static.sh --vmm)"
  static_bins="$(mktemp -d -t corral-static-vmm.XXXXXX)"
  trap 'rm -f "$CORRAL_TEST_SKIP_LOG"; rm -rf "$static_bins"' EXIT
  # The instances' VMM is the corral-vmm beside corral: copies of the tested corral and its
  # corral-monitor go beside it.
  cp target/debug/corral target/debug/corral-monitor "$static_bins/"
  cp "$static_vmm" "$static_bins/corral-vmm"
  CORRAL_TEST_VMM="$static_vmm" CORRAL_TEST_BIN_DIR="$static_bins" \
    cargo nextest run -p corral --profile ci -E 'binary(virtio) | binary(vmm_sandbox) |
      binary(instances_vm) | binary(instances_vm_jail) | binary(snapshot_instances) |
      binary(migration_instances) | binary(network_instances)'
  rm -rf "$static_bins"
else
  echo "SKIPPED the static corral-vmm's tests: the $musl target is missing and rustup could not add it" |
    tee -a "$CORRAL_TEST_SKIP_LOG"
fi

echo "== real Linux guests in corral vmm (kernel builds cached; 15-60 s per boot)"
guest_linux="$(mktemp -d -t corral-guest-linux.XXXXXX)"
trap 'rm -f "$CORRAL_TEST_SKIP_LOG"; rm -rf "$guest_linux"' EXIT
bash guests/linux/build.sh "$guest_linux/guest"
bash guests/linux/build.sh "$guest_linux/full" guests/linux/guest-full.config
export CORRAL_GUEST_LINUX_DIR="$guest_linux/guest" CORRAL_GUEST_LINUX_FULL_DIR="$guest_linux/full"
# One boot at a time: each guest has one or two vCPUs and the host two cores.
cargo nextest run -p corral --profile ci --run-ignored only \
  -E 'binary(vmm_linux) | binary(instances_boot_disk) | test(linux_boots_after_export_and_import)' -j 1

echo "== Debian image builds (packages from Debian's archive; the built rootfs is cached), the VM one booted, systemd containers booted and cloned, the Debian package installed and purged"
cargo nextest run -p corral --profile ci --run-ignored only \
  -E 'binary(image_build) | binary(system_containers) | binary(package)' -j 1

echo "== skipped tests"
if [ -s "$CORRAL_TEST_SKIP_LOG" ]; then sort -u "$CORRAL_TEST_SKIP_LOG"; else echo "none"; fi
