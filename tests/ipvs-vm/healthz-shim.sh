#!/bin/busybox sh
# FALLBACK, to delete once the node's own GET /healthz ([health] maintenance_file) is
# merged: the guest's stand-in for tests/lab/healthz-shim.py (no Python in the
# guest; busybox only, as it runs for every check under TCG). Run per connection
# by busybox `nc -ll -p 9122 -e healthz-shim`, with MAINT (the maintenance file) and
# UPSTREAM (the node's /health URL) in the environment: GET /healthz answers 503
# "maintenance" while MAINT exists, else the status of UPSTREAM (200 ok, 503 when it
# fails or is unreachable). (busybox 1.35 `wget -T` segfaults: timeout(1) bounds it.)
CR=$(printf '\r')
IFS=' ' read -r -t 5 method path _ || exit 0
while IFS= read -r -t 2 h; do h=${h%"$CR"}; [ -z "$h" ] && break; done
if [ "$path" != /healthz ]; then code="404 Not Found"; body="not found"
elif [ -e "$MAINT" ]; then code="503 Service Unavailable"; body="maintenance"
elif timeout 3 wget -q -O /dev/null "$UPSTREAM" 2>/dev/null; then code="200 OK"; body="ok"
else code="503 Service Unavailable"; body="node health failed or unreachable"
fi
printf 'HTTP/1.0 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n' \
  "$code" $(( ${#body} + 1 )) "$body"
