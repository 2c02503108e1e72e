#!/bin/bash
# ipvs.sh: the IPVS table of a director WITHOUT keepalived (single director,
# ipvsadm.rules). With keepalived, do not use it: drain through the node
# (node-maintenance.sh) and add/remove nodes in keepalived.conf.
#
#   ipvs.sh list                    table, weights, ActiveConn/InActConn, then --stats
#   ipvs.sh add RIP [WEIGHT]        add a real server (DR, weight 1) or set its weight
#   ipvs.sh drain RIP [TIMEOUT]     weight 0, then wait (default 600 s) until its
#                                   ActiveConn and InActConn are 0; exit 1 on timeout
#   ipvs.sh remove RIP [--force]    delete it; refuses while it still has connections
#
# VIP and PORT come from the environment (default 192.0.2.10 and 22), e.g.
#   VIP=10.0.0.10 ipvs.sh drain 10.0.0.12
# After a change: `ipvsadm-save -n > /etc/ipvsadm.rules` keeps it across reboots.
set -euo pipefail
VIP=${VIP:-192.0.2.10}
PORT=${PORT:-22}
svc="$VIP:$PORT"
die() { echo "ipvs.sh: $*" >&2; exit 1; }
usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
command -v ipvsadm >/dev/null || die "ipvsadm is not installed"

# "WEIGHT ACTIVE INACTIVE" of RIP in the service, empty if it is not in the table.
counts() {
  ipvsadm -L -n -t "$svc" 2>/dev/null |
    awk -v rs="$1:$PORT" '$1=="->" && $2==rs {print $4, $5, $6}'
}

cmd=${1:-}; shift || true
case "$cmd" in
  list)
    ipvsadm -L -n
    echo
    ipvsadm -L -n --stats
    ;;
  add)
    rip=${1:?RIP}; w=${2:-1}
    ipvsadm -L -n -t "$svc" >/dev/null 2>&1 || ipvsadm -A -t "$svc" -s rr
    if [ -n "$(counts "$rip")" ]; then
      # -e resets every omitted option: always give the method (-g) too.
      ipvsadm -e -t "$svc" -r "$rip:$PORT" -g -w "$w"
    else
      ipvsadm -a -t "$svc" -r "$rip:$PORT" -g -w "$w"
    fi
    echo "ipvs.sh: $rip:$PORT in $svc with weight $w"
    ;;
  drain)
    rip=${1:?RIP}; limit=${2:-600}
    [ -n "$(counts "$rip")" ] || die "$rip:$PORT is not in $svc"
    ipvsadm -e -t "$svc" -r "$rip:$PORT" -g -w 0
    echo "ipvs.sh: $rip:$PORT weight 0 (no new connections); waiting for its connections to end"
    end=$(( $(date +%s) + limit ))
    while :; do
      read -r w act inact < <(counts "$rip")
      echo "  $(date +%T) ActiveConn=$act InActConn=$inact"
      [ "$act" = 0 ] && [ "$inact" = 0 ] && { echo "ipvs.sh: $rip drained"; exit 0; }
      [ "$(date +%s)" -ge "$end" ] && die "$rip still has connections after ${limit}s"
      sleep 5
    done
    ;;
  remove)
    rip=${1:?RIP}; force=${2:-}
    c=$(counts "$rip"); [ -n "$c" ] || die "$rip:$PORT is not in $svc"
    read -r w act inact <<<"$c"
    if [ "$force" != --force ] && { [ "$act" != 0 ] || [ "$inact" != 0 ]; }; then
      die "$rip has ActiveConn=$act InActConn=$inact: drain it first (or --force, which drops them)"
    fi
    ipvsadm -d -t "$svc" -r "$rip:$PORT"
    echo "ipvs.sh: $rip:$PORT removed from $svc"
    ;;
  *) usage ;;
esac
