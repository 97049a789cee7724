#!/usr/bin/env bash
# Sets up a fresh Debian host for corral (apt packages, release build) and runs corral's main job.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo build --release --quiet --bin corral

corral=target/release/corral
echo "== corral host check"
"$corral" host check
