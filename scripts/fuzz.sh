#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets: the job envelope, lifecycle events, worker
# announcements, the HTML form of POST /jobs) for a few seconds each and fails if any crashes,
# panics, breaks a round-trip assertion, or spends over 10 s on one input.
#
# cargo fuzz needs nightly flags; the toolchain here is stable, so RUSTC_BOOTSTRAP=1 lets it use
# them. No sanitizer (the code under test forbids `unsafe`; a panic, an abort or a stack
# overflow is caught without one) and debug assertions on (overflow checks).
# The build goes to FUZZ_TARGET_DIR (default ~/.cache/offload/fuzz-target) and the corpus
# grows in ~/.cache/offload/fuzz-corpus/<target>, both outside the clone, so a fresh clone in
# CI reuses them; fuzz/seeds/<target> holds the hand-written seeds.
# Usage: scripts/fuzz.sh [seconds-per-target, default 30]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/offload"
target_dir="${FUZZ_TARGET_DIR:-$cache/fuzz-target}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
  cargo install cargo-fuzz --locked
fi
flags=(-O -a -s none --target-dir "$target_dir")
started=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "fuzz build took $(( $(date +%s) - started )) s"

failed=()
for target in $(cargo fuzz list); do
  corpus="$cache/fuzz-corpus/$target"
  mkdir -p "$corpus"
  echo "== fuzz $target for $seconds s"
  if ! cargo fuzz run "${flags[@]}" "$target" "$corpus" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 2>"$cache/fuzz-$target.log"; then
    tail -n 40 "$cache/fuzz-$target.log" >&2
    failed+=("$target")
  else
    grep -E "^(stat::number_of_executed_units|stat::new_units_added)" "$cache/fuzz-$target.log" || true
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz targets that failed: ${failed[*]} (inputs in fuzz/artifacts/<target>/;" \
    "replay one with: RUSTC_BOOTSTRAP=1 cargo fuzz run -O -a -s none <target> <file>)" >&2
  exit 1
fi
echo "every fuzz target ran $seconds s without a failure ($(( $(date +%s) - started )) s in all)"
