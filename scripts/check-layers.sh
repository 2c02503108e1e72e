#!/usr/bin/env bash
# The layering ARCHITECTURE.md states, checked by grep (CI runs this):
#   core/      pure: no I/O crates or modules, no clock or randomness, and it
#              imports nothing from the rest of the crate
#   spool/     below ingest, pipeline and ops
#   pipeline/  below ingest and ops
#   ops/       never reaches into ingest (it reads the metrics registry only)
#   ingest/    never reaches into the pipeline (it ends at spool landing)
# Exits non-zero, printing each offending line.
set -uo pipefail
cd "$(dirname "$0")/.."
bad=0
check() { # folder, regex, what
  local hits
  hits=$(grep -rnE "$2" "src/$1" --include='*.rs' | grep -vE '^[^:]+:[0-9]+:\s*//' || true)
  if [ -n "$hits" ]; then
    echo "check-layers: src/$1 must not use $3:"
    echo "$hits"
    bad=1
  fi
}
check core '\b(tokio|nix|libc|notify|russh)::|std::(fs|process|thread|env)\b|std::net::(Tcp|Udp|ToSocketAddrs)|\b(TcpStream|TcpListener|UdpSocket)\b|\bFile::(open|create)|OpenOptions|SystemTime::now|Instant::now|\brand::' 'I/O, clocks or randomness'
check core 'crate::(config|spool|ingest|pipeline|ops|app|cli|shutdown)\b' 'anything outside core'
check spool 'crate::(ingest|pipeline|ops|app|cli)\b' 'ingest, pipeline, ops'
check pipeline 'crate::(ingest|ops|app|cli)\b' 'ingest or ops'
check ops 'crate::(ingest|app|cli)\b' 'ingest'
check ingest 'crate::(pipeline|app|cli)\b|ops::(http|admin)' 'the pipeline or the operator side of ops'
if [ $bad -ne 0 ]; then
  echo "check-layers: FAILED (see ARCHITECTURE.md)" >&2
  exit 1
fi
echo "check-layers: ok"
