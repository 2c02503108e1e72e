#!/usr/bin/env bash
# Run every cargo-fuzz target in fuzz/ for a bounded time (CI: FUZZ_SECS=30 each).
#   bash scripts/fuzz.sh                 # all targets, 30 s each
#   FUZZ_SECS=600 bash scripts/fuzz.sh   # a long run (quoted in closing notes)
#   bash scripts/fuzz.sh scp_frame       # one target
# Uses the nightly toolchain (cargo-fuzz needs -Z flags); RUSTC_BOOTSTRAP=1 on
# stable is the fallback. Installs cargo-fuzz when missing. Exits non-zero on any
# crash (the input is kept under fuzz/artifacts/<target>/: turn it into a
# regression test beside the code). Prints one line per target:
#   fuzz: <target> runs=<executions> secs=<s> crashes=<0|1>
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECS:-30}

if ! cargo fuzz --help >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install --locked cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz || exit 1
fi
if cargo +nightly --version >/dev/null 2>&1; then
  tc=(+nightly)
else
  echo "fuzz: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1"
  tc=()
  export RUSTC_BOOTSTRAP=1
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo "${tc[@]}" fuzz list)
fi
# Build once (no sanitizer: faster to build and run; the targets assert the
# invariants themselves, and Rust code is memory-safe outside unsafe blocks).
if ! cargo "${tc[@]}" fuzz build -s none -O "${targets[@]:0:1}" >/dev/null 2>/tmp/fuzz-build.log; then
  cat /tmp/fuzz-build.log >&2
  echo "fuzz: FAILED to build" >&2
  exit 1
fi
failed=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log=$(mktemp)
  cargo "${tc[@]}" fuzz run -s none -O "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 -close_fd_mask=3 >"$log" 2>&1
  rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  crash=0
  if [ $rc -ne 0 ]; then
    crash=1
    failed=1
    tail -40 "$log" >&2
  fi
  echo "fuzz: $t runs=${runs:-?} secs=$secs crashes=$crash"
  rm -f "$log"
done
[ $failed -eq 0 ] || { echo "fuzz: FAILED (a crash; see fuzz/artifacts/)" >&2; exit 1; }
