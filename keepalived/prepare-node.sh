#!/bin/bash
# prepare-node.sh VIP [--iface IF]... [--no-persist] [--root DIR]
# Prepare an ingestd pool node to be an IPVS real server in DR (direct routing) mode:
#   - the VIP on `lo` as /32, so the node accepts packets addressed to the VIP and
#     answers the sender directly from it;
#   - net.ipv4.conf.{all,lo,IF}.arp_ignore=1 and arp_announce=2, so the node never
#     answers ARP for the VIP (else senders bypass the director);
#   - both persisted: /etc/sysctl.d/90-ingestd-lvs-dr.conf and a oneshot systemd
#     unit ingestd-lvs-vip.service that puts the VIP on lo at boot.
# --iface: the node's interface(s) towards the directors (default: the interface of
#          the default route). --no-persist: apply now only (labs, network namespaces).
# --root DIR: write the persistent files under DIR instead of / (and apply nothing).
# Idempotent. Not needed with HAProxy (haproxy.cfg) or LVS-NAT.
set -euo pipefail
usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
vip=$1; shift
ifaces=(); persist=1; root=""
while [ $# -gt 0 ]; do
  case "$1" in
    --iface) ifaces+=("$2"); shift 2 ;;
    --no-persist) persist=0; shift ;;
    --root) root=$2; shift 2 ;;
    *) usage ;;
  esac
done
[[ $vip =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "prepare-node: not an IPv4 address: $vip" >&2; exit 2; }
if [ ${#ifaces[@]} -eq 0 ]; then
  def=$(ip -4 route show default 2>/dev/null | awk '{for(i=1;i<NF;i++) if($i=="dev"){print $(i+1); exit}}')
  [ -n "$def" ] && ifaces=("$def")
fi

sysctl_lines() {
  local k
  for k in all lo "${ifaces[@]}"; do
    echo "net.ipv4.conf.$k.arp_ignore = 1"
    echo "net.ipv4.conf.$k.arp_announce = 2"
  done
}

if [ -z "$root" ]; then
  # Apply now. The kernel uses max(all, IF) for arp_ignore/arp_announce.
  while read -r key _ val; do sysctl -q -w "$key=$val" >/dev/null; done < <(sysctl_lines)
  ip addr replace "$vip/32" dev lo
  echo "prepare-node: VIP $vip/32 on lo; arp_ignore=1 arp_announce=2 on all lo ${ifaces[*]}"
fi

if [ $persist = 1 ]; then
  mkdir -p "$root/etc/sysctl.d" "$root/etc/systemd/system"
  { echo "# ingestd pool node, LVS-DR real server: never answer ARP for the VIP on lo"
    sysctl_lines; } > "$root/etc/sysctl.d/90-ingestd-lvs-dr.conf"
  cat > "$root/etc/systemd/system/ingestd-lvs-vip.service" <<UNIT
[Unit]
Description=LVS-DR VIP $vip on lo for the ingestd pool
After=network-pre.target systemd-sysctl.service
Before=network.target ingestd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/sbin/ip addr replace $vip/32 dev lo
ExecStop=/sbin/ip addr del $vip/32 dev lo

[Install]
WantedBy=multi-user.target
UNIT
  if [ -z "$root" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl daemon-reload && systemctl enable ingestd-lvs-vip.service >/dev/null
  fi
  echo "prepare-node: persisted in $root/etc/sysctl.d/90-ingestd-lvs-dr.conf and $root/etc/systemd/system/ingestd-lvs-vip.service"
fi
