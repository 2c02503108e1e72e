#!/bin/bash
# adapt-haproxy.sh --vip IP --node IP... [--stats-socket PATH] SRC > DST: the shipped
# keepalived/haproxy.cfg adapted to a lab's addresses. Only the VIP in `bind`, the
# `server` lines (node1..nodeN), the stats socket and logging (to stderr: a lab has
# no syslog) change; checks and timeouts stay as shipped.
set -euo pipefail
vip=""; nodes=(); sock=""
while [ $# -gt 1 ]; do
  case "$1" in
    --vip) vip=$2; shift 2 ;;
    --node) nodes+=("$2"); shift 2 ;;
    --stats-socket) sock=$2; shift 2 ;;
    *) echo "adapt-haproxy: unknown option $1" >&2; exit 2 ;;
  esac
done
src=${1:?usage: adapt-haproxy.sh [options] SRC}
for anchor in '^[[:space:]]*bind ' '^[[:space:]]*server node1 ' '^[[:space:]]*stats socket ' '^[[:space:]]*log /dev/log'; do
  grep -q "$anchor" "$src" || { echo "adapt-haproxy: $src has no line matching $anchor" >&2; exit 1; }
done
servers=""; i=0
for n in "${nodes[@]}"; do i=$((i+1)); servers+="    server node$i $n:22"$'\n'; done
SERVERS=$servers VIP_=$vip SOCK=$sock awk '
  /^[[:space:]]*bind / && ENVIRON["VIP_"] != "" { sub(/bind [^ ]+:22/, "bind " ENVIRON["VIP_"] ":22"); print; next }
  /^[[:space:]]*server node/ { if (!done && ENVIRON["SERVERS"] != "") { printf "%s", ENVIRON["SERVERS"]; done = 1 }; if (ENVIRON["SERVERS"] != "") next }
  /^[[:space:]]*stats socket / && ENVIRON["SOCK"] != "" { print "    stats socket " ENVIRON["SOCK"] " mode 600 level admin"; next }
  /^[[:space:]]*log \/dev\/log/ { print "    log stderr format raw local0 info"; next }
  { print }
' "$src"
