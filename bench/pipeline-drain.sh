#!/bin/sh
# Drain rate of the pipeline without a process command: 2000 files of 4 KiB landed
# directly in a fresh spool, timed until all are forwarded. Three runs and the median.
# Usage: bench/pipeline-drain.sh [FILES] [SIZE] [DIR]
set -eu
cd "$(dirname "$0")/.."
N=${1:-2000}
S=${2:-4096}
DIR=${3:-${TMPDIR:-/tmp}}
cargo build --release --example pipeline_drain >/dev/null 2>&1 || cargo build --release --example pipeline_drain
BIN=target/release/examples/pipeline_drain
rates=""
for i in 1 2 3; do
    # let the previous run's deletions settle (online discard makes them linger in
    # the journal and slows the next run's fsyncs)
    [ "$i" = 1 ] || sleep "${PAUSE:-15}"
    out=$("$BIN" "$N" "$S" "$DIR")
    echo "run $i: $out"
    rates="$rates $(echo "$out" | sed -n 's/.*rate=\([0-9]*\) files.*/\1/p')"
done
echo "$rates" | tr ' ' '\n' | grep . | sort -n | sed -n 2p | sed 's/^/median files\/s: /'
