#!/usr/bin/env bash
# Run every cargo-fuzz target in fuzz/ for a bounded time (CI: FUZZ_SECS=30 each).
#   bash scripts/fuzz.sh                 # all targets, 30 s each
#   FUZZ_SECS=600 bash scripts/fuzz.sh   # a long run (docs/fuzzing.md)
#   bash scripts/fuzz.sh scp_frame       # one target (or several)
# Uses the nightly toolchain (cargo-fuzz needs -Z flags); RUSTC_BOOTSTRAP=1 on
# stable is the fallback. Installs cargo-fuzz when missing. Builds every target
# asked for before running any. Exits non-zero on a failed build or any crash
# (the input is kept under fuzz/artifacts/<target>/: turn it into a regression
# test beside the code). Prints one line per target:
#   fuzz: <target> runs=<executions> secs=<s> crashes=<0|1> corpus=<inputs>
# FUZZ_TARGET_DIR: another cargo target dir (default fuzz/target).
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECS:-30}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install --locked cargo-fuzz || cargo install cargo-fuzz || {
    echo "fuzz: FAILED to install cargo-fuzz" >&2
    exit 1
  }
fi
if cargo +nightly --version >/dev/null 2>&1; then
  tc=(+nightly)
else
  echo "fuzz: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1"
  tc=()
  export RUSTC_BOOTSTRAP=1
fi
opts=(-s none -O)
if [ -n "${FUZZ_TARGET_DIR:-}" ]; then
  opts+=(--target-dir "$FUZZ_TARGET_DIR")
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo "${tc[@]}" fuzz list)
  [ ${#targets[@]} -gt 0 ] || { echo "fuzz: FAILED: no targets" >&2; exit 1; }
  build=("")      # one build of every target
else
  build=("${targets[@]}")
fi
# Build first (no sanitizer: faster to build and run; the targets assert the
# invariants themselves, and Rust code is memory-safe outside unsafe blocks).
blog=$(mktemp)
for b in "${build[@]}"; do
  # shellcheck disable=SC2086 # an empty $b builds every target
  if ! cargo "${tc[@]}" fuzz build "${opts[@]}" $b >"$blog" 2>&1; then
    cat "$blog" >&2
    rm -f "$blog"
    echo "fuzz: FAILED to build ${b:-the targets}" >&2
    exit 1
  fi
done
rm -f "$blog"
failed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log=$(mktemp)
  start=$SECONDS
  cargo "${tc[@]}" fuzz run "${opts[@]}" "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -timeout=60 -print_final_stats=1 -close_fd_mask=3 >"$log" 2>&1
  rc=$?
  took=$((SECONDS - start))
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  crash=0
  if [ $rc -ne 0 ] || [ -z "$runs" ]; then
    crash=1
    failed=1
    grep -m1 -A2 'panicked at' "$log" >&2
    tail -30 "$log" >&2
  fi
  n=$(find "fuzz/corpus/$t" -type f | wc -l)
  echo "fuzz: $t runs=${runs:-?} secs=$took crashes=$crash corpus=$n"
  rm -f "$log"
done
[ $failed -eq 0 ] || { echo "fuzz: FAILED (a crash; see fuzz/artifacts/)" >&2; exit 1; }
