#!/bin/bash
# node-maintenance.sh on|off|status [--config FILE] [--file PATH] [--health URL] [--port N] [--wait SECS]
# Run ON A POOL NODE. The keepalived-side drain: while ingestd's
# [health] maintenance_file exists, GET /healthz answers 503 ("maintenance"), every
# director's HTTP_GET check fails and keepalived sets the node's weight to 0 on both
# directors (inhibit_on_failure; HAProxy marks it down): no new connections, the
# transfers in flight continue.
#   on      create the file, check /healthz says 503, then wait until no SSH
#           connection is left on the node (established on --port); exit 1 on timeout
#   off     remove the file and wait until /healthz says 200 again
#   status  show the file, /healthz and the node's SSH connection count
# The file and the health URL come from the node's config (--config, default
# /etc/ingestd/ingestd.toml: [health] maintenance_file and listen) unless given;
# --port 22, --wait 600 by default.
set -uo pipefail
config=/etc/ingestd/ingestd.toml
file=""
health=""
port=22
wait=600
cmd=${1:-}; shift || true
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config=$2; shift 2 ;;
    --file) file=$2; shift 2 ;;
    --health) health=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --wait) wait=$2; shift 2 ;;
    *) cmd=usage; break ;;
  esac
done
# KEY in the [health] table of the TOML config (simple `key = "value"` lines).
health_key() {
  [ -r "$config" ] || return 0
  awk -v k="$1" '/^[[:space:]]*\[/ {sec = $0; gsub(/[][[:space:]]/, "", sec); next}
    sec == "health" && $0 ~ "^[[:space:]]*" k "[[:space:]]*=" {
      v = $0; sub(/^[^=]*=[[:space:]]*"/, "", v); sub(/".*/, "", v); print v; exit }' "$config"
}
[ -n "$file" ] || file=$(health_key maintenance_file)
[ -n "$file" ] || file=/etc/ingestd/maintenance
if [ -z "$health" ]; then
  listen=$(health_key listen); listen=${listen:-127.0.0.1:9122}
  case "$listen" in 0.0.0.0:*) listen=127.0.0.1:${listen#0.0.0.0:} ;; "[::]:"*) listen="[::1]:${listen#\[::\]:}" ;; esac
  health=http://$listen/healthz
fi
code() { curl --noproxy '*' -s -o /dev/null -m 3 -w '%{http_code}' "$health"; }
conns() { ss -Htn state established "( sport = :$port )" 2>/dev/null | wc -l; }
wait_code() {   # wait_code WANT SECS
  local end=$(( $(date +%s) + $2 ))
  while [ "$(code)" != "$1" ]; do
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 0.5
  done
}
case "$cmd" in
  on)
    mkdir -p "$(dirname "$file")" && : > "$file" || exit 1
    echo "node-maintenance: $file created"
    if ! wait_code 503 10; then
      echo "node-maintenance: $health does not answer 503 (is [health] maintenance_file = \"$file\"?)" >&2
      exit 1
    fi
    echo "node-maintenance: /healthz 503: the directors stop sending new connections within a few seconds"
    # Let the directors notice (keepalived delay_loop + retries, HAProxy inter x fall).
    sleep 10
    end=$(( $(date +%s) + wait ))
    while n=$(conns); [ "$n" -gt 0 ]; do
      [ "$(date +%s)" -ge "$end" ] && { echo "node-maintenance: still $n SSH connection(s) after ${wait}s" >&2; exit 1; }
      echo "  $(date +%T) $n SSH connection(s) left"
      sleep 5
    done
    echo "node-maintenance: drained: no SSH connection left; safe to stop ingestd"
    ;;
  off)
    rm -f "$file"
    if wait_code 200 30; then
      echo "node-maintenance: $file removed, /healthz 200: back in rotation once the directors' checks pass"
    else
      echo "node-maintenance: $file removed but $health does not answer 200: $(curl --noproxy '*' -s -m 3 "$health")" >&2
      exit 1
    fi
    ;;
  status)
    if [ -e "$file" ]; then echo "maintenance file: present ($file)"; else echo "maintenance file: absent ($file)"; fi
    echo "healthz: $(code) $(curl --noproxy '*' -s -m 3 "$health" | head -5 | tr '\n' ' ')"
    echo "ssh connections on :$port: $(conns)"
    ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
