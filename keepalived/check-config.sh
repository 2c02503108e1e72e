#!/bin/bash
# check-config.sh [--scratch-netns] [CONFIG]: validate keepalived.conf for BOTH
# directors (config ids lvs1 and lvs2) with `keepalived -t -e`, without applying it.
# Exit 0 if both pass; otherwise keepalived's exit code for the first failure.
#
#   --scratch-netns   check inside a throwaway network namespace holding a veth
#                     for every interface the config names (CI, any machine);
#                     default: against this machine's interfaces (a director).
#
# Why `unshare --pid`: keepalived 2.2.7 (Debian 12) kills itself with SIGTERM
# ("Terminated", exit 143) in config-test mode whenever a script runs as another
# user than keepalived (script_user nobody here). After resolving the script's
# path under the script user's euid it restores the parent-death signal and then
# checks "did my parent die meanwhile?" with `main_pid != getppid()`: a check meant
# for the checker/VRRP children, whose parent is the main process. With -t there
# are no children, main_pid is 0, and getppid() is the calling shell, so it always
# fires. Fixed upstream in 2.2.8 (keepalived PR #2182, issues #2587/#2617). Run as
# PID 1 of a new PID namespace, getppid() is 0 and the test runs to its end with
# the shipped config unchanged; with keepalived >= 2.2.8 the wrapper is harmless.
set -uo pipefail
scratch=0
if [ "${1:-}" = "--scratch-netns" ]; then scratch=1; shift; fi
conf=$(readlink -f "${1:-/etc/keepalived/keepalived.conf}")
[ -f "$conf" ] || { echo "check-config: no such file: $conf" >&2; exit 2; }
command -v keepalived >/dev/null || { echo "check-config: keepalived is not installed" >&2; exit 2; }

ifaces=""
if [ $scratch = 1 ]; then
  # Interfaces the config names: the $IFACE parameter and literal `interface X`/`dev X`.
  ifaces=$(sed -n -e 's/^[[:space:]]*\$IFACE=\([A-Za-z0-9_.-]*\).*/\1/p' \
                  -e 's/^[[:space:]]*interface[[:space:]]\+\([A-Za-z0-9_.-]\+\).*/\1/p' \
                  -e 's/.*[[:space:]]dev[[:space:]]\+\([A-Za-z0-9_.-]\+\).*/\1/p' "$conf" |
           grep -v '^\$' | sort -u | tr '\n' ' ')
fi

rc=0
# keepalived -t does not report a checker script that is missing (it would only log
# "disabling" when the daemon starts): check every misc_path program here.
confdir=$(dirname "$conf")
for prog in $(sed -n 's/^[^#]*misc_path[[:space:]]*"\{0,1\}\([^" ]*\).*/\1/p' "$conf" | sort -u); do
  prog=${prog//'${_PWD}'/$confdir}
  if [ ! -x "$prog" ]; then
    echo "check-config: $conf: MISC_CHECK program $prog is missing or not executable" >&2
    rc=7
  fi
done

for id in lvs1 lvs2; do
  if [ $scratch = 1 ]; then
    out=$(timeout 30 unshare --net --pid --fork bash -c '
      conf=$1 id=$2; shift 2; i=0
      ip link set lo up
      for ifc in "$@"; do
        i=$((i+1)); ip link add "$ifc" type veth peer name "kcpeer$i" && ip link set "$ifc" up || exit 2
      done
      exec keepalived -t -e -l -f "$conf" -i "$id"' _ "$conf" "$id" $ifaces 2>&1)
  else
    out=$(timeout 30 unshare --pid --fork keepalived -t -e -l -f "$conf" -i "$id" 2>&1)
  fi
  r=$?
  if [ $r -eq 0 ]; then
    echo "check-config: $conf -i $id: ok"
  else
    echo "check-config: $conf -i $id: FAILED (keepalived -t exit $r)" >&2
    printf '%s\n' "$out" | tail -20 >&2
    [ $rc -eq 0 ] && rc=$r
  fi
done
exit $rc
