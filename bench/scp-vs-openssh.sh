#!/usr/bin/env bash
# Benchmark (not a test): upload throughput of ingestd vs. a stock OpenSSH sshd,
# both on this machine's loopback, driven by the same OpenSSH scp client and key.
#
#   bench/scp-vs-openssh.sh                    # 512 MiB file, 500 x 4 KiB, 3 runs each
#   SIZE_MB=1024 RUNS=5 bench/scp-vs-openssh.sh
#   SIZE_MB=64 RUNS=1 bench/scp-vs-openssh.sh  # quick check
#
# Cases, each against both servers, N runs (alternating which server goes first):
#   1. one SIZE_MB file with `scp -O` (legacy SCP protocol)
#   2. the same file with `scp` (SFTP mode, the OpenSSH >= 9 default)
#   3. SMALL_COUNT files of SMALL_KB KiB in one `scp -O` command
#   4. the same files in one `scp` (SFTP mode) command
# Prints per case the median seconds and MB/s (10^6 bytes/s) for both servers and
# the throughput ratio ingestd/openssh (> 1: ingestd faster). A case whose upload
# fails prints FAILED for that server and the benchmark goes on (SFTP support is
# newer than SCP in ingestd). Exit status: 1 if an SCP (-O) case failed, else 0.
#
# Environment:
#   SIZE_MB (512)  RUNS (3)  SMALL_COUNT (500)  SMALL_KB (4)
#   INGESTD_BIN    binary to use (default: build target/release/ingestd with cargo)
#   BENCH_PIPELINE=1  let ingestd's pipeline archive into a temp dir during the
#                  bench (default: held, see below)
#   SYNC_OPENSSH=1 include a `sync -f` of sshd's target filesystem in sshd's time
#   KEEP=1         keep the temp directory (logs, configs) for inspection
#
# What is compared, and what is not equal:
# - Cipher: `-c aes256-gcm@openssh.com` for both: one cipher on both sides measures
#   the servers, not the negotiation. Senders do not force ciphers: the default
#   client picks chacha20-poly1305 with both servers; bench/compare-openssh (see
#   BENCHMARKS.md) measures the default negotiation, each cipher, server CPU per
#   GiB and more workloads, and supersedes this script. Compression off.
# - Durability: ingestd makes every file durable (fsync, rename, directory fsync)
#   before it reports success; sshd writes into the page cache and returns. So
#   ingestd's times include fsync, sshd's do not (SYNC_OPENSSH=1 adds a filesystem
#   sync to sshd's times for a like-for-like view). `sync` runs before every timed
#   upload so one run's writeback does not land in the next one's time.
# - Pipeline: by default ingestd's archive dir lies under a regular file, so archiving
#   cannot start (the stage pauses, not counted as attempts) and the landed entries
#   stay in spool/ready: the bench measures landing only, not the archive copy
#   competing for disk and CPU. BENCH_PIPELINE=1 measures a node that archives too.
# - Both servers write to the same filesystem ($TMPDIR, default /tmp), the client
#   runs on the same cores as the server (on a small machine the client can be the
#   bottleneck), only loopback addresses are used.
set -euo pipefail

SIZE_MB=${SIZE_MB:-512}
RUNS=${RUNS:-3}
SMALL_COUNT=${SMALL_COUNT:-500}
SMALL_KB=${SMALL_KB:-4}
CIPHER=aes256-gcm@openssh.com
REPO=$(cd "$(dirname "$0")/.." && pwd)

for v in SIZE_MB RUNS SMALL_COUNT SMALL_KB; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench: $v must be a positive integer" >&2; exit 2; }
done
for t in /usr/sbin/sshd /usr/bin/scp /usr/bin/ssh-keygen; do
  [[ -x $t ]] || { echo "bench: $t is missing (apt-get install openssh-server openssh-client)" >&2; exit 2; }
done

if [[ -n ${INGESTD_BIN:-} ]]; then
  BIN=$INGESTD_BIN
else
  echo "bench: cargo build --release" >&2
  (cd "$REPO" && cargo build --release --quiet)
  BIN=$REPO/target/release/ingestd
fi
[[ -x $BIN ]] || { echo "bench: $BIN is not executable" >&2; exit 2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ingestd-bench.XXXXXX")
INGESTD_PID=
SSHD_PID=

stop_pid() { # pid name
  local pid=$1 i
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  stop_pid "$INGESTD_PID"
  stop_pid "$SSHD_PID"
  INGESTD_PID= SSHD_PID=
  if [[ ${KEEP:-0} == 1 ]]; then
    echo "bench: kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A loopback port nobody listens on, outside the usual ephemeral range.
free_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  echo "bench: no free port" >&2
  return 1
}

# Wait until 127.0.0.1:port answers with an SSH banner (or the process died).
wait_banner() { # port pid name log
  local i
  for ((i = 0; i < 200; i++)); do
    if ! kill -0 "$2" 2>/dev/null; then
      echo "bench: $3 exited during startup; log:" >&2
      cat "$4" >&2
      exit 1
    fi
    if timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && head -c 4 <&3 | grep -q SSH-" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "bench: $3 does not answer on port $1; log:" >&2
  cat "$4" >&2
  exit 1
}

mkdir -p "$WORK/src/small" "$WORK/ingestd" "$WORK/sshd/dst"

# --- client key, shared by both servers -------------------------------------
ssh-keygen -q -t ed25519 -N '' -C bench -f "$WORK/client_key"
cp "$WORK/client_key.pub" "$WORK/authorized_keys"

# --- data ---------------------------------------------------------------------
echo "bench: creating ${SIZE_MB} MiB file and $SMALL_COUNT x $SMALL_KB KiB files in $WORK/src" >&2
head -c $((SIZE_MB << 20)) /dev/urandom >"$WORK/src/big.bin"
for ((i = 1; i <= SMALL_COUNT; i++)); do
  head -c $((SMALL_KB << 10)) /dev/urandom >"$(printf '%s/src/small/f%05d' "$WORK" "$i")"
done
cat "$WORK/src/big.bin" "$WORK"/src/small/* >/dev/null # into the page cache
BIG_BYTES=$((SIZE_MB << 20))
SMALL_BYTES=$((SMALL_COUNT * (SMALL_KB << 10)))

# --- ingestd ------------------------------------------------------------------
IPORT=$(free_port)
SPOOL=$WORK/ingestd/spool
if [[ ${BENCH_PIPELINE:-0} == 1 ]]; then
  ARCHIVE=$WORK/ingestd/archive
else
  echo "a regular file: the archive dir below it cannot exist" >"$WORK/ingestd/blocker"
  ARCHIVE=$WORK/ingestd/blocker/archive
fi
cat >"$WORK/ingestd/ingestd.toml" <<EOF
node_id = "bench"
[ssh]
listen = "127.0.0.1:$IPORT"
host_key = "$WORK/ingestd/ssh_host_ed25519_key"
authorized_keys = "$WORK/authorized_keys"
[spool]
dir = "$SPOOL"
min_free = "0"
[archive]
dir = "$ARCHIVE"
[forward]
dir = "$WORK/ingestd/outgoing"
[retry]
initial_backoff = "1h"
max_backoff = "1h"
[pipeline]
rescan_interval = "1h"
[health]
listen = ""
EOF
"$BIN" check-config --config "$WORK/ingestd/ingestd.toml" >/dev/null
RUST_LOG=${RUST_LOG:-info} "$BIN" run --config "$WORK/ingestd/ingestd.toml" \
  </dev/null >"$WORK/ingestd/log" 2>&1 &
INGESTD_PID=$!

# --- OpenSSH sshd -------------------------------------------------------------
SPORT=$(free_port)
while [[ $SPORT == "$IPORT" ]]; do SPORT=$(free_port); done
ssh-keygen -q -t ed25519 -N '' -f "$WORK/sshd/ssh_host_ed25519_key"
cat >"$WORK/sshd/sshd_config" <<EOF
Port $SPORT
ListenAddress 127.0.0.1
HostKey $WORK/sshd/ssh_host_ed25519_key
AuthorizedKeysFile $WORK/authorized_keys
PidFile $WORK/sshd/sshd.pid
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
Compression no
UseDNS no
Subsystem sftp internal-sftp
EOF
if [[ $(id -u) == 0 ]]; then mkdir -p /run/sshd; fi # privilege separation dir
/usr/sbin/sshd -t -f "$WORK/sshd/sshd_config"
/usr/sbin/sshd -D -e -f "$WORK/sshd/sshd_config" </dev/null >"$WORK/sshd/log" 2>&1 &
SSHD_PID=$!

wait_banner "$IPORT" "$INGESTD_PID" ingestd "$WORK/ingestd/log"
wait_banner "$SPORT" "$SSHD_PID" sshd "$WORK/sshd/log"

# --- clients ------------------------------------------------------------------
SSH_OPTS=(-F /dev/null -c "$CIPHER" -i "$WORK/client_key"
  -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
  -o GlobalKnownHostsFile=/dev/null -o BatchMode=yes -o IdentitiesOnly=yes
  -o IdentityAgent=none -o Compression=no -o LogLevel=ERROR -o ConnectTimeout=20)
ME=$(id -un)

# Files landed in ingestd's spool (any state) and their total size.
spool_stats() {
  find "$SPOOL"/{ready,archived,processed,quarantine} -mindepth 2 -maxdepth 2 \
    -name data -printf '%s\n' 2>/dev/null | awk '{n++; b+=$1} END {printf "%d %d\n", n, b}' || true
}

# upload SERVER MODE KIND -> prints elapsed seconds, or returns 1
upload() {
  local server=$1 mode=$2 kind=$3 t0 t1 rc=0 before after want_n want_b
  local -a srcs flags=(-q)
  [[ $mode == scp ]] && flags+=(-O)
  if [[ $kind == big ]]; then
    srcs=("$WORK/src/big.bin"); want_n=1; want_b=$BIG_BYTES
  else
    srcs=("$WORK"/src/small/*); want_n=$SMALL_COUNT; want_b=$SMALL_BYTES
  fi
  sync
  if [[ $server == ingestd ]]; then
    before=$(spool_stats)
    t0=$(date +%s.%N)
    timeout 3600 scp "${flags[@]}" -P "$IPORT" "${SSH_OPTS[@]}" "${srcs[@]}" \
      "bench@127.0.0.1:" >>"$WORK/client.log" 2>&1 || rc=$?
    t1=$(date +%s.%N)
    after=$(spool_stats)
    if ((rc == 0)) && [[ ${BENCH_PIPELINE:-0} != 1 ]]; then
      read -r nb bb <<<"$before"
      read -r na ba <<<"$after"
      if ((na - nb != want_n || ba - bb != want_b)); then
        echo "bench: ingestd $mode $kind: spool grew by $((na - nb)) files / $((ba - bb)) bytes, expected $want_n / $want_b" >>"$WORK/client.log"
        rc=1
      fi
    fi
    # keep the disk bounded: drop what this run landed (the pipeline is held)
    [[ ${BENCH_PIPELINE:-0} == 1 ]] || find "$SPOOL/ready" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
  else
    t0=$(date +%s.%N)
    timeout 3600 scp "${flags[@]}" -P "$SPORT" "${SSH_OPTS[@]}" "${srcs[@]}" \
      "$ME@127.0.0.1:$WORK/sshd/dst/" >>"$WORK/client.log" 2>&1 || rc=$?
    if ((rc == 0)) && [[ ${SYNC_OPENSSH:-0} == 1 ]]; then sync -f "$WORK/sshd/dst"; fi
    t1=$(date +%s.%N)
    if ((rc == 0)); then
      local got
      got=$(find "$WORK/sshd/dst" -type f -printf '%s\n' | awk '{n++; b+=$1} END {printf "%d %d", n, b}')
      if [[ $got != "$want_n $want_b" ]]; then
        echo "bench: openssh $mode $kind: got $got, expected $want_n $want_b" >>"$WORK/client.log"
        rc=1
      fi
    fi
    rm -rf "$WORK/sshd/dst" && mkdir "$WORK/sshd/dst"
  fi
  if ((rc != 0)); then
    echo "bench: $server $mode $kind failed (exit $rc)" >>"$WORK/client.log"
    return 1
  fi
  awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f\n", b - a}'
}

median() { # values... -> median
  printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
    if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

CASES=("big scp" "big sftp" "small scp" "small sftp")
declare -A TIMES FAILED
for c in "${CASES[@]}"; do
  for s in ingestd openssh; do TIMES["$c/$s"]=""; FAILED["$c/$s"]=0; done
done

echo "bench: $RUNS run(s); ingestd on 127.0.0.1:$IPORT, sshd on 127.0.0.1:$SPORT" >&2
for ((run = 1; run <= RUNS; run++)); do
  if ((run % 2)); then order=(ingestd openssh); else order=(openssh ingestd); fi
  for c in "${CASES[@]}"; do
    read -r kind mode <<<"$c"
    for s in "${order[@]}"; do
      [[ ${FAILED["$c/$s"]} == 1 ]] && continue # failed once: don't retry it every run
      if t=$(upload "$s" "$mode" "$kind"); then
        TIMES["$c/$s"]+=" $t"
        echo "bench: run $run/$RUNS  $kind $mode  $s  ${t}s" >&2
      else
        FAILED["$c/$s"]=1
        echo "bench: run $run/$RUNS  $kind $mode  $s  FAILED" >&2
      fi
    done
  done
done

# --- report -------------------------------------------------------------------
label() {
  case $1 in
    "big scp") echo "1 x ${SIZE_MB} MiB, scp -O" ;;
    "big sftp") echo "1 x ${SIZE_MB} MiB, scp (sftp)" ;;
    "small scp") echo "${SMALL_COUNT} x ${SMALL_KB} KiB, scp -O" ;;
    "small sftp") echo "${SMALL_COUNT} x ${SMALL_KB} KiB, scp (sftp)" ;;
  esac
}

echo
echo "ingestd vs OpenSSH sshd, loopback, $(nproc) CPUs, $(uname -r), $(ssh -V 2>&1 | cut -d, -f1)"
echo "cipher $CIPHER, median of $RUNS run(s), MB = 10^6 bytes;" \
  "ratio = ingestd MB/s / openssh MB/s (> 1: ingestd faster)"
[[ ${SYNC_OPENSSH:-0} == 1 ]] && echo "openssh times include sync -f of its target filesystem"
[[ ${BENCH_PIPELINE:-0} == 1 ]] && echo "ingestd pipeline active (archiving during the bench)"
printf '%-30s %10s %9s %10s %9s %7s\n' case "ingestd s" "MB/s" "openssh s" "MB/s" ratio
scp_failed=0
for c in "${CASES[@]}"; do
  read -r kind mode <<<"$c"
  if [[ $kind == big ]]; then bytes=$BIG_BYTES; else bytes=$SMALL_BYTES; fi
  declare -A MED=() RATE=()
  for s in ingestd openssh; do
    if [[ ${FAILED["$c/$s"]} == 1 ]]; then
      MED[$s]=FAILED; RATE[$s]=-
      [[ $mode == scp ]] && scp_failed=1
    else
      # shellcheck disable=SC2086 # word splitting of the time list is intended
      MED[$s]=$(median ${TIMES["$c/$s"]})
      RATE[$s]=$(awk -v b="$bytes" -v t="${MED[$s]}" 'BEGIN {printf "%.1f", b / 1e6 / t}')
    fi
  done
  if [[ ${MED[ingestd]} != FAILED && ${MED[openssh]} != FAILED ]]; then
    ratio=$(awk -v a="${MED[openssh]}" -v b="${MED[ingestd]}" 'BEGIN {printf "%.2f", a / b}')
  else
    ratio=-
  fi
  printf '%-30s %10s %9s %10s %9s %7s\n' "$(label "$c")" \
    "${MED[ingestd]}" "${RATE[ingestd]}" "${MED[openssh]}" "${RATE[openssh]}" "$ratio"
  unset MED RATE
done
if grep -q . "$WORK/client.log" 2>/dev/null; then
  echo
  echo "client errors (last 20 lines of client.log; KEEP=1 keeps $WORK):"
  tail -n 20 "$WORK/client.log"
fi
exit "$scp_failed"
