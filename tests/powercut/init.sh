#!/bin/busybox sh
# /init of the power-cut test's guest (copied into the initramfs by run.sh).
# Parameters come from the kernel command line as pc.KEY=VALUE (dotted parameters
# do not reach init's environment, so /proc/cmdline is parsed):
#   pc.mode   ingestd | nofsync | shell | recover
#   pc.n      files to upload          pc.batch  files per scp invocation (one SSH session)
#   pc.min / pc.max  file size range   pc.pace   seconds between writes (mode shell)
#   pc.round  round tag for file names
# Lines the host reads on ttyS0 (console): FILE name sha256 size, START, ACKED name sha256,
# FAILED name rc, ALLDONE, RECOVER_* and PCFATAL. ingestd logs to ttyS1 (a host file
# that survives the cut).
/bin/busybox --install -s /bin
export PATH=/bin HOME=/root
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs -o size=400m tmp /tmp; mount -t tmpfs run /run
exec </dev/console >/dev/console 2>&1
P_mode=ingestd; P_n=6; P_min=4096; P_max=65536; P_pace=0.5; P_round=0; P_batch=1
for kv in $(cat /proc/cmdline); do
  case "$kv" in pc.*=*) k=${kv%%=*}; k=${k#pc.}; v=${kv#*=}; eval "P_$k=\$v";; esac
done
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "PC[$(up)] $*"; }
die() { say "FATAL $*"; dmesg | tail -20; echo "PCFATAL"; poweroff -f; }
say "init: kernel $(uname -r) mode=$P_mode n=$P_n batch=$P_batch size=$P_min..$P_max round=$P_round"
hostname pc-node
modprobe virtio_pci || die "modprobe virtio_pci"
modprobe virtio_blk || die "modprobe virtio_blk"
i=0; while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
[ -b /dev/vda ] || die "no /dev/vda"
# Keep unflushed data in guest RAM: no periodic or background writeback, and a journal
# commit interval longer than any round, so only an explicit fsync/syncfs makes anything
# durable (a missing file or directory fsync then shows up as loss).
echo 360000 > /proc/sys/vm/dirty_expire_centisecs
echo 360000 > /proc/sys/vm/dirty_writeback_centisecs
echo 80 > /proc/sys/vm/dirty_background_ratio
echo 90 > /proc/sys/vm/dirty_ratio
mount -t ext4 -o commit=600 /dev/vda /data || die "mount /dev/vda"
say "mounted: $(grep ' /data ' /proc/mounts); write_cache=$(cat /sys/block/vda/queue/write_cache 2>/dev/null)"
ip link set lo up
export NO_COLOR=1 RUST_LOG="info,ingestd::pipeline=debug"
CONF=/etc/ingestd/ingestd.toml
healthy() { wget -q -O /dev/null http://127.0.0.1:9122/health 2>/dev/null; }

if [ "$P_mode" = recover ]; then
  # Second boot on the power-cut disk: the node must start UNAIDED (no repair of any
  # kind here), sweep, drain its pipeline, and stop cleanly.
  say "RECOVER host key: $(stat -c '%s bytes' /data/host_ed25519_key 2>/dev/null || echo absent)"
  ingestd run --config $CONF </dev/null >/dev/ttyS1 2>&1 &
  IPID=$!; t=0; ok=1
  until healthy; do
    sleep 0.2; t=$((t+1))
    if [ $t -gt 450 ] || ! kill -0 $IPID 2>/dev/null; then ok=0; break; fi
  done
  if [ $ok = 0 ]; then
    say "RECOVER_START failed (exited or not healthy within 90s)"
    kill -9 $IPID 2>/dev/null; sync; umount /data; echo "RECOVER_DONE"; poweroff -f
  fi
  say "RECOVER_START ok"
  pending() { ls /data/spool/ready /data/spool/archived /data/spool/processed 2>/dev/null | grep -v -e '^/' -e '^$' | wc -l; }
  t=0
  while [ "$(pending)" -gt 0 ] && [ $t -lt 600 ]; do sleep 0.2; t=$((t+1)); done
  say "RECOVER_DRAIN pending=$(pending) quarantined=$(ls /data/spool/quarantine 2>/dev/null | wc -l)"
  kill -TERM $IPID; t=0
  while kill -0 $IPID 2>/dev/null && [ $t -lt 150 ]; do sleep 0.2; t=$((t+1)); done
  if kill -0 $IPID 2>/dev/null; then say "RECOVER_STOP timeout"; kill -9 $IPID; else
    wait $IPID; say "RECOVER_STOP rc=$?"; fi
  sync; umount /data || say "umount failed"
  echo "RECOVER_DONE"
  poweroff -f
fi

mkdir -p /tmp/src /tmp/sha
i=1
while [ $i -le "$P_n" ]; do
  r=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
  sz=$((P_min + r % (P_max - P_min + 1)))
  f=$(printf 'r%02df%03d.bin' "$P_round" $i)
  head -c $sz /dev/urandom > /tmp/src/$f
  s=$(sha256sum < /tmp/src/$f | cut -d' ' -f1); echo $s > /tmp/sha/$f
  echo "FILE $f $s $sz"
  i=$((i+1))
done
if [ "$P_mode" = shell ]; then
  mkdir -p /data/ctl
else
  mkdir -p /data/spool /data/archive /data/out
  PRE=; [ "$P_mode" = nofsync ] && PRE=/lib/nofsync.so
  LD_PRELOAD=$PRE ingestd run --config $CONF </dev/null >/dev/ttyS1 2>&1 &
  IPID=$!; t=0
  until healthy; do
    sleep 0.2; t=$((t+1)); [ $t -gt 450 ] && die "ingestd not healthy after 90s"
    kill -0 $IPID 2>/dev/null || die "ingestd exited"
  done
fi
SSHO="-i /root/.ssh/id_ed25519 -P 2222 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=30"
say "START"
set -- $(ls /tmp/src); b=0
while [ $# -gt 0 ]; do
  batch=""; j=0
  while [ $# -gt 0 ] && [ $j -lt "$P_batch" ]; do batch="${batch:+$batch }$1"; shift; j=$((j+1)); done
  b=$((b+1))
  if [ "$P_mode" = shell ]; then
    # the no-fsync control: what a naive receiver does
    rc=0; for f in $batch; do cat /tmp/src/$f > /data/ctl/$f || rc=$?; done
    sleep "$P_pace"
  else
    # alternate legacy SCP (-O) and scp over SFTP, one invocation = one SSH session
    case $b in *[13579]) O=-O;; *) O=;; esac
    if [ "$P_batch" = 1 ]; then
      timeout 120 scp $O -q $SSHO /tmp/src/$batch sender@127.0.0.1:$batch; rc=$?
    else
      (cd /tmp/src && timeout 120 scp $O -q $SSHO $batch sender@127.0.0.1:); rc=$?
    fi
  fi
  for f in $batch; do
    if [ $rc = 0 ]; then echo "ACKED $f $(cat /tmp/sha/$f)"; else echo "FAILED $f rc=$rc"; fi
  done
done
say "ALLDONE"
while :; do sleep 3600; done
