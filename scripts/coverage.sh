#!/usr/bin/env bash
# Line coverage of crates by their unit tests (`--lib`), one row per file, with cargo-llvm-cov.
# Not part of CI: a measurement for reviews (e.g. before and after a change to corral-core).
#
#   scripts/coverage.sh [CRATE...]       default: corral-core
#
# Needs cargo-llvm-cov and rustup's llvm-tools:
#   rustup component add llvm-tools && cargo install --locked cargo-llvm-cov
# A file's count includes its own `#[cfg(test)]` module; tests in a file of their own (such as
# corral-core's lifecycle/tests.rs) are listed separately.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo llvm-cov --version >/dev/null 2>&1 ||
  { echo "coverage.sh: needs cargo-llvm-cov: rustup component add llvm-tools && cargo install --locked cargo-llvm-cov" >&2; exit 1; }
crates=("$@")
((${#crates[@]})) || crates=(corral-core)
packages=()
for crate in "${crates[@]}"; do packages+=(-p "$crate"); done
cargo llvm-cov "${packages[@]}" --lib --summary-only
