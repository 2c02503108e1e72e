#!/bin/bash
# sender.sh DIR PHASE MAX WORKERS: runs in the lab's client namespace. WORKERS
# parallel senders upload files PHASE-<seq>.bin (seq 0..MAX-1, 1 KiB to
# $SIZE_KIB_MAX KiB (default 64) of random bytes; scp -l $SCP_LIMIT_KBIT if set, so
# transfers last long enough to be cut) through the VIP, alternating legacy SCP
# (`scp -O`) and SFTP (`scp`), until
# MAX files or until DIR/stop-PHASE exists. A failed scp is retried once after 1 s,
# as real senders do. One line per file in DIR/results-PHASE.txt:
#   PHASE SEQ NAME BLAKE3 SIZE ok|FAIL ATTEMPTS START END PROTO
# (START/END: epoch seconds of the first attempt's start and the last one's end).
# $PAUSE: seconds each sender waits between two files (a steadier, lighter stream).
set -u
dir=$1 phase=$2 max=$3 workers=$4
src=$dir/src/$phase; mkdir -p "$src"
res=$dir/results-$phase.txt; : > "$res"
opts=(-q -i "$dir/client_key" -o BatchMode=yes -o UserKnownHostsFile="$dir/known_hosts"
      -o StrictHostKeyChecking=yes -o ConnectTimeout=10 -o ServerAliveInterval=2
      -o ServerAliveCountMax=3 -o LogLevel=ERROR)
[ -n "${SCP_LIMIT_KBIT:-}" ] && opts+=(-l "$SCP_LIMIT_KBIT")
kmax=${SIZE_KIB_MAX:-64}
target="lab@$VIP:"
worker() {
  local w=$1 i name f size b3 t0 t1 n ok proto
  for ((i = w; i < max; i += workers)); do
    [ -e "$dir/stop-$phase" ] && break
    name=$(printf '%s-%04d.bin' "$phase" "$i"); f=$src/$name
    size=$(( (RANDOM % kmax + 1) * 1024 - RANDOM % 1000 ))
    head -c "$size" /dev/urandom > "$f"
    b3=$(b3sum --no-names "$f")
    if (( i % 2 )); then proto=sftp; m=(); else proto=scp; m=(-O); fi
    t0=$(date +%s.%N); ok=FAIL
    for n in 1 2; do
      if timeout -k 5 60 scp "${m[@]}" "${opts[@]}" "$f" "$target" 2>>"$dir/sender-$phase.err"; then ok=ok; break; fi
      echo "$(date +%T.%N) $name attempt $n failed" >> "$dir/sender-$phase.err"
      [ $n = 1 ] && sleep 1
    done
    t1=$(date +%s.%N)
    echo "$phase $i $name $b3 $size $ok $n $t0 $t1 $proto" >> "$res"
    [ -n "${PAUSE:-}" ] && sleep "$PAUSE"
  done
}
for ((w = 0; w < workers; w++)); do worker "$w" & done
wait
