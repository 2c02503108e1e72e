#!/bin/bash
# /init of the tests/ipvs-vm guest (run.sh copies it into the initramfs). Everything
# happens in network namespaces of this guest on one bridge (no NIC: -nic none):
#   client 10.77.0.100   lvs1 10.77.0.2 (keepalived, IPVS; VIP 10.77.0.10 on eth0)
#   n1..n3 10.77.0.11-13 (ingestd; VIP on lo + ARP sysctls: DR real servers)
# Lines for the host: `IPVSVM: PASS|FAIL|INFO ...` (the summary), `IPVSVM: RESULT
# PASS|FAIL` (last), `GUEST[uptime] ...` (progress). Every wait is bounded.
export PATH=/bin HOME=/root NO_COLOR=1
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs run /run; mount -t tmpfs tmp /tmp; mkdir -p /run/netns /data
ln -sf /proc/self/fd /dev/fd   # bash process substitution (ipvs.sh drain)
exec </dev/console >/dev/console 2>&1

NET=10.77.0; VIP=$NET.10; DIR_IP=$NET.2; CLIENT_IP=$NET.100
RIP=([1]=$NET.11 [2]=$NET.12 [3]=$NET.13)
HEALTHZ=$(cat /etc/ingestd/healthz-mode)
SLOW_KIB=${SLOW_KIB:-1536}; SLOW_KBIT=${SLOW_KBIT:-400}   # ~30 s in flight
FAILED=0
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "GUEST[$(up)] $*"; }
pass() { echo "IPVSVM: PASS $*"; }
info() { echo "IPVSVM: INFO $*"; }
fail() { echo "IPVSVM: FAIL $*"; FAILED=1; dump; }
dump() {
  echo "GUEST   --- ipvsadm -L -n (lvs1)"; ipvsadm_ -L -n 2>&1 | sed 's/^/GUEST   /'
  echo "GUEST   --- keepalived log (last 15)"; tail -n 15 /run/ka.log 2>/dev/null | sed 's/^/GUEST   /'
  echo "GUEST   --- scp errors (last 5)"; tail -n 5 /run/scp.err 2>/dev/null | sed 's/^/GUEST   /'
}
finish() {
  info "scp retries: $RETRIES; keepalived check flaps (Disabling service, incl. the intended ones): $(grep -c 'Disabling service' /run/ka.log 2>/dev/null)"
  ip netns exec lvs1 ipvsadm -L -n --stats 2>/dev/null | sed 's/^/GUEST   /'
  if [ "$FAILED" = 0 ]; then echo "IPVSVM: RESULT PASS"; else echo "IPVSVM: RESULT FAIL"; fi
  sync; poweroff -f
}
fatal() { fail "$*"; finish; }
# until_ok SECS CMD...: CMD every 0.5 s until it succeeds; 1 after SECS seconds
until_ok() {
  local end=$(( ${1%.*} + ${SECONDS} )); shift
  until "$@"; do [ "$SECONDS" -ge "$end" ] && return 1; sleep 0.5; done
}
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
ipvsadm_() { nsx lvs1 ipvsadm "$@"; }
# weight of node N in the table ("" when not in it)
weight() { ipvsadm_ -L -n -t $VIP:22 2>/dev/null | awk -v rs="${RIP[$1]}:22" '$1=="->" && $2==rs {print $4}'; }
method() { ipvsadm_ -L -n -t $VIP:22 2>/dev/null | awk -v rs="${RIP[$1]}:22" '$1=="->" && $2==rs {print $3}'; }
weight_is() { [ "$(weight "$1")" = "$2" ]; }
all_weight() { local n; for n in 1 2 3; do weight_is $n "$1" || return 1; done; }

say "init: kernel $(uname -r), /healthz $HEALTHZ"
for m in ip_vs ip_vs_rr veth bridge; do modprobe $m || fatal "modprobe $m"; done
[ -e /proc/net/ip_vs ] || fatal "no /proc/net/ip_vs after modprobe ip_vs"
info "kernel $(uname -r): $(head -1 /proc/net/ip_vs) (real IPVS; modules: $(lsmod | awk 'NR>1{print $1}' | grep -E '^(ip_vs|nf_conntrack|bridge|veth)' | tr '\n' ' '))"

# ------------------------------------------------------------------ network: one bridge, 5 namespaces
ip link set lo up
ip link add br0 type bridge && ip link set br0 up || fatal "bridge"
addhost() {   # addhost NAME IP
  ip netns add "$1" && ip link add "v-$1" type veth peer name eth0 netns "$1" &&
    ip link set "v-$1" master br0 up && ip -n "$1" addr add "$2/24" dev eth0 &&
    ip -n "$1" link set eth0 up && ip -n "$1" link set lo up
}
addhost client $CLIENT_IP || fatal "client namespace"
addhost lvs1 $DIR_IP || fatal "director namespace"
for n in 1 2 3; do addhost n$n ${RIP[$n]} || fatal "node n$n namespace"; done
say "network: br0 + client, lvs1, n1..n3"

# ------------------------------------------------------------------ nodes
start_node() {   # start_node N
  local n=$1
  nsx n$n ingestd run --config /etc/ingestd/n$n.toml >> /run/n$n.log 2>&1 &
}
for n in 1 2 3; do
  mkdir -p /data/n$n && mount -t tmpfs -o size=160m n$n /data/n$n || fatal "tmpfs n$n"
  # DR real server: the shipped node preparation (VIP on lo /32, arp_ignore/arp_announce)
  nsx n$n bash /etc/keepalived/prepare-node.sh $VIP --iface eth0 --no-persist > /run/prep-n$n.log 2>&1 ||
    fatal "prepare-node.sh on n$n: $(cat /run/prep-n$n.log)"
  start_node $n
done
prep_ok=1
for n in 1 2 3; do
  a=$(nsx n$n cat /proc/sys/net/ipv4/conf/all/arp_ignore /proc/sys/net/ipv4/conf/all/arp_announce \
      /proc/sys/net/ipv4/conf/eth0/arp_ignore /proc/sys/net/ipv4/conf/eth0/arp_announce | tr '\n' ' ')
  [ "$a" = "1 2 1 2 " ] && nsx n$n ip -4 addr show dev lo | grep -q " $VIP/32 " || prep_ok=0
done
[ $prep_ok = 1 ] && pass "prepare-node.sh on n1..n3: VIP $VIP/32 on lo, arp_ignore=1 arp_announce=2 (all, eth0)" ||
  fail "prepare-node.sh did not leave VIP on lo + arp sysctls"
node_ready() {
  nsx lvs1 /etc/keepalived/check-ssh-banner ${RIP[$1]} 22 &&
    nsx lvs1 timeout 5 wget -q -O /dev/null http://${RIP[$1]}:9122/healthz 2>/dev/null
}
for n in 1 2 3; do
  until_ok 120 node_ready $n || {
    tail -5 /run/n$n.log | sed 's/^/GUEST   /'
    nsx lvs1 /etc/keepalived/check-ssh-banner ${RIP[$n]} 22; b=$?
    h=$(nsx lvs1 timeout 5 wget -q -O - http://${RIP[$n]}:9122/healthz 2>&1)
    fatal "n$n: no SSH banner or /healthz 200 within 120 s (banner check exit $b, /healthz: $h)"; }
done
say "nodes: ingestd up on n1..n3 (SSH banner and /healthz 200 seen from lvs1)"
# How fast is this guest? (TCG on a loaded host: keepalived's misc_timeout is 5 s)
t0=$(up); nsx lvs1 /etc/keepalived/check-ssh-banner ${RIP[1]} 22; t1=$(up)
nsx lvs1 timeout 5 wget -q -O /dev/null http://${RIP[1]}:9122/healthz; t2=$(up)
info "guest speed: one check-ssh-banner run $(awk -v a=$t0 -v b=$t1 'BEGIN{printf "%.2f", b-a}')s, one /healthz GET $(awk -v a=$t1 -v b=$t2 'BEGIN{printf "%.2f", b-a}')s"

# ------------------------------------------------------------------ director: keepalived, shipped config
mkdir -p /run/lvs1
T=$SECONDS
nsx lvs1 keepalived -n -l -D -f /etc/keepalived/keepalived.conf -i lvs1 -p /run/lvs1/keepalived.pid \
  -r /run/lvs1/vrrp.pid -c /run/lvs1/checkers.pid > /run/ka.log 2>&1 &
has_vip() { nsx lvs1 ip -4 addr show dev eth0 | grep -q " $VIP/32 "; }
until_ok 60 has_vip || fatal "keepalived (VRRP) did not put the VIP on lvs1 eth0 within 60 s"
until_ok 90 all_weight 1 || fatal "keepalived did not bring n1..n3 up (weight 1) within 90 s"
pass "keepalived (shipped config via adapt-keepalived.sh, -i lvs1): VIP on lvs1 eth0, HTTP_GET /healthz + MISC_CHECK check-ssh-banner brought n1..n3 to weight 1 in $(( SECONDS - T ))s"
ipvsadm_ -L -n | sed 's/^/GUEST   /'
[ "$(method 1)$(method 2)$(method 3)" = RouteRouteRoute ] && pass "forwarding method DR (Route) for every node" ||
  fail "forwarding method is not Route: $(method 1) $(method 2) $(method 3)"

# ------------------------------------------------------------------ uploads
mkdir -p /tmp/src
SCPO=(-q -i /root/.ssh/id_ed25519 -o BatchMode=yes -o UserKnownHostsFile=/etc/ssh/known_hosts_vip
      -o StrictHostKeyChecking=yes -o ConnectTimeout=30 -o LogLevel=ERROR)
SEQ=0; RETRIES=0
mkfile() { head -c $(( $2 * 1024 )) /dev/urandom > /tmp/src/$1; }
# scp_to NAME [SCP OPTIONS]: one upload through the VIP from the client namespace
scp_to() { local f=$1; shift; nsx client timeout -k 5 150 scp "$@" "${SCPO[@]}" /tmp/src/$f up@$VIP: 2>>/run/scp.err; }
# scp_retry NAME [SCP OPTIONS]: up to 3 attempts 3 s apart, as senders retry (a
# check that timed out under TCG can leave no node at weight 1 for a delay_loop)
scp_retry() {
  local a
  for a in 1 2 3; do
    scp_to "$@" && return 0
    RETRIES=$((RETRIES + 1)); echo "$(date +%T) $1 attempt $a failed" >> /run/scp.err; sleep 3
  done
  return 1
}
# where NAME: the node whose spool/archive holds NAME's record (empty: none)
where() { local n; for n in 1 2 3; do grep -rqF "$1" /data/n$n 2>/dev/null && echo n$n; done | tr '\n' ' ' | sed 's/ $//'; }
# upload N TAG: N uploads one after the other (alternately legacy SCP and SFTP; a
# failed scp is retried, see scp_retry: RETRIES counts the retries);
# sets OK (succeeded), CNT[1..3] (landed per node), LANDED (list)
upload() {
  local i name m w; OK=0; CNT=([1]=0 [2]=0 [3]=0); LANDED=""
  for ((i = 0; i < $1; i++)); do
    SEQ=$((SEQ + 1)); name=$(printf '%s-%03d.bin' "$2" $SEQ); mkfile $name 32
    if (( SEQ % 2 )); then m=(-O); else m=(); fi
    if scp_retry $name "${m[@]}"; then
      OK=$((OK + 1)); w=$(where $name); LANDED+=" ${w:-?}"
      case "$w" in n1|n2|n3) CNT[${w#n}]=$(( CNT[${w#n}] + 1 ));; esac
    else
      LANDED+=" FAILED"
    fi
  done
}
counts() { echo "n1=${CNT[1]} n2=${CNT[2]} n3=${CNT[3]}"; }
# slow_start TAG: one slow legacy-SCP upload in the background (SLOW_PID, SLOW_NAME);
# prints the node IPVS scheduled it to (from the connection table)
slow_start() {
  SEQ=$((SEQ + 1)); SLOW_NAME=$(printf '%s-%03d.bin' "$1" $SEQ); mkfile $SLOW_NAME $SLOW_KIB
  rm -f /run/slow.rc
  ( scp_retry $SLOW_NAME -O -l $SLOW_KBIT; echo $? > /run/slow.rc ) &
  SLOW_PID=$!
}
slow_running() { [ ! -e /run/slow.rc ]; }
slow_node() {   # the RIP of the ESTABLISHED connection -> node number
  local rip n
  rip=$(ipvsadm_ -L -n -c 2>/dev/null | awk -v v="$VIP:22" '$3=="ESTABLISHED" && $5==v {sub(/:22$/,"",$6); print $6; exit}')
  for n in 1 2 3; do [ "${RIP[$n]}" = "$rip" ] && echo $n; done
}
slow_seen() { [ -n "$(slow_node)" ]; }
slow_wait() { until_ok "$1" test -e /run/slow.rc && [ "$(cat /run/slow.rc)" = 0 ]; }

# A: round robin -------------------------------------------------------------------
T=$SECONDS
NA=${NA:-6}
flaps0=$(grep -c 'Disabling service' /run/ka.log)
upload $NA rr
flaps=$(( $(grep -c 'Disabling service' /run/ka.log) - flaps0 ))
say "A: landed:$LANDED"
min=$NA; max=0; for n in 1 2 3; do (( CNT[n] < min )) && min=${CNT[n]}; (( CNT[n] > max )) && max=${CNT[n]}; done
# Exact shares unless a check timed out meanwhile (TCG on a loaded host: a node's
# MISC_CHECK can exceed misc_timeout and flap it to weight 0 for one delay_loop).
if [ $OK = $NA ] && [ $min -ge 1 ] && { [ $(( max - min )) -le 1 ] || [ $flaps -gt 0 ]; }; then
  pass "round robin: $NA/$NA scp uploads through the VIP landed on every node: $(counts) ($(( SECONDS - T ))s$( [ $flaps -gt 0 ] && echo "; $flaps check flap(s) meanwhile"))"
else
  fail "round robin: $OK/$NA uploads ok, per node $(counts) ($flaps check flaps)"
fi
stats=$(ipvsadm_ -L -n --stats -t $VIP:22 | awk '$1=="->" {printf "%s=%s ", $2, $3}')
info "ipvsadm --stats Conns per node: $stats(DR: the director only counts inbound packets)"

# B: maintenance file ----------------------------------------------------------------
T=$SECONDS
slow_start maint
until_ok 60 slow_seen || fatal "B: the slow upload never showed up ESTABLISHED in ipvsadm -L -n -c"
X=$(slow_node)
say "B: slow upload $SLOW_NAME (${SLOW_KIB} KiB at ${SLOW_KBIT} kbit/s) in flight to n$X; maintenance file on n$X"
touch /data/n$X/maintenance
if until_ok 60 weight_is $X 0; then
  if slow_running; then
    pass "maintenance: n$X weight 0 (kept in the table, inhibit_on_failure) $(( SECONDS - T ))s after its maintenance file, upload to it still in flight"
  else
    fail "maintenance: the upload to n$X finished before the weight went to 0 (make SLOW_KBIT lower)"
  fi
else
  fail "maintenance: n$X weight not 0 within 60 s of its maintenance file"
fi
upload 3 maint
say "B: landed:$LANDED"
[ $OK = 3 ] && [ "${CNT[$X]}" = 0 ] &&
  pass "maintenance: 3/3 uploads during it, none on n$X: $(counts)" ||
  fail "maintenance: $OK/3 uploads ok, on n$X: ${CNT[$X]} ($(counts))"
if slow_wait 180 && [ "$(where $SLOW_NAME)" = n$X ]; then
  pass "maintenance: the upload in flight to n$X completed (scp exit 0, landed on n$X) $(( SECONDS - T ))s after it started"
else
  fail "maintenance: the upload in flight to n$X: scp exit $(cat /run/slow.rc 2>/dev/null || echo timeout), landed on '$(where $SLOW_NAME)'"
fi
rm -f /data/n$X/maintenance; T=$SECONDS
until_ok 60 weight_is $X 1 && pass "maintenance off: n$X back to weight 1 in $(( SECONDS - T ))s" ||
  fail "maintenance off: n$X not back to weight 1 within 60 s"

# C: a node killed -------------------------------------------------------------------
Y=$(( X % 3 + 1 )); T=$SECONDS
say "C: killing everything in n$Y (ingestd)"
kill -9 $(ip netns pids n$Y) 2>/dev/null
if until_ok 60 weight_is $Y 0; then
  pass "node killed: keepalived set n$Y to weight 0 in $(( SECONDS - T ))s"
else
  fail "node killed: n$Y not weight 0 within 60 s (weight '$(weight $Y)')"
fi
upload 3 kill
say "C: landed:$LANDED"
[ $OK = 3 ] && [ "${CNT[$Y]}" = 0 ] && pass "node killed: 3/3 uploads succeeded on the others: $(counts)" ||
  fail "node killed: $OK/3 uploads ok, on n$Y: ${CNT[$Y]} ($(counts))"

# D: keepalived/ipvs.sh on the real table ---------------------------------------------------
# ipvs.sh is for a director WITHOUT keepalived: stop keepalived (it removes its
# service and the VIP), put the VIP on the director as a static address, then drive
# the table with the wrapper only. Short IPVS FIN timeout so a drain ends in seconds
# (the default keeps InActConn for 2 min after each transfer).
KA=$(cat /run/lvs1/keepalived.pid)
kill -TERM $KA; until_ok 30 test ! -e /proc/$KA || fail "keepalived did not stop within 30 s"
no_service() { [ -z "$(ipvsadm_ -L -n | awk '$1=="TCP"')" ]; }
until_ok 10 no_service || fail "keepalived left its service in the table"
nsx lvs1 ip addr replace $VIP/32 dev eth0
ipvsadm_ --set 900 3 300
# (connections of keepalived's service that have not expired are re-bound to the
# same nodes when ipvs.sh adds them again: they keep their old timeouts, up to 2 min
# of InActConn, hence the drain's generous limit below)
A=$X; B=$(( Y % 3 + 1 ))      # the two live nodes
ipvs() { nsx lvs1 env VIP=$VIP bash /etc/keepalived/ipvs.sh "$@"; }
if ipvs add ${RIP[$A]} > /run/ipvs.log 2>&1 && ipvs add ${RIP[$B]} 2 >> /run/ipvs.log 2>&1 &&
   weight_is $A 1 && weight_is $B 2 && ipvs add ${RIP[$B]} >> /run/ipvs.log 2>&1 && weight_is $B 1 &&
   [ "$(method $A)$(method $B)" = RouteRoute ]; then
  pass "ipvs.sh add: service created, n$A and n$B added (DR, weight 1), re-add with weight 2 then 1 edits in place"
else
  fail "ipvs.sh add: $(tail -3 /run/ipvs.log | tr '\n' ' ')"
fi
out=$(ipvs list 2>&1)
if echo "$out" | grep -q "${RIP[$A]}:22" && echo "$out" | grep -q "${RIP[$B]}:22" && echo "$out" | grep -q Conns; then
  pass "ipvs.sh list: table and --stats"
else
  fail "ipvs.sh list: $out"
fi
echo "$out" | sed 's/^/GUEST   /'
upload 2 wrap
[ $OK = 2 ] && [ "${CNT[$A]}" = 1 ] && [ "${CNT[$B]}" = 1 ] && pass "ipvs.sh table: 2 uploads, one on each of n$A and n$B" ||
  fail "ipvs.sh table: $OK/2 uploads ok: $(counts)"
T=$SECONDS
slow_start drain
until_ok 60 slow_seen || fatal "D: the slow upload never showed up ESTABLISHED"
Z=$(slow_node); O=$([ $Z = $A ] && echo $B || echo $A)
if ipvs remove ${RIP[$Z]} > /run/ipvs-remove.log 2>&1; then
  fail "ipvs.sh remove n$Z succeeded while an upload was in flight to it"
else
  pass "ipvs.sh remove refuses n$Z while it has a connection: $(tail -1 /run/ipvs-remove.log)"
fi
( ipvs drain ${RIP[$Z]} 240 > /run/drain.log 2>&1; echo $? > /run/drain.rc ) &
until_ok 15 weight_is $Z 0 || fail "ipvs.sh drain: n$Z weight not 0"
sleep 2
if [ ! -e /run/drain.rc ] && slow_running; then
  pass "ipvs.sh drain: n$Z weight 0 and the drain waits while the upload to it is in flight"
else
  fail "ipvs.sh drain returned before the upload to n$Z ended: $(cat /run/drain.log)"
fi
upload 1 drain
[ $OK = 1 ] && [ "${CNT[$O]}" = 1 ] && pass "ipvs.sh drain: the next upload went to n$O" ||
  fail "ipvs.sh drain: next upload $OK/1 ok, landed:$LANDED (expected n$O)"
slow_wait 180 && [ "$(where $SLOW_NAME)" = n$Z ] && td=$SECONDS ||
  fail "ipvs.sh drain: the upload in flight to n$Z: scp exit $(cat /run/slow.rc 2>/dev/null || echo timeout)"
if until_ok 240 test -e /run/drain.rc && [ "$(cat /run/drain.rc)" = 0 ]; then
  pass "ipvs.sh drain: the in-flight upload completed on n$Z, then ActiveConn/InActConn reached 0 and drain exited 0 ($(( SECONDS - ${td:-0} ))s later; $(( SECONDS - T ))s in all)"
else
  fail "ipvs.sh drain: rc $(cat /run/drain.rc 2>/dev/null || echo timeout): $(tail -3 /run/drain.log | tr '\n' ' ')"
fi
sed 's/^/GUEST   /' /run/drain.log
if ipvs remove ${RIP[$Z]} > /run/ipvs-remove.log 2>&1 && [ -z "$(weight $Z)" ] && weight_is $O 1; then
  pass "ipvs.sh remove: n$Z deleted from the table after the drain (n$O stays)"
else
  fail "ipvs.sh remove: $(cat /run/ipvs-remove.log)"
fi
upload 1 after
[ $OK = 1 ] && [ "${CNT[$O]}" = 1 ] && pass "after remove: upload through the VIP on n$O" || fail "after remove: $OK/1 ok:$LANDED"

for n in 1 2 3; do
  grep -q 'panicked' /run/n$n.log 2>/dev/null && fail "n$n: ingestd panicked: $(grep -m1 panicked /run/n$n.log)"
done
finish
