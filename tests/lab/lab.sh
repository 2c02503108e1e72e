#!/bin/bash
# tests/lab/lab.sh: the pool lab. Builds, in network namespaces it creates itself
# (one bridge, veth pairs, private addresses 10.99.0.0/24, nothing in the host's
# namespace), a client, two directors, three ingestd nodes and four GlusterFS
# servers, and checks the pool end to end:
#   A  150 uploads through the VIP spread evenly (each node within +-20%)
#   B  a node put in maintenance during a stream gets no new uploads, none fails
#   C  the master director killed during a stream: the VIP moves, every upload
#      succeeds (senders retry a failed scp once)
#   D  a Gluster server killed during a stream: no upload fails, archiving goes on
#   and every acknowledged file is archived (BLAKE3-verified through the Gluster
#   mount) and forwarded exactly once.
# Prints `LAB:` summary lines; exits non-zero on any failure. Everything (processes,
# mounts, namespaces, files) is torn down at the end, even on failure or Ctrl-C.
#
# Directors: keepalived from keepalived/keepalived.conf (adapt-keepalived.sh) for
# VRRP and the VIP, and for the table real IPVS where `modprobe ip_vs` works, else
# keepalived -P + HAProxy from keepalived/haproxy.cfg (adapt-haproxy.sh).
# Needs root, target/release/ingestd (built by `cargo build --release` or
# `cargo test --release`), and the packages from scripts/install-deps.sh.
# LAB_KEEP=1 copies the logs and configs to $LAB.logs before teardown.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
BIN=${INGESTD_BIN:-$REPO/target/release/ingestd}
LAB=${LAB_DIR:-/tmp/ingestd-lab}
P=ilab                      # namespace prefix
NET=10.99.0
export VIP=$NET.10
LVS=(lvs1 lvs2); LVS_IP=([0]=$NET.2 [1]=$NET.3)
NODES=(n1 n2 n3); NODE_IP=([0]=$NET.11 [1]=$NET.12 [2]=$NET.13)
GS=(gs1 gs2 gs3 gs4); GS_IP=([0]=$NET.21 [1]=$NET.22 [2]=$NET.23 [3]=$NET.24)
CLIENT_IP=$NET.100
VOL=ilabvol
T0=$(date +%s)
MODE=""
FAILED=0

log() { echo "[lab $(date +%T) +$(( $(date +%s) - T0 ))s] $*"; }
die() { log "FAIL: $*"; echo "LAB: FAIL setup: $*"; exit 1; }
ev() { echo "$1 $2" >> "$LAB/events.txt"; }
nsx() { local ns=$1; shift; ip netns exec "$P-$ns" "$@"; }
# until SECS CMD...: run CMD every 0.2 s until it succeeds; 1 after SECS seconds.
until_ok() {
  local end=$(( $(date +%s) + $1 )); shift
  until "$@"; do [ "$(date +%s)" -ge "$end" ] && return 1; sleep 0.2; done
}
# gone: no such process, or a zombie (its sockets and files are closed already)
gone() { [ ! -e "/proc/$1" ] || [ "$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null)" = Z ]; }
waitgone() { local p; for p in "$@"; do until_ok 10 gone "$p" || true; done; }
nspids() { ip netns pids "$P-$1" 2>/dev/null; }
killns() { local p; p=$(nspids "$1"); [ -n "$p" ] && kill -9 $p 2>/dev/null; waitgone $p; }

# ---------------------------------------------------------------- teardown ----
teardown() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "${SENDER_PID:-}" ] && kill "$SENDER_PID" 2>/dev/null
  log "teardown"
  if [ "$rc" -ne 0 ] && [ -d "$LAB" ]; then
    for f in "$LAB"/*/*.log "$LAB"/*.log "$LAB"/sender-*.err; do
      [ -s "$f" ] || continue
      echo "----- tail of $f"; tail -n 15 "$f"
    done
  fi
  local ns pids=""
  for ns in client lvs1 lvs2 n1 n2 n3; do pids+=" $(nspids $ns)"; done
  [ -n "${pids// /}" ] && kill -9 $pids 2>/dev/null
  waitgone $pids
  # FUSE mounts (their client processes died with the node namespaces above)
  local m
  for m in $(awk -v l="$LAB/mnt/" 'index($2, l) == 1 {print $2}' /proc/mounts); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
  done
  pids=""
  for ns in gs1 gs2 gs3 gs4; do pids+=" $(nspids $ns)"; done
  [ -n "${pids// /}" ] && kill -9 $pids 2>/dev/null
  waitgone $pids
  for ns in client lvs1 lvs2 n1 n2 n3 gs1 gs2 gs3 gs4 sw; do ip netns del "$P-$ns" 2>/dev/null; done
  # `ip netns add` bind-mounts /run/netns on itself: undo it if no namespace is left.
  if [ -z "$(ip netns list 2>/dev/null)" ]; then
    umount /run/netns 2>/dev/null && rmdir /run/netns 2>/dev/null
  fi
  if [ "${LAB_KEEP:-0}" = 1 ] && [ -d "$LAB" ]; then
    rm -rf "$LAB.logs"; mkdir -p "$LAB.logs"
    (cd "$LAB" && find . -path ./bricks -prune -o \( -name '*.log' -o -name '*.txt' -o -name '*.err' \
      -o -name '*.conf' -o -name '*.cfg' -o -name '*.toml' \) -exec cp --parents {} "$LAB.logs/" \; 2>/dev/null)
    log "logs kept in $LAB.logs"
  fi
  # The lab's files live on its own tmpfs: no slow deletes (discard) on the host disk.
  if mountpoint -q "$LAB"; then umount "$LAB" 2>/dev/null || umount -l "$LAB"; fi
  rmdir "$LAB" 2>/dev/null || rm -rf "$LAB"
  log "done in $(( $(date +%s) - T0 ))s (exit $rc)"
  exit "$rc"
}

# ------------------------------------------------------------ preconditions ----
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, mounts)"
[ -x "$BIN" ] || die "$BIN is missing: cargo build --release first"
for t in ip keepalived glusterd gluster mount.glusterfs b3sum scp ssh-keygen curl python3 nsenter unshare ss; do
  command -v "$t" >/dev/null || die "required tool $t is missing (scripts/install-deps.sh installs it)"
done
# Leftovers of an earlier run that was killed before its teardown.
for ns in $(ip netns list 2>/dev/null | awk -v p="$P-" 'index($1, p) == 1 {print $1}'); do
  log "removing stale namespace $ns"
  p=$(ip netns pids "$ns"); [ -n "$p" ] && kill -9 $p; waitgone $p
done
for m in $(awk -v l="$LAB/mnt/" 'index($2, l) == 1 {print $2}' /proc/mounts); do umount -l "$m"; done
for ns in $(ip netns list 2>/dev/null | awk -v p="$P-" 'index($1, p) == 1 {print $1}'); do ip netns del "$ns"; done
mountpoint -q "$LAB" && { umount "$LAB" || umount -l "$LAB"; }
rm -rf "$LAB"; mkdir -p "$LAB"
trap teardown EXIT
# Spools, bricks and logs on a tmpfs of the lab's own (Gluster needs its trusted.*
# xattrs, which tmpfs has); teardown is one umount.
mount -t tmpfs -o size=2g,mode=0755 ilab-tmpfs "$LAB" || die "tmpfs on $LAB"
: > "$LAB/events.txt"
trap 'exit 130' INT TERM

if [ -e /proc/net/ip_vs ] || { command -v modprobe >/dev/null && modprobe ip_vs 2>/dev/null && [ -e /proc/net/ip_vs ]; }; then
  MODE=ipvs
else
  MODE=haproxy
  command -v haproxy >/dev/null || die "haproxy is missing"
fi
log "round-robin table: $MODE ($( [ $MODE = ipvs ] && echo 'kernel IPVS via keepalived' || echo 'no ip_vs in this kernel: keepalived -P for the VIP + HAProxy'))"
ev mode $MODE

# ------------------------------------------------------------------ network ----
ip netns add $P-sw || die "ip netns add"
ip -n $P-sw link add br0 type bridge && ip -n $P-sw link set br0 up && ip -n $P-sw link set lo up
addhost() {   # addhost NAME IP
  ip netns add "$P-$1" || return 1
  ip -n $P-sw link add "v-$1" type veth peer name eth0 netns "$P-$1" || return 1
  ip -n $P-sw link set "v-$1" master br0 up
  ip -n "$P-$1" addr add "$2/24" dev eth0
  ip -n "$P-$1" link set eth0 up
  ip -n "$P-$1" link set lo up
}
addhost client $CLIENT_IP || die "client namespace"
for i in 0 1; do addhost ${LVS[$i]} ${LVS_IP[$i]} || die "director namespace"; done
for i in 0 1 2; do addhost ${NODES[$i]} ${NODE_IP[$i]} || die "node namespace"; done
for i in 0 1 2 3; do addhost ${GS[$i]} ${GS_IP[$i]} || die "gluster namespace"; done
log "network: bridge + 10 namespaces"

# ------------------------------------------------------------------ gluster ----
gs_start() {   # adapted from the shared gluster-lab recipe: one glusterd per namespace
  local n=$1 D=$LAB/${GS[$1]}
  mkdir -p "$D/lib" "$D/log" "$D/run/gluster" "$LAB/bricks"
  [ -d "$D/lib/groups" ] || cp -a /var/lib/glusterd/groups /var/lib/glusterd/hooks "$D/lib/"
  nsx "${GS[$n]}" sh -c "mount --bind $D/lib /var/lib/glusterd && mount --bind $D/log /var/log/glusterfs &&
    mount --bind $D/run /run && exec glusterd -p /run/glusterd.pid --log-level WARNING" || return 1
  until_ok 20 gl "$n" volume list
}
gl() { local n=$1; shift; [ -s "$LAB/${GS[$n]}/run/glusterd.pid" ] &&
  timeout 30 nsenter -t "$(cat "$LAB/${GS[$n]}/run/glusterd.pid")" -n -m gluster --mode=script "$@" >/dev/null 2>&1; }
glout() { local n=$1; shift; timeout 30 nsenter -t "$(cat "$LAB/${GS[$n]}/run/glusterd.pid")" -n -m gluster --mode=script "$@" 2>&1; }
for n in 0 1 2 3; do gs_start $n & done; wait
for n in 0 1 2 3; do gl $n volume list || die "glusterd ${GS[$n]} did not start"; done
for n in 1 2 3; do gl 0 peer probe ${GS_IP[$n]} || die "peer probe ${GS_IP[$n]}"; done
# every server must see every other one connected, or a volume create fails staging
peers_ok() { local n; for n in 0 1 2 3; do [ "$(glout $n pool list | grep -c Connected)" -eq 4 ] || return 1; done; }
until_ok 30 peers_ok || die "gluster peers not connected: $(glout 0 pool list)"
bricks=(); for n in 0 1 2 3; do bricks+=("${GS_IP[$n]}:$LAB/bricks/b$((n + 1))"); done
vol_create() { glout 0 volume create $VOL replica 2 "${bricks[@]}" force > "$LAB/volume-create.log" 2>&1 ||
  { gl 0 volume info $VOL; }; }
until_ok 30 vol_create || die "volume create: $(cat "$LAB/volume-create.log")"
gl 0 volume set $VOL network.ping-timeout 5 || die "volume set"
gl 0 volume start $VOL || die "volume start"
for i in 0 1 2; do
  m=$LAB/mnt/${NODES[$i]}; mkdir -p "$m"
  until_ok 30 nsenter --net=/run/netns/$P-${NODES[$i]} mount -t glusterfs \
    -o log-file=$LAB/${NODES[$i]}-glusterfs.log,backup-volfile-servers=${GS_IP[1]}:${GS_IP[2]} \
    ${GS_IP[0]}:/$VOL "$m" || die "mount on ${NODES[$i]}"
done
mkdir -p "$LAB/mnt/n1/archive" "$LAB/mnt/n1/outgoing" || die "mkdir on the volume"
log "gluster: 2 x 2 volume $VOL on ${GS[*]}, FUSE-mounted on ${NODES[*]}"
glout 0 volume info $VOL | grep -E '^(Type|Number of Bricks):' | sed 's/^/[lab]   /'

# -------------------------------------------------------------------- nodes ----
ssh-keygen -q -t ed25519 -N '' -C ilab-host -f "$LAB/ssh_host_ed25519_key" || die "host key"
ssh-keygen -q -t ed25519 -N '' -C ilab-sender -f "$LAB/client_key" || die "client key"
cp "$LAB/client_key.pub" "$LAB/authorized_keys"
echo "$VIP $(cut -d' ' -f1,2 "$LAB/ssh_host_ed25519_key.pub")" > "$LAB/known_hosts"
node_conf() {   # node_conf I HEALTH_LISTEN EXTRA_HEALTH_LINE
  local n=${NODES[$1]}
  cat <<EOF
node_id = "node$(( $1 + 1 ))"
[ssh]
listen = "0.0.0.0:22"
host_key = "$LAB/ssh_host_ed25519_key"
authorized_keys = "$LAB/authorized_keys"
drain_time = "5s"
inactivity_timeout = "1m"
[spool]
dir = "$LAB/$n/spool"
min_free = "64MiB"
[archive]
dir = "$LAB/mnt/$n/archive"
[forward]
dir = "$LAB/mnt/$n/outgoing"
[retry]
initial_backoff = "500ms"
max_backoff = "5s"
max_attempts = 1000
[pipeline]
rescan_interval = "2s"
[health]
listen = "$2"
$3
EOF
}
# /healthz with a maintenance file: the node's own ([health] maintenance_file).
HEALTHZ=native
for i in 0 1 2; do
  n=${NODES[$i]}; mkdir -p "$LAB/$n"
  node_conf $i "0.0.0.0:9122" "maintenance_file = \"$LAB/$n/maintenance\"" > "$LAB/$n/ingestd.toml"
  "$BIN" check-config --config "$LAB/$n/ingestd.toml" > "$LAB/$n/check-config.log" 2>&1 ||
    die "check-config $n: $(cat "$LAB/$n/check-config.log")"
  if [ $MODE = ipvs ]; then   # DR real server: VIP on lo, arp sysctls (not persisted in a lab)
    nsx $n "$REPO/keepalived/prepare-node.sh" $VIP --iface eth0 --no-persist >/dev/null || die "prepare-node $n"
  fi
  nsx $n "$BIN" run --config "$LAB/$n/ingestd.toml" > "$LAB/$n/ingestd.log" 2>&1 &
done
for i in 0 1 2; do
  until_ok 20 nsx client "$REPO/keepalived/check-ssh-banner" ${NODE_IP[$i]} 22 || die "${NODES[$i]} has no SSH banner"
  until_ok 20 sh -c "[ \"\$(ip netns exec $P-client curl --noproxy '*' -s -o /dev/null -w '%{http_code}' http://${NODE_IP[$i]}:9122/healthz)\" = 200 ]" ||
    die "${NODES[$i]} /healthz is not 200"
done
log "nodes: ingestd on ${NODES[*]} (same host key), SSH banner and /healthz 200 on each"

# ---------------------------------------------------------------- directors ----
ka_args=()
[ $MODE = haproxy ] && ka_args=(--no-ipvs)
"$REPO/tests/lab/adapt-keepalived.sh" --vip $VIP --iface eth0 "${ka_args[@]}" \
  --node ${NODE_IP[0]} --node ${NODE_IP[1]} --node ${NODE_IP[2]} keepalived/keepalived.conf > "$LAB/keepalived.conf" ||
  die "adapt-keepalived"
bash keepalived/check-config.sh --scratch-netns "$LAB/keepalived.conf" > "$LAB/keepalived-check.log" 2>&1 ||
  die "keepalived -t of the adapted config: $(cat "$LAB/keepalived-check.log")"
if [ $MODE = haproxy ]; then
  for i in 0 1; do
    d=${LVS[$i]}; mkdir -p "$LAB/$d"
    "$REPO/tests/lab/adapt-haproxy.sh" --vip $VIP --node ${NODE_IP[0]} --node ${NODE_IP[1]} --node ${NODE_IP[2]} \
      --stats-socket "$LAB/$d/haproxy.sock" keepalived/haproxy.cfg > "$LAB/$d/haproxy.cfg" || die "adapt-haproxy"
    haproxy -c -q -f "$LAB/$d/haproxy.cfg" || die "haproxy -c $d"
    nsx $d sysctl -q -w net.ipv4.ip_nonlocal_bind=1 || die "ip_nonlocal_bind"
    nsx $d haproxy -db -f "$LAB/$d/haproxy.cfg" > "$LAB/$d/haproxy.log" 2>&1 &
  done
fi
for i in 0 1; do
  d=${LVS[$i]}; mkdir -p "$LAB/$d"
  kflags=(-n -l -D -f "$LAB/keepalived.conf" -i $d -p "$LAB/$d/keepalived.pid" -r "$LAB/$d/vrrp.pid" -c "$LAB/$d/checkers.pid")
  [ $MODE = haproxy ] && kflags=(-P "${kflags[@]}")
  nsx $d keepalived "${kflags[@]}" > "$LAB/$d/keepalived.log" 2>&1 &
done
has_vip() { ip -n "$P-$1" -4 addr show dev eth0 2>/dev/null | grep -q " $VIP/"; }
master() { local d; for d in "${LVS[@]}"; do has_vip $d && echo $d; done; }

# pool_state DIRECTOR NODE_INDEX -> UP / DOWN as that director's table sees it
pool_state() {
  local d=$1 i=$2
  if [ $MODE = haproxy ]; then
    python3 - "$LAB/$d/haproxy.sock" "node$((i + 1))" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(2)
try:
    s.connect(sys.argv[1]); s.sendall(b"show stat\n"); data = b""
    while chunk := s.recv(65536): data += chunk
except OSError:
    print("UNKNOWN"); sys.exit()
for ln in data.decode().splitlines():
    f = ln.split(",")
    if len(f) > 17 and f[0] == "ingest" and f[1] == sys.argv[2]:
        print("UP" if f[17].startswith("UP") else "DOWN"); break
else:
    print("UNKNOWN")
PY
  else
    # keepalived with inhibit_on_failure: weight 0 = down
    nsx $d ipvsadm -L -n -t $VIP:22 2>/dev/null |
      awk -v rs="${NODE_IP[$i]}:22" '$1=="->" && $2==rs {print ($4 > 0 ? "UP" : "DOWN"); f=1} END {if (!f) print "UNKNOWN"}'
  fi
}
all_state() {  # all_state STATE NODE_INDEX [DIRECTORS...]: every given director sees it so
  local want=$1 i=$2 d; shift 2
  for d in "$@"; do [ "$(pool_state $d $i)" = "$want" ] || return 1; done
}
pool_up() { local i; for i in 0 1 2; do all_state UP $i "$@" || return 1; done; }
vip_held() { [ -n "$(master)" ]; }
until_ok 30 vip_held || die "no director took the VIP"
M=$(master); [ "$(echo "$M" | wc -w)" = 1 ] || die "both directors hold the VIP: $M"
if [ $MODE = haproxy ]; then until_ok 30 pool_up lvs1 lvs2 || die "pool not UP on both directors"
else until_ok 30 pool_up $M || die "pool not UP on $M"; fi
log "directors: VRRP master $M ($VIP), all nodes UP in the table"
nsx client ip neigh flush dev eth0 2>/dev/null

# ------------------------------------------------------------------ streams ----
results() { [ -f "$LAB/results-$1.txt" ] && wc -l < "$LAB/results-$1.txt" || echo 0; }
start_stream() {  # start_stream PHASE MAX WORKERS
  rm -f "$LAB/stop-$1"
  nsx client env SIZE_KIB_MAX="${SIZE_KIB_MAX:-64}" SCP_LIMIT_KBIT="${SCP_LIMIT_KBIT:-}" PAUSE="${PAUSE:-}" \
    "$REPO/tests/lab/sender.sh" "$LAB" "$1" "$2" "$3" &
  SENDER_PID=$!
}
stop_stream() { touch "$LAB/stop-$1"; wait "$SENDER_PID"; SENDER_PID=""; }
at_least() { [ "$(results "$1")" -ge "$2" ]; }
# results completed that started after epoch T
started_after() { awk -v t="$2" '$8 > t {n++} END {print n + 0}' "$LAB/results-$1.txt" 2>/dev/null; }
after_ge() { [ "$(started_after "$1" "$2")" -ge "$3" ]; }
archived_count() { find "$LAB/mnt/n1/archive" -name '*.record.json' 2>/dev/null | wc -l; }

# A: distribution ------------------------------------------------------------
log "A: 150 uploads through the VIP"
start_stream a 150 3
until_ok 240 at_least a 150 || { stop_stream a; die "A: 150 uploads did not finish in 240 s"; }
wait "$SENDER_PID"; SENDER_PID=""
log "A: done ($(grep -c ' ok ' "$LAB/results-a.txt") ok)"

# B: maintenance ---------------------------------------------------------------
MI=2; MN=${NODES[$MI]}
log "B: stream; $MN put in maintenance (keepalived/node-maintenance.sh on) during it"
ev maint_node node$((MI + 1))
PAUSE=0.1 start_stream b 5000 3
until_ok 60 at_least b 6 || die "B: stream did not start"
tm=$(date +%s.%N)
nsx $MN "$REPO/keepalived/node-maintenance.sh" on --file "$LAB/$MN/maintenance" \
  --health http://127.0.0.1:9122/healthz --wait 60 > "$LAB/$MN/maintenance.log" 2>&1 &
MPID=$!
if [ $MODE = haproxy ]; then DIRS=(lvs1 lvs2); else DIRS=($M); fi
until_ok 30 all_state DOWN $MI "${DIRS[@]}" || { stop_stream b; die "B: $MN not marked down by ${DIRS[*]}"; }
td=$(date +%s.%N)
ev maint_down_at "$td"; ev maint_down_after "$(awk -v a="$tm" -v b="$td" 'BEGIN {printf "%.1f", b - a}')"
log "B: $MN down on ${DIRS[*]} after $(awk -v a="$tm" -v b="$td" 'BEGIN {printf "%.1f", b - a}')s"
until_ok 120 after_ge b "$td" 24 || { stop_stream b; die "B: stream stalled after maintenance"; }
stop_stream b
if wait $MPID; then ev maint_drain "drained"; else ev maint_drain "FAILED"; FAILED=1; fi
tail -n 1 "$LAB/$MN/maintenance.log" | sed 's/^/[lab]   /'
nsx $MN "$REPO/keepalived/node-maintenance.sh" off --file "$LAB/$MN/maintenance" \
  --health http://127.0.0.1:9122/healthz >> "$LAB/$MN/maintenance.log" 2>&1 || die "B: maintenance off"
until_ok 30 all_state UP $MI "${DIRS[@]}" || die "B: $MN not back UP"
log "B: $MN back in rotation"

# C: director failover ---------------------------------------------------------
M=$(master); OTHER=$([ "$M" = lvs1 ] && echo lvs2 || echo lvs1)
log "C: stream; master director $M killed during it (link down + SIGKILL of everything on it)"
# Bigger files at 8 Mbit/s each: transfers are cut mid-data by the kill.
SIZE_KIB_MAX=1024 SCP_LIMIT_KBIT=8192 start_stream c 5000 3
until_ok 60 at_least c 6 || die "C: stream did not start"
# Kill while uploads are in flight: at least 2 scp running in the client namespace.
inflight() { [ "$(ps -o cmd= -p "$(nspids client | tr '\n' ',' | sed 's/,$//')" 2>/dev/null | grep -c '^scp ')" -ge 2 ]; }
until_ok 10 inflight || log "C: (no upload in flight seen)"
tk=$(date +%s.%N)
ev failover_at "$tk"
ip -n $P-$M link set eth0 down      # the machine is gone: no goodbye on the wire
killns $M
until_ok 20 has_vip $OTHER || { stop_stream c; die "C: VIP did not move to $OTHER"; }
tf=$(date +%s.%N)
ev failover_from $M; ev failover_to $OTHER
ev failover_secs "$(awk -v a="$tk" -v b="$tf" 'BEGIN {printf "%.1f", b - a}')"
log "C: VIP on $OTHER after $(awk -v a="$tk" -v b="$tf" 'BEGIN {printf "%.1f", b - a}')s"
until_ok 120 after_ge c "$tf" 24 || { stop_stream c; die "C: stream stalled after failover"; }
stop_stream c

# D: gluster server killed -------------------------------------------------------
KG=0
log "D: stream; Gluster server ${GS[$KG]} killed during it"
PAUSE=0.1 start_stream d 5000 3
until_ok 60 at_least d 6 || die "D: stream did not start"
before=$(archived_count)
tg=$(date +%s.%N)
killns ${GS[$KG]}
ev gluster_killed ${GS[$KG]}
until_ok 120 after_ge d "$tg" 24 || { stop_stream d; die "D: stream stalled after the Gluster kill"; }
stop_stream d
log "D: stream done"

# -------------------------------------------------------------------- drain ----
spools_empty() {
  local n s
  for n in "${NODES[@]}"; do for s in ready archived processed; do
    [ -z "$(ls -A "$LAB/$n/spool/$s" 2>/dev/null)" ] || return 1
  done; done
}
until_ok 120 spools_empty || log "spools not empty after 120 s (verify will report)"
ev archived_after_kill $(( $(archived_count) - before ))
log "pipeline drained; verifying"
python3 "$REPO/tests/lab/verify.py" "$LAB" || FAILED=1
for n in "${NODES[@]}"; do
  if grep -qiE 'panicked|ERROR' "$LAB/$n/ingestd.log"; then
    echo "LAB: note: $n logged errors:"; grep -iE 'panicked|ERROR' "$LAB/$n/ingestd.log" | head -5
  fi
done
echo "LAB: $( [ $FAILED = 0 ] && echo PASS || echo FAIL ) pool lab ($MODE, /healthz $HEALTHZ) in $(( $(date +%s) - T0 ))s"
exit $FAILED
