#!/usr/bin/env bash
# tests/powercut/run.sh: the power-cut test. See tests/powercut/README.md.
#
# Each round boots a qemu (TCG) guest on a fresh ext4 disk image, starts ingestd on it
# and uploads random files with OpenSSH's scp over the guest's loopback; the host
# SIGKILLs qemu at a random moment (= power cut: what the guest had not flushed is gone),
# fscks and checks the cut disk, then boots the guest again on that disk: the node must
# start unaided, drain its pipeline and deliver every acknowledged file exactly once,
# with its content and BLAKE3. Control rounds (ingestd with an LD_PRELOAD shim that
# makes fsync a no-op; a no-fsync shell loop) MUST lose acknowledged files: a harness
# that cannot see loss fails.
#
# Knobs (environment; defaults = the CI set):
#   SINGLE_ROUNDS [3]   rounds of single-file sessions (scp of one file each)
#   MULTI_ROUNDS  [2]   rounds of multi-file sessions (MULTI_BATCH files per scp: group commit)
#   PIPELINE_EVERY [2]  every PIPELINE_EVERY-th round of each kind is cut while the pipeline
#                       archives/forwards (timed on the daemon's log), the others after
#                       a random acknowledgement plus a random delay
#   CONTROLS ["nofsync shell"]  control kinds; CONTROL_ROUNDS [1] rounds of each
#   SINGLE_N [6] MULTI_N [32] MULTI_BATCH [16] CONTROL_N [6]   files per round / per session
#   SIZE_MIN [4096] SIZE_MAX [262144]   file sizes (bytes, random content)
#   MAX_DELAY_MS [1500] extra delay after the chosen acknowledgement
#   PLAN        explicit round list instead of the counts above, e.g.
#               "single:ack multi:pipeline nofsync:ack shell:ack"
#   INGESTD [target/release/ingestd]   POWERCUT_KERNEL_CACHE [/var/cache/ingestd-powercut]
#               (where scripts/install-deps.sh downloads the kernel package)
#   BOOT_TMO [240] seconds allowed for a power-cut boot before the cut
#   RECOVER_TMO [300] seconds allowed for a recovery boot
#   MEM [768] guest MiB   KEEP [0] 1 = keep the work dir (disk images, logs)
# Exit: 0 pass; 1 the node lost/tore/duplicated acknowledged data, could not restart
# unaided on a cut disk, or a round could not be run; 2 a control lost nothing (the
# harness is not proven to see loss); 3 setup error (missing tool or kernel).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SINGLE_ROUNDS=${SINGLE_ROUNDS:-3}; MULTI_ROUNDS=${MULTI_ROUNDS:-2}; PIPELINE_EVERY=${PIPELINE_EVERY:-2}
CONTROLS=${CONTROLS-"nofsync shell"}; CONTROL_ROUNDS=${CONTROL_ROUNDS:-1}
SINGLE_N=${SINGLE_N:-6}; MULTI_N=${MULTI_N:-32}; MULTI_BATCH=${MULTI_BATCH:-16}; CONTROL_N=${CONTROL_N:-6}
SIZE_MIN=${SIZE_MIN:-4096}; SIZE_MAX=${SIZE_MAX:-262144}; MAX_DELAY_MS=${MAX_DELAY_MS:-1500}
INGESTD=${INGESTD:-$ROOT/target/release/ingestd}
KERNEL_CACHE=${POWERCUT_KERNEL_CACHE:-/var/cache/ingestd-powercut}
BOOT_TMO=${BOOT_TMO:-240}; RECOVER_TMO=${RECOVER_TMO:-300}; MEM=${MEM:-768}; KEEP=${KEEP:-0}
CACHE=writeback   # honours guest flushes; never "unsafe" (it ignores them)

T_ALL=$SECONDS
say() { echo "powercut: $*"; }
setup_fail() { echo "powercut: SETUP ERROR: $*" >&2; exit 3; }

# ------------------------------------------------------------------ work dir and teardown
W=$(mktemp -d "${TMPDIR:-/tmp}/ingestd-powercut.XXXXXX") || setup_fail "mktemp"
MNT=$W/mnt; mkdir -p "$MNT"
QPID=""
cleanup() {
  [ -n "$QPID" ] && kill -9 "$QPID" 2>/dev/null && wait "$QPID" 2>/dev/null
  mountpoint -q "$MNT" && umount "$MNT"
  if [ "$KEEP" = 1 ]; then say "work dir kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ host tools
[ "$(id -u)" = 0 ] || setup_fail "needs root (the cut disk image is loop-mounted to be checked)"
for t in qemu-system-x86_64 mkfs.ext4 e2fsck b3sum ssh scp ssh-keygen cc python3 apt-get \
         dpkg-deb strip gzip mountpoint; do
  command -v "$t" >/dev/null 2>&1 || setup_fail "'$t' missing (bash scripts/install-deps.sh)"
done
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] && ! ldd "$BUSYBOX" >/dev/null 2>&1 || setup_fail "$BUSYBOX is not static (busybox-static)"
[ -x "$INGESTD" ] || setup_fail "no ingestd binary at $INGESTD (cargo build --release)"
ldd "$INGESTD" >/dev/null 2>&1 || setup_fail "$INGESTD is static: the nofsync control needs LD_PRELOAD"

# ------------------------------------------------------------------ kernel (Debian cloud kernel, not installed)
KDEB=$(ls -t "$KERNEL_CACHE"/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -1)
if [ -z "$KDEB" ]; then
  PKG=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$PKG" ] || setup_fail "cannot resolve linux-image-cloud-amd64 (apt-get update?)"
  mkdir -p "$KERNEL_CACHE" && (cd "$KERNEL_CACHE" && timeout 300 apt-get download "$PKG") ||
    setup_fail "apt-get download $PKG"
  KDEB=$(ls -t "$KERNEL_CACHE"/linux-image-*-cloud-amd64_*.deb | head -1)
fi
KVER=$(basename "$KDEB"); KVER=${KVER#linux-image-}; KVER=${KVER%%_*}
mkdir -p "$W/k"
dpkg-deb --fsys-tarfile "$KDEB" | tar -x -C "$W/k" --wildcards "./boot/vmlinuz-$KVER" \
  "./lib/modules/$KVER/kernel/drivers/virtio/*" "./lib/modules/$KVER/kernel/drivers/block/virtio_blk.ko*" \
  "./lib/modules/$KVER/modules.builtin" "./lib/modules/$KVER/modules.order" || setup_fail "extracting $KDEB"
VMLINUZ=$W/k/boot/vmlinuz-$KVER

# ------------------------------------------------------------------ initramfs
R=$W/root
mkdir -p "$R"/{bin,lib/x86_64-linux-gnu,lib64,proc,sys,dev,run,tmp,data,usr,root/.ssh,etc/ingestd,lib/modules}
ln -s bin "$R/sbin"; ln -s ../bin "$R/usr/bin"; ln -s ../bin "$R/usr/sbin"; ln -s ../lib "$R/usr/lib"
ln -s run "$R/var"
cp "$BUSYBOX" "$R/bin/busybox"
strip -o "$R/bin/ingestd" "$INGESTD" || setup_fail "strip $INGESTD"   # debug info: 70 MB
cp /usr/bin/ssh /usr/bin/scp "$R/bin/"
for b in "$INGESTD" /usr/bin/ssh /usr/bin/scp; do
  ldd "$b" | awk '/=> \//{print $3}' | while read -r l; do cp -Ln "$l" "$R/lib/x86_64-linux-gnu/"; done
done
cp -L /lib64/ld-linux-x86-64.so.2 "$R/lib64/"
cc -O2 -Wall -shared -fPIC -o "$R/lib/nofsync.so" "$HERE/nofsync.c" || setup_fail "building nofsync.so"
cp -r "$W/k/lib/modules/$KVER" "$R/lib/modules/"
"$BUSYBOX" depmod -b "$R" "$KVER" || setup_fail "depmod"
echo "root:x:0:0:root:/root:/bin/sh" > "$R/etc/passwd"; echo "root:x:0:" > "$R/etc/group"
ssh-keygen -q -t ed25519 -N '' -C powercut -f "$W/client_key" || setup_fail "ssh-keygen"
cp "$W/client_key" "$R/root/.ssh/id_ed25519"; chmod 600 "$R/root/.ssh/id_ed25519"
cp "$W/client_key.pub" "$R/etc/ingestd/authorized_keys"
cat > "$R/etc/ingestd/ingestd.toml" <<'EOF'
node_id = "pc-node"
[ssh]
listen = "127.0.0.1:2222"
# on the cut disk: generated at the first start of every round
host_key = "/data/host_ed25519_key"
authorized_keys = "/etc/ingestd/authorized_keys"
drain_time = "20s"
[spool]
dir = "/data/spool"
min_free = "64MiB"
[archive]
dir = "/data/archive"
[forward]
dir = "/data/out"
[retry]
initial_backoff = "200ms"
max_backoff = "2s"
[health]
listen = "127.0.0.1:9122"
EOF
cp "$HERE/init.sh" "$R/init"; chmod +x "$R/init"
(cd "$R" && find . | "$BUSYBOX" cpio -o -H newc 2>/dev/null | gzip -1) > "$W/initrd.gz" || setup_fail "cpio"
cp "$HERE/check.py" "$W/check.py"
say "setup ${SECONDS}s: kernel $KVER, initrd $(( $(stat -c %s "$W/initrd.gz") / 1024 )) KiB, ingestd $INGESTD"

# ------------------------------------------------------------------ plan
if [ -z "${PLAN:-}" ]; then
  PLAN=""
  nmax=$(( SINGLE_ROUNDS > MULTI_ROUNDS ? SINGLE_ROUNDS : MULTI_ROUNDS ))
  for i in $(seq 1 "$nmax"); do
    c=ack; [ $((i % PIPELINE_EVERY)) = 0 ] && c=pipeline
    [ "$i" -le "$SINGLE_ROUNDS" ] && PLAN="$PLAN single:$c"
    [ "$i" -le "$MULTI_ROUNDS" ] && PLAN="$PLAN multi:$c"
  done
  for c in $CONTROLS; do
    for i in $(seq 1 "$CONTROL_ROUNDS"); do PLAN="$PLAN $c:ack"; done
  done
fi
say "plan:$PLAN"

# ------------------------------------------------------------------ one round
RES=$W/results.txt; : > "$RES"
# logstate DAEMONLOG: "landed archived forwarded" counts of ingestd's log lines
logstate() { awk '/ landed /{l++} /step done/{a++} /forwarded; entry done/{f++} END{print l+0, a+0, f+0}' "$1" 2>/dev/null || echo 0 0 0; }
count() { local n; n=$(grep -ac "$1" "$2" 2>/dev/null); echo "${n:-0}"; }
ms_sleep() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }
kv() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
# start_qemu CONSOLE DAEMONLOG IMG KERNEL-PARAMS...: boot the guest in the background (QPID)
start_qemu() {
  local con=$1 dlog=$2 img=$3; shift 3
  qemu-system-x86_64 -accel tcg -cpu qemu64 -m "$MEM" -smp 1 -display none -monitor none \
    -nic none -no-reboot -kernel "$VMLINUZ" -initrd "$W/initrd.gz" \
    -append "console=ttyS0 quiet panic=-1 $*" \
    -drive "file=$img,format=raw,if=virtio,cache=$CACHE" -serial "file:$con" -serial "file:$dlog" \
    </dev/null >"${con%.log}.qemu.out" 2>&1 &
  QPID=$!
}

round() { # index kind cut [again]
  local idx=$1 kind=$2 cut=$3 RD=$W/r$1 t0=$SECONDS
  mkdir -p "$RD"
  local img=$RD/disk.img mode n batch=1 pevents
  case $kind in
    single) mode=ingestd; n=$SINGLE_N ;;
    multi) mode=ingestd; n=$MULTI_N; batch=$MULTI_BATCH ;;
    nofsync) mode=nofsync; n=$CONTROL_N ;;
    shell) mode=shell; n=$CONTROL_N ;;
    *) echo "round $idx $kind: unknown kind"; return 1 ;;
  esac
  truncate -s 1G "$img" && mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$img" ||
    { echo "round $idx $kind: mkfs failed"; return 1; }
  # When to cut. ack: after the K-th acknowledgement (K random, at a session boundary)
  # plus a random 0..MAX_DELAY_MS ms. pipeline: once the daemon has logged the J-th
  # landing or the J-th archive step done (J random in 1..n, event kind random), at the
  # first moment its log shows an entry landed and not yet forwarded (an archive copy or
  # a forward in flight), plus 0-50 ms.
  local nsess=$(( (n + batch - 1) / batch )) k j=0 dms what pev=""
  k=$(( (1 + RANDOM % nsess) * batch )); [ "$k" -gt "$n" ] && k=$n
  if [ "$cut" = pipeline ]; then
    j=$(( 1 + RANDOM % n )); dms=$(( RANDOM % 51 ))
    if [ $((RANDOM % 2)) = 0 ]; then pev=l; what="pipeline: after landing $j/$n"
    else pev=a; what="pipeline: after archive $j/$n"; fi
  else
    dms=$(( RANDOM % (MAX_DELAY_MS + 1) )); what="ack $k/$n+${dms}ms"
  fi
  start_qemu "$RD/console.log" "$RD/daemon.log" "$img" pc.mode=$mode pc.n=$n pc.batch=$batch \
    pc.min=$SIZE_MIN pc.max=$SIZE_MAX pc.round=$idx
  local why="" tcut armed=""
  while :; do
    if [ "$cut" = pipeline ]; then sleep 0.02; else sleep 0.1; fi
    if ! kill -0 $QPID 2>/dev/null; then why="qemu exited by itself"; break; fi
    if grep -aq PCFATAL "$RD/console.log" 2>/dev/null; then why="guest FATAL"; break; fi
    if [ $((SECONDS - t0)) -gt "$BOOT_TMO" ]; then why="timeout (${BOOT_TMO}s) before the cut"; break; fi
    if [ "$cut" = pipeline ]; then
      read -r L A F < <(logstate "$RD/daemon.log")
      if [ -z "$armed" ]; then
        if { [ $pev = l ] && [ "$L" -ge $j ]; } || { [ $pev = a ] && [ "$A" -ge $j ]; }; then armed=$SECONDS; fi
      elif [ "$L" -gt "$F" ]; then
        ms_sleep $dms; what="$what, then in flight+${dms}ms"; why=cut; break
      elif [ $((SECONDS - armed)) -gt 30 ]; then
        what="$what, pipeline idle 30s"; why=cut; break
      fi
    else
      if [ "$(count '^ACKED ' "$RD/console.log")" -ge "$k" ]; then ms_sleep $dms; why=cut; break; fi
      if grep -aq ALLDONE "$RD/console.log" 2>/dev/null; then ms_sleep $dms; why=cut; break; fi
    fi
  done
  kill -9 $QPID 2>/dev/null; wait $QPID 2>/dev/null; QPID=""
  tcut=$((SECONDS - t0))
  if [ "$why" != cut ] && [ -z "${4:-}" ] && ! grep -aq 'init: kernel' "$RD/console.log"; then
    echo "round $idx $kind: NOTE the boot did not reach the guest's init ($why); running the round again"
    tr -d '\r' < "$RD/console.log" | tail -n 15 | sed 's/^/    console: /'
    rm -rf "$RD"; round "$idx" "$kind" "$cut" again; return
  fi
  if [ "$why" != cut ]; then
    echo "round $idx $kind: ERROR no cut: $why"; tr -d '\r' < "$RD/console.log" | tail -25 | sed 's/^/    console: /'
    tail -5 "$RD/daemon.log" 2>/dev/null | sed 's/^/    daemon: /'
    echo "$kind error" >> "$RES"; return 1
  fi
  local pe_cut inflight; read -r L A F < <(logstate "$RD/daemon.log"); inflight=$((L - F))
  pe_cut="landed=$L archived=$A forwarded=$F"
  e2fsck -fy "$img" > "$RD/fsck.log" 2>&1; local frc=$?   # 1 after a cut is normal (free counts)
  [ $frc -ge 4 ] && { echo "round $idx $kind: ERROR e2fsck rc=$frc"; cat "$RD/fsck.log"; echo "$kind error" >> "$RES"; return 1; }
  mount -o loop,ro "$img" "$MNT" || { echo "round $idx $kind: ERROR mount"; echo "$kind error" >> "$RES"; return 1; }
  local out; out=$(python3 "$W/check.py" cut "$mode" "$MNT" "$RD/console.log" 2>&1); local crc=$?
  umount "$MNT"
  [ $crc = 0 ] || { echo "round $idx $kind: ERROR checker: $out"; echo "$kind error" >> "$RES"; return 1; }
  local l1; l1=$(echo "$out" | head -1)
  local acked lost torn dup; acked=$(kv "$l1" acked); lost=$(kv "$l1" lost); torn=$(kv "$l1" torn); dup=$(kv "$l1" dup)
  local line="round $idx $kind cut=[$what; acked $acked of $n; log at cut: $pe_cut] fsck=$frc at-cut: lost=$lost torn=$torn dup=$dup"
  local rstart=- rlost=0 rtorn=0 rdup=0 rout="-"
  if [ "$mode" = ingestd ]; then
    local t1=$SECONDS
    local qrc attempt
    for attempt in 1 2; do
      start_qemu "$RD/recover-console.log" "$RD/recover-daemon.log" "$img" pc.mode=recover pc.round=$idx
      qrc=exited
      while kill -0 $QPID 2>/dev/null; do
        sleep 0.2
        [ $((SECONDS - t1)) -gt "$RECOVER_TMO" ] && { qrc="killed after ${RECOVER_TMO}s"; kill -9 $QPID; }
      done
      wait $QPID 2>/dev/null; QPID=""
      # A boot that never reached the guest's init (qemu or kernel trouble) never ran the
      # node: report it and boot once more. Anything after init is the node's business.
      grep -aq 'init: kernel' "$RD/recover-console.log" && break
      echo "round $idx $kind: NOTE recovery boot $attempt did not reach init ($qrc):"
      tr -d '\r' < "$RD/recover-console.log" | tail -n 15 | sed 's/^/    recover-console: /'
      sed 's/^/    recover-qemu: /' "$RD/recover-console.qemu.out" 2>/dev/null | tail -n 5
      cp "$RD/recover-console.log" "$RD/recover-console.$attempt.log" 2>/dev/null
    done
    rstart=$(tr -d '\r' < "$RD/recover-console.log" | sed -n 's/.*RECOVER_START \([a-z]*\).*/\1/p' | tail -1)
    rstart=${rstart:-none}
    grep -aq RECOVER_DONE "$RD/recover-console.log" || rstart="$rstart,no-clean-stop($qrc)"
    e2fsck -fy "$img" > "$RD/recover-fsck.log" 2>&1
    mount -o loop,ro "$img" "$MNT" || { echo "round $idx $kind: ERROR mount"; echo "$kind error" >> "$RES"; return 1; }
    local fout; fout=$(python3 "$W/check.py" final "$mode" "$MNT" "$RD/console.log" 2>&1); crc=$?
    umount "$MNT"
    [ $crc = 0 ] || { echo "round $idx $kind: ERROR checker: $fout"; echo "$kind error" >> "$RES"; return 1; }
    local f1; f1=$(echo "$fout" | head -1)
    rlost=$(kv "$f1" lost); rtorn=$(kv "$f1" torn); rdup=$(kv "$f1" dup); rout=$(kv "$f1" acked_in_out)
    line="$line | recovery: start=$rstart delivered=$rout/$acked lost=$rlost torn=$rtorn dup=$rdup (recovery $((SECONDS - t1))s)"
    out="$out
$(echo "$fout" | sed -n '2,25p' | sed 's/^/  after recovery:/')"
    if [ "$rstart" != ok ]; then
      out="$out
$(tr -d '\r' < "$RD/recover-console.log" | tail -n 25 | sed 's/^/    recover-console: /')
$(tail -n 5 "$RD/recover-console.qemu.out" 2>/dev/null | sed 's/^/    recover-qemu: /')
$(tail -n 6 "$RD/recover-daemon.log" | tr -d '\r' | sed 's/\x1b\[[0-9;]*m//g; s/^/    recover-daemon: /')"
    fi
  fi
  echo "$line [${tcut}s to cut, $((SECONDS - t0))s]"
  echo "$out" | sed -n '2,40p'
  echo "$kind cut=$cut inflight=$inflight acked=$acked lost=$lost torn=$torn dup=$dup rstart=$rstart rlost=$rlost rtorn=$rtorn rdup=$rdup delivered=$rout" >> "$RES"
  rm -f "$img"
  return 0
}

idx=0
for p in $PLAN; do
  idx=$((idx + 1))
  round "$idx" "${p%%:*}" "${p#*:}"
done

# ------------------------------------------------------------------ summary
echo
echo "=============== power-cut summary ($((SECONDS - T_ALL))s, ingestd: $INGESTD)"
printf '%-8s %6s %6s %6s %6s %6s %10s %10s %7s\n' kind rounds acked lost torn dup delivered no-restart errors
EXIT=0
for kind in single multi node $CONTROLS; do
  read -r R A L T D RF DEL E < <(awk -v k="$kind" '$1==k || (k=="node" && ($1=="single" || $1=="multi")) {
      if ($2=="error") { E++; next }
      for (i=2;i<=NF;i++) { split($i,a,"="); v[a[1]]=a[2] }
      R++; A+=v["acked"]; L+=v["lost"]+v["rlost"]; T+=v["torn"]+v["rtorn"]; D+=v["dup"]+v["rdup"]
      if (v["rstart"]!="-") { DEL+=v["delivered"]; if (v["rstart"]!="ok") RF++ }
    } END { print R+0, A+0, L+0, T+0, D+0, RF+0, DEL+0, E+0 }' "$RES")
  [ $((R + E)) = 0 ] && continue
  case $kind in
    node)
      printf '%-8s %6s %6s %6s %6s %6s %10s %10s %7s   (all node rounds)\n' "$kind" "$R" "$A" "$L" "$T" "$D" "$DEL/$A" "$RF" "$E"
      continue
      ;;
    single|multi)
      printf '%-8s %6s %6s %6s %6s %6s %10s %10s %7s\n' "$kind" "$R" "$A" "$L" "$T" "$D" "$DEL/$A" "$RF" "$E"
      [ $((L + T + D)) -gt 0 ] && { echo "FAIL: $kind: the node lost/tore/duplicated acknowledged files"; EXIT=1; }
      [ "$RF" -gt 0 ] && { echo "FAIL: $kind: the node did not restart unaided on $RF cut disk(s)"; EXIT=1; }
      [ "$DEL" -ne "$A" ] && { echo "FAIL: $kind: $((A - DEL)) acknowledged file(s) not delivered after recovery"; EXIT=1; }
      ;;
    *)
      printf '%-8s %6s %6s %6s %6s %6s %10s %10s %7s   (control: must lose)\n' "$kind" "$R" "$A" "$L" "$T" "$D" - - "$E"
      if [ $((L + T)) -eq 0 ]; then
        echo "FAIL: control '$kind' lost nothing: the harness is not proven to see loss"; [ $EXIT = 0 ] && EXIT=2
      fi
      ;;
  esac
  [ "$E" -gt 0 ] && { echo "FAIL: $E round(s) of $kind could not be run"; EXIT=1; }
done
awk '($1=="single" || $1=="multi") && $2!="error" { for (i=2;i<=NF;i++) { split($i,a,"="); v[a[1]]=a[2] }
       if (v["inflight"]>0) F++; if (v["cut"]=="pipeline") { P++; if (v["inflight"]>0) PF++ } }
     END { printf "node rounds cut with pipeline work in flight (landed, not yet forwarded): %d (pipeline-timed cuts: %d, of which in flight: %d)\n", F, P, PF }' "$RES"
echo "powercut: $([ $EXIT = 0 ] && echo PASS || echo "FAIL (exit $EXIT)") in $((SECONDS - T_ALL))s"
exit $EXIT
