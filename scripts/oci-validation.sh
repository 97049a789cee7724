#!/usr/bin/env bash
# Runs the OCI runtime-tools validation suite against `corral oci` (through a corral-oci symlink).
# Not part of CI: the suite is not packaged by Debian (golang-github-opencontainers-runtime-tools-dev
# ships only its libraries), so pass a checkout of github.com/opencontainers/runtime-tools. Its
# vendored dependencies build offline; with Debian 12's Go 1.19 use a commit from before the
# suite moved to Go 1.21 (early 2025, e.g. 260e151).
#
#   scripts/oci-validation.sh /path/to/runtime-tools      (needs root, golang-go)
set -euo pipefail
cd "$(dirname "$0")/.."

tools="${1:?usage: scripts/oci-validation.sh /path/to/runtime-tools-checkout}"
cargo build --release -q -p corral
work="$(mktemp -d -t corral-validation.XXXXXX)"
trap 'rm -rf "$work"' EXIT
ln -s "$PWD/target/release/corral" "$work/corral-oci"

cd "$tools"
export GOFLAGS=-mod=vendor GOTOOLCHAIN=local GOPROXY=off
# runtimetest runs inside busybox-less test rootfs images: it must be static.
CGO_ENABLED=0 go build -o runtimetest ./cmd/runtimetest
for dir in validation/*/; do
  name="$(basename "$dir")"
  [ "$name" = util ] && continue
  go build -o "validation/$name.t" "./validation/$name/"
done

total_ok=0 total_failed=0
for test in validation/*.t; do
  name="$(basename "$test" .t)"
  [ "$name" = util ] && continue
  out="$(RUNTIME="$work/corral-oci" timeout 120 "./$test" 2>&1 || true)"
  ok=$(grep -c '^ok' <<<"$out" || true)
  failed=$(grep -c '^not ok' <<<"$out" || true)
  printf '%-40s %5d ok %3d not ok\n' "$name" "$ok" "$failed"
  total_ok=$((total_ok + ok)) total_failed=$((total_failed + failed))
done
echo "$total_ok passed, $total_failed failed"
