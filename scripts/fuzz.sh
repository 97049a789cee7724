#!/usr/bin/env bash
# Runs every fuzz target of every crate for SECONDS each (default 600), one after another, and
# prints a table: target, runs executed, corpus size, verdict. Not part of CI (it needs nightly and
# cargo-fuzz: `rustup toolchain install nightly && cargo install --locked cargo-fuzz`).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     TARGETs as crate/target, e.g. corral-disk/open_read_qcow2
#
# A crash stops nothing else: its target is reported FAILED with the artifact's path, and the script
# exits 1 at the end. Corpora stay in each crate's fuzz/corpus/ (not committed), so later runs resume.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-600}"
shift || true
cargo +nightly fuzz --version >/dev/null 2>&1 ||
  { echo "fuzz.sh: needs nightly and cargo-fuzz: rustup toolchain install nightly && cargo install --locked cargo-fuzz" >&2; exit 1; }

selected=("$@")
if ((${#selected[@]} == 0)); then
  for dir in crates/*/fuzz; do
    crate="$(basename "$(dirname "$dir")")"
    while read -r target; do
      [ -n "$target" ] && selected+=("$crate/$target")
    done < <(cd "$dir/.." && cargo +nightly fuzz list)
  done
fi

logs="$(mktemp -d -t corral-fuzz.XXXXXX)"
results=()
failed=0
for entry in "${selected[@]}"; do
  crate="${entry%%/*}"
  target="${entry#*/}"
  log="$logs/$crate-$target.log"
  echo "== $crate/$target for ${seconds}s (log: $log)"
  if (cd "crates/$crate" && cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" \
        -print_final_stats=1) >"$log" 2>&1; then
    verdict=ok
  else
    verdict="FAILED ($(grep -o 'artifact_prefix[^;]*; Test unit written to [^ ]*' "$log" | tail -1 || true))"
    failed=1
  fi
  runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)"
  corpus="$(grep -oE '#[0-9]+.*corp: [0-9]+' "$log" | tail -1 | grep -oE 'corp: [0-9]+' | grep -oE '[0-9]+' || true)"
  results+=("$(printf '%-40s %12s %8s  %s' "$crate/$target" "${runs:-?}" "${corpus:-?}" "$verdict")")
done

echo
printf '%-40s %12s %8s  %s\n' target runs corpus verdict
printf '%s\n' "${results[@]}"
exit "$failed"
