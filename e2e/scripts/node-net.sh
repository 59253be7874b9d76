#!/usr/bin/env bash
# Host networking of the local node (cluster-up.sh --node runs `up` before the
# API server starts; node-down.sh runs `down`). Idempotent.
#
#   e2e/scripts/node-net.sh up|down
#
# up:
#   - bridge $NODE_BRIDGE (pgpilot0) with $NODE_IP/24 (10.245.0.1): the node
#     address (API server, kubelet, CoreDNS listen there) and the pods' gateway;
#     the CNI bridge plugin attaches pod veths to it. Its alias records the
#     state dir that owns it, so a second node cluster refuses to start and
#     cluster-down never deletes someone else's bridge. (A bridge, not a dummy
#     interface: this kernel has no CONFIG_DUMMY.)
#   - forwarding on that bridge only (pod -> Service -> pod is routed through
#     the host); net.ipv4.ip_forward stays as it is.
#   - containment: packets arriving from pods are routed by their own table,
#     which knows only the pod subnet (anything else is unreachable), and the
#     Service CIDR is routed onto the bridge, so a Service IP that kube-proxy
#     does not (yet) translate never leaves the machine via the default route.
#   - bridge-nf-call-iptables=1, so kube-proxy's NAT sees bridged replies.
# down: removes all of that (veths still on the bridge included) and restores
# the sysctls it changed.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RT_TABLE=28775 # routing table and rule priority for traffic from pods ("pg")
OWNER="pgpilot:$STATE_DIR"
SYSCTL_SAVE=$NODE_DIR/sysctl.saved # "key value" lines to restore on down

bridge_owner() { cat "/sys/class/net/$NODE_BRIDGE/ifalias" 2>/dev/null || true; }
bridge_exists() { [[ -e /sys/class/net/$NODE_BRIDGE ]]; }

# set_sysctl KEY VALUE: set it, remembering the first value we saw.
set_sysctl() {
  local key=$1 val=$2 cur file=/proc/sys/${1//.//}
  cur=$(<"$file")
  [[ $cur == "$val" ]] && return 0
  grep -q "^$key " "$SYSCTL_SAVE" 2>/dev/null || echo "$key $cur" >>"$SYSCTL_SAVE"
  echo "$val" >"$file"
}

up() {
  if bridge_exists; then
    [[ $(bridge_owner) == "$OWNER" ]] ||
      die "$NODE_BRIDGE exists and belongs to '$(bridge_owner)', not $STATE_DIR: another node cluster runs (one per machine)"
  else
    ip link add "$NODE_BRIDGE" type bridge
    ip link set dev "$NODE_BRIDGE" alias "$OWNER"
    log "created bridge $NODE_BRIDGE"
  fi
  mkdir -p "$NODE_DIR"
  ip addr replace "$NODE_IP/24" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  set_sysctl "net.ipv4.conf.$NODE_BRIDGE.forwarding" 1
  set_sysctl net.bridge.bridge-nf-call-iptables 1
  ip route replace "$SERVICE_CIDR" dev "$NODE_BRIDGE" src "$NODE_IP"
  ip route replace "$POD_CIDR" dev "$NODE_BRIDGE" src "$NODE_IP" table "$RT_TABLE"
  ip route replace unreachable default table "$RT_TABLE"
  ip rule show priority "$RT_TABLE" | grep -q . ||
    ip rule add priority "$RT_TABLE" iif "$NODE_BRIDGE" lookup "$RT_TABLE"
  log "node network: $NODE_BRIDGE $NODE_IP/24, pods $POD_CIDR, services $SERVICE_CIDR kept on the bridge"
}

down() {
  # The rule and table hold nothing but our routes (the table number is ours).
  while ip rule show priority "$RT_TABLE" | grep -q "iif $NODE_BRIDGE"; do
    ip rule del priority "$RT_TABLE"
  done
  ip route flush table "$RT_TABLE" 2>/dev/null || true
  if bridge_exists; then
    if [[ $(bridge_owner) == "$OWNER" ]]; then
      local veth
      # Pod veths left behind (their pods were not torn down through CNI).
      for veth in $(ip -o link show master "$NODE_BRIDGE" | awk -F': ' '{print $2}' | cut -d@ -f1); do
        ip link del "$veth" 2>/dev/null && log "deleted leftover $veth"
      done
      ip link del "$NODE_BRIDGE" # takes its addresses and the Service route along
      log "deleted bridge $NODE_BRIDGE"
    else
      log "WARNING: $NODE_BRIDGE belongs to '$(bridge_owner)', not $STATE_DIR: left alone"
    fi
  fi
  if [[ -f $SYSCTL_SAVE ]]; then
    local key val
    while read -r key val; do
      [[ -e /proc/sys/${key//.//} ]] && echo "$val" >"/proc/sys/${key//.//}"
    done <"$SYSCTL_SAVE"
    rm -f "$SYSCTL_SAVE"
  fi
}

case ${1:-} in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
