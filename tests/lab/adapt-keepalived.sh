#!/bin/bash
# adapt-keepalived.sh [options] SRC > DST: the shipped keepalived/keepalived.conf,
# adapted to a lab's (or a test VM's) interface and addresses. Only the values
# change; everything else (checks, timers, VRRP settings) stays as shipped.
#   --vip IP            the VIP                      ($VIP=)
#   --iface IF          the directors' interface     ($IFACE=)
#   --node IP           a pool node, repeatable      (the BEGIN pool..END pool block)
#   --health-port N     the nodes' health port       ($HEALTH_PORT=)
#   --no-ipvs           for `keepalived -P` (VRRP only, kernels without ip_vs): drop
#                       lvs_sync_daemon (keepalived 2.2.7 crash-loops with it in -P
#                       mode, keepalived #2203)
#   --pwd DIR           what ${_PWD} becomes (default: SRC's directory); for a DST
#                       that is installed beside a copy of the keepalived/ files
#                       elsewhere, e.g. /etc/keepalived inside the tests/ipvs-vm guest
# ${_PWD} (the config's own directory, where check-ssh-banner lives) becomes SRC's
# directory (or --pwd DIR), so DST may be written anywhere.
# Fails if any expected anchor is missing from SRC (the shipped file changed shape).
set -euo pipefail
vip=""; iface=""; nodes=(); hport=""; noipvs=0; pwd_=""
while [ $# -gt 1 ]; do
  case "$1" in
    --vip) vip=$2; shift 2 ;;
    --iface) iface=$2; shift 2 ;;
    --node) nodes+=("$2"); shift 2 ;;
    --health-port) hport=$2; shift 2 ;;
    --no-ipvs) noipvs=1; shift ;;
    --pwd) pwd_=$2; shift 2 ;;
    *) echo "adapt-keepalived: unknown option $1" >&2; exit 2 ;;
  esac
done
src=${1:?usage: adapt-keepalived.sh [options] SRC}
srcdir=$(cd "$(dirname "$src")" && pwd)
[ -n "$pwd_" ] && srcdir=$pwd_
for anchor in '^\$VIP=' '^\$IFACE=' '^\$HEALTH_PORT=' '# BEGIN pool' '# END pool' 'lvs_sync_daemon' '\${_PWD}/check-ssh-banner'; do
  grep -q "$anchor" "$src" || { echo "adapt-keepalived: $src has no line matching $anchor" >&2; exit 1; }
done
pool=""
for n in "${nodes[@]}"; do pool+="    \$RIP=$n"$'\n'"    \$NODE"$'\n'; done
POOL=$pool VIP_=$vip IFACE_=$iface HPORT_=$hport NOIPVS=$noipvs SRCDIR=$srcdir awk '
  BEGIN { inpool = 0 }
  /# BEGIN pool/ { print; if (ENVIRON["POOL"] != "") { printf "%s", ENVIRON["POOL"]; inpool = 1 }; next }
  /# END pool/   { inpool = 0; print; next }
  inpool         { next }
  /^\$VIP=/         && ENVIRON["VIP_"]   != "" { print "$VIP=" ENVIRON["VIP_"]; next }
  /^\$IFACE=/       && ENVIRON["IFACE_"] != "" { print "$IFACE=" ENVIRON["IFACE_"]; next }
  /^\$HEALTH_PORT=/ && ENVIRON["HPORT_"] != "" { print "$HEALTH_PORT=" ENVIRON["HPORT_"]; next }
  /^[[:space:]]*lvs_sync_daemon/ && ENVIRON["NOIPVS"] == "1" { print "    # lvs_sync_daemon dropped by adapt-keepalived.sh --no-ipvs"; next }
  { gsub(/\$\{_PWD\}/, ENVIRON["SRCDIR"]); print }
' "$src"
