#!/usr/bin/env bash
# tests/ipvs-vm/run.sh: the shipped director files on REAL IPVS (issue 12).
#
# CI machines run a kernel without ip_vs, so the pool lab (tests/lab) falls back to
# HAProxy there. This test boots Debian's own cloud kernel (downloaded with
# `apt-get download`, cached, never committed) under qemu TCG with an initramfs built
# here: static busybox, bash, iproute2, ipvsadm, keepalived, OpenSSH's scp/ssh, the
# ingestd binary (stripped) and the shipped keepalived/ files. Inside the guest
# (tests/ipvs-vm/guest.sh is its /init; `-nic none`: no traffic leaves it), network
# namespaces on one bridge play the client, the director lvs1 and three ingestd nodes,
# in DR mode (VIP on the director's eth0 by keepalived's VRRP; on the nodes' lo with
# the ARP sysctls by keepalived/prepare-node.sh). keepalived runs the shipped
# keepalived.conf, adapted by tests/lab/adapt-keepalived.sh (the lab's adapter), and
# the guest checks: the table comes up through HTTP_GET /healthz + the banner
# MISC_CHECK; scp uploads through the VIP land round robin; a maintenance file sets
# a node's weight to 0 while an upload in flight to it completes; a killed node gets
# weight 0 and uploads keep succeeding; keepalived/ipvs.sh list/add/drain/remove on
# the real table. Prints `IPVSVM:` summary lines; exit 0 only if every check passed.
#
# Needs root (none of it touches the host's network), target/release/ingestd, and
# qemu-system-x86 busybox-static ipvsadm keepalived openssh-client iproute2 (see
# scripts/install-deps.sh); the kernel package comes from the package registry.
# Knobs: INGESTD [target/release/ingestd]  KERNEL_CACHE [/var/cache/ingestd-ipvs-vm]
#        VM_TMO [900] seconds for the whole guest run  MEM [1536] guest MiB
#        KEEP [0] 1 = keep the work dir (console log, initramfs tree)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${INGESTD:-$ROOT/target/release/ingestd}
KERNEL_CACHE=${KERNEL_CACHE:-/var/cache/ingestd-ipvs-vm}
VM_TMO=${VM_TMO:-900}; MEM=${MEM:-1536}; KEEP=${KEEP:-0}
T0=$SECONDS
say() { echo "ipvs-vm: [+$(( SECONDS - T0 ))s] $*"; }
setup_fail() { echo "ipvs-vm: SETUP ERROR: $*" >&2; echo "IPVSVM: FAIL setup: $*"; exit 3; }

# Addresses inside the guest (its own namespaces only): see guest.sh.
NET=10.77.0
VIP=$NET.10

W=$(mktemp -d "${TMPDIR:-/tmp}/ingestd-ipvs-vm.XXXXXX") || setup_fail "mktemp"
QPID=""
cleanup() {
  [ -n "$QPID" ] && kill -9 "$QPID" 2>/dev/null && wait "$QPID" 2>/dev/null
  if [ "$KEEP" = 1 ]; then say "work dir kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ host tools
[ "$(id -u)" = 0 ] || setup_fail "needs root (initramfs files must be root-owned for keepalived's script security)"
for t in qemu-system-x86_64 busybox ipvsadm keepalived ssh scp ssh-keygen apt-get apt-cache dpkg-deb \
         strip gzip ldd timeout; do
  command -v "$t" >/dev/null 2>&1 || setup_fail "'$t' missing (bash scripts/install-deps.sh)"
done
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] && ! ldd "$BUSYBOX" >/dev/null 2>&1 || setup_fail "$BUSYBOX is not static (busybox-static)"
IPROUTE=$(command -v ip); [ -n "$IPROUTE" ] && "$IPROUTE" -V 2>&1 | grep -q iproute2 || setup_fail "iproute2's ip missing"
[ -x "$BIN" ] || setup_fail "no ingestd binary at $BIN (cargo build --release)"

# ------------------------------------------------------------------ kernel (Debian cloud kernel, not installed)
KDEB=$(ls -t "$KERNEL_CACHE"/linux-image-*-cloud-amd64_*.deb 2>/dev/null | head -1)
if [ -z "$KDEB" ]; then
  PKG=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  if [ -z "$PKG" ]; then
    timeout 300 apt-get update -q >/dev/null 2>&1
    PKG=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  fi
  [ -n "$PKG" ] || setup_fail "cannot resolve linux-image-cloud-amd64 (apt-get update?)"
  mkdir -p "$KERNEL_CACHE" && (cd "$KERNEL_CACHE" && timeout 300 apt-get download "$PKG") ||
    setup_fail "apt-get download $PKG"
  KDEB=$(ls -t "$KERNEL_CACHE"/linux-image-*-cloud-amd64_*.deb | head -1)
fi
KVER=$(basename "$KDEB"); KVER=${KVER#linux-image-}; KVER=${KVER%%_*}
mkdir -p "$W/k"
dpkg-deb --fsys-tarfile "$KDEB" | tar -x -C "$W/k" "./boot/vmlinuz-$KVER" "./lib/modules/$KVER" ||
  setup_fail "extracting $KDEB"
KSRC=$W/k/lib/modules/$KVER
[ -e "$KSRC/modules.dep" ] || "$BUSYBOX" depmod -b "$W/k" "$KVER" || setup_fail "depmod of $KVER"
say "kernel $KVER ($(basename "$KDEB"))"

# ------------------------------------------------------------------ initramfs
R=$W/root
mkdir -p "$R"/{bin,lib/x86_64-linux-gnu,lib64,proc,sys,dev,run,tmp,data,usr,root/.ssh,etc/ingestd,etc/ssh,lib/modules/$KVER}
ln -s bin "$R/sbin"; ln -s ../bin "$R/usr/bin"; ln -s ../bin "$R/usr/sbin"; ln -s ../lib "$R/usr/lib"
ln -s run "$R/var"
cp "$BUSYBOX" "$R/bin/busybox"
strip -o "$R/bin/ingestd" "$BIN" || setup_fail "strip $BIN"
cp "$(command -v bash)" "$R/bin/bash"
cp "$IPROUTE" "$R/bin/ip"
cp "$(command -v ipvsadm)" "$(command -v keepalived)" "$(command -v ssh)" "$(command -v scp)" "$R/bin/"
for b in "$R"/bin/{ingestd,bash,ip,ipvsadm,keepalived,ssh,scp}; do
  ldd "$b" | awk '/=> \//{print $3}' | while read -r l; do cp -Ln "$l" "$R/lib/x86_64-linux-gnu/"; done
done
cp -L /lib64/ld-linux-x86-64.so.2 "$R/lib64/"
# busybox applets for everything else (not over the real bash/ip/...: the shipped
# scripts need iproute2's `ip addr replace` and bash).
for a in $("$BUSYBOX" --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
# kernel modules: IPVS + round robin, veth, bridge, with their dependencies
want=""
for m in ip_vs ip_vs_rr veth bridge; do
  line=$(awk -F: -v m="$m" '{n=$1; sub(/.*\//,"",n); sub(/\.ko.*/,"",n); gsub(/-/,"_",n); if (n==m) {print; exit}}' "$KSRC/modules.dep")
  [ -n "$line" ] || grep -q "/$m.ko" "$KSRC/modules.builtin" || setup_fail "module $m not in $KVER"
  want+=" ${line%%:*} ${line#*:}"
done
for f in $want; do mkdir -p "$R/lib/modules/$KVER/$(dirname "$f")"; cp "$KSRC/$f" "$R/lib/modules/$KVER/$f"; done
cp "$KSRC/modules.builtin" "$KSRC/modules.order" "$R/lib/modules/$KVER/"
"$BUSYBOX" depmod -b "$R" "$KVER" || setup_fail "depmod (initramfs)"
cat > "$R/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
printf 'root:x:0:\nnogroup:x:65534:\n' > "$R/etc/group"
# the shipped director/node files, as installed on a director: /etc/keepalived
mkdir -p "$R/etc/keepalived"
cp "$ROOT"/keepalived/{check-ssh-banner,ipvs.sh,prepare-node.sh,node-maintenance.sh,keepalived.conf} "$R/etc/keepalived/"
chmod 0755 "$R"/etc/keepalived/*.sh "$R/etc/keepalived/check-ssh-banner"
chmod 0644 "$R/etc/keepalived/keepalived.conf"
cp "$ROOT/keepalived/keepalived.conf" "$R/etc/keepalived/keepalived.conf.shipped"
# adapted to the guest's addresses by the lab's adapter (one adapter for both)
bash "$ROOT/tests/lab/adapt-keepalived.sh" --vip "$VIP" --iface eth0 --pwd /etc/keepalived \
  --node $NET.11 --node $NET.12 --node $NET.13 "$ROOT/keepalived/keepalived.conf" > "$R/etc/keepalived/keepalived.conf" ||
  setup_fail "adapt-keepalived.sh"
# validated on the host too, for both config ids (the guest runs lvs1)
cp "$R/etc/keepalived/keepalived.conf" "$W/keepalived-host.conf"
bash "$ROOT/tests/lab/adapt-keepalived.sh" --vip "$VIP" --iface eth0 \
  --node $NET.11 --node $NET.12 --node $NET.13 "$ROOT/keepalived/keepalived.conf" > "$W/keepalived-host.conf" &&
  bash "$ROOT/keepalived/check-config.sh" --scratch-netns "$W/keepalived-host.conf" > "$W/check-config.log" 2>&1 ||
  setup_fail "check-config.sh of the adapted config: $(tail -5 "$W/check-config.log")"

# keys: one host key for every node (as in production), one sender key
ssh-keygen -q -t ed25519 -N '' -C ipvs-vm-host -f "$W/host_key" || setup_fail "ssh-keygen"
ssh-keygen -q -t ed25519 -N '' -C ipvs-vm-sender -f "$W/client_key" || setup_fail "ssh-keygen"
cp "$W/host_key" "$R/etc/ingestd/ssh_host_ed25519_key"; chmod 600 "$R/etc/ingestd/ssh_host_ed25519_key"
cp "$W/client_key.pub" "$R/etc/ingestd/authorized_keys"
cp "$W/client_key" "$R/root/.ssh/id_ed25519"; chmod 700 "$R/root/.ssh"; chmod 600 "$R/root/.ssh/id_ed25519"
echo "$VIP $(cut -d' ' -f1,2 "$W/host_key.pub")" > "$R/etc/ssh/known_hosts_vip"

# node configs: /healthz with [health] maintenance_file, the node's own.
node_conf() {   # node_conf N HEALTH_LISTEN EXTRA_HEALTH_LINE
  cat <<EOF
node_id = "node$1"
[ssh]
listen = "0.0.0.0:22"
host_key = "/etc/ingestd/ssh_host_ed25519_key"
authorized_keys = "/etc/ingestd/authorized_keys"
drain_time = "5s"
inactivity_timeout = "2m"
[spool]
dir = "/data/n$1/spool"
min_free = "16MiB"
[archive]
dir = "/data/n$1/archive"
[forward]
dir = "/data/n$1/outgoing"
[health]
listen = "$2"
$3
EOF
}
HEALTHZ=native
for n in 1 2 3; do
  node_conf $n "0.0.0.0:9122" "maintenance_file = \"/data/n$n/maintenance\"" > "$R/etc/ingestd/n$n.toml"
done
echo "$HEALTHZ" > "$R/etc/ingestd/healthz-mode"

cp "$HERE/guest.sh" "$R/init"; chmod 0755 "$R/init"
(cd "$R" && find . | "$BUSYBOX" cpio -o -H newc 2>/dev/null | gzip -1) > "$W/initrd.gz" || setup_fail "cpio"
say "initramfs: $(du -sh "$R" | cut -f1) unpacked, $(( $(stat -c %s "$W/initrd.gz") / 1048576 )) MiB gz"

# ------------------------------------------------------------------ boot (TCG: KVM fails on these hosts)
LOG=$W/console.log
say "booting the guest (qemu TCG, ${MEM} MiB, -nic none, limit ${VM_TMO}s)"
T_BOOT=$SECONDS
timeout -k 10 "$VM_TMO" qemu-system-x86_64 -accel tcg,thread=multi -cpu qemu64 -m "$MEM" -smp 2 -nographic -nic none \
  -no-reboot -kernel "$W/k/boot/vmlinuz-$KVER" -initrd "$W/initrd.gz" \
  -append "console=ttyS0 quiet panic=-1 mitigations=off ipvsvm.tmo=$VM_TMO" </dev/null > "$LOG" 2>&1 &
QPID=$!
# stream the guest's progress lines while it runs
tail -n +1 -f "$LOG" --pid=$QPID 2>/dev/null | sed -u 's/\r$//' | grep -a --line-buffered -E '^(IPVSVM|GUEST)' &
TPID=$!
wait $QPID; QRC=$?; QPID=""
sleep 1; kill $TPID 2>/dev/null; wait $TPID 2>/dev/null
tr -d '\r' < "$LOG" > "$LOG.txt"
say "guest ran $(( SECONDS - T_BOOT ))s (qemu exit $QRC$( [ $QRC = 124 ] && echo ': TIMEOUT'))"
if ! grep -aq '^IPVSVM: RESULT' "$LOG.txt"; then
  echo "----- last console lines"; tail -n 40 "$LOG.txt"
fi
echo
echo "===== ipvs-vm summary (kernel $KVER, /healthz $HEALTHZ, DR mode)"
grep -a -E '^IPVSVM: (PASS|FAIL|INFO|RESULT)' "$LOG.txt"
echo "ipvs-vm: total $(( SECONDS - T0 ))s"
[ "$KEEP" = 1 ] && cp "$LOG.txt" "$W/console.txt"
if grep -aq '^IPVSVM: RESULT PASS' "$LOG.txt" && ! grep -aq '^IPVSVM: FAIL' "$LOG.txt"; then
  exit 0
fi
echo "IPVSVM: FAIL overall"
exit 1
