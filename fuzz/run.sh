#!/usr/bin/env bash
# Builds every fuzz target and fuzzes each for a bounded time, starting from the committed
# corpus: fuzz/run.sh [SECONDS] (default 20 per target). Exits non-zero if any target
# crashes, after printing the crash input's path and the target's report.
#
# Stable Rust: without a sanitizer cargo-fuzz passes only stable flags (sanitizer coverage
# through -Cpasses / -Cllvm-args). FUZZ_SANITIZER=address needs RUSTC_BOOTSTRAP=1, which
# this script then sets; see README.md for why `none` is the default.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

seconds="${1:-20}"
sanitizer="${FUZZ_SANITIZER:-none}"

step() { printf '\n==> %s\n' "$*" >&2; }

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  step "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if [[ "$sanitizer" != none ]]; then
  export RUSTC_BOOTSTRAP=1
fi
export RUST_BACKTRACE=1

step "cargo fuzz build (sanitizer: $sanitizer)"
cargo fuzz build --sanitizer "$sanitizer"

# New inputs go to a scratch directory; the committed corpus is only read.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

failed=()
for target in $(cargo fuzz list); do
  step "fuzzing $target for ${seconds}s"
  mkdir -p "$scratch/$target" "corpus/$target"
  log="$scratch/$target.log"
  options=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
  if [[ -f "dict/$target.dict" ]]; then
    options+=(-dict="dict/$target.dict")
  fi
  if cargo fuzz run --sanitizer "$sanitizer" "$target" "$scratch/$target" "corpus/$target" -- \
    "${options[@]}" >"$log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" >&2 || true
  else
    failed+=("$target")
    # The target's report: from the panic (or libFuzzer's error, for a timeout or an
    # out-of-memory) to the saved input; cargo-fuzz's own backtrace after it is noise.
    report="$(sed -n '/panicked at\|ERROR: libFuzzer/,/Test unit written/p' "$log" | head -n 150)"
    printf '%s\n' "${report:-$(tail -n 60 "$log")}" >&2
    artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
    printf '\nFUZZ CRASH in %s: input %s\n' "$target" "${artifact:-(none written; see the report above)}" >&2
    printf 'reproduce: (cd fuzz && cargo fuzz run --sanitizer %s %s %s)\n' \
      "$sanitizer" "$target" "${artifact:-}" >&2
  fi
done

if ((${#failed[@]})); then
  printf '\nfuzz targets that crashed: %s\n' "${failed[*]}" >&2
  exit 1
fi
printf '\nno crash in %s target(s) after %ss each\n' "$(cargo fuzz list | wc -l)" "$seconds" >&2
