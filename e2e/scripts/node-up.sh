#!/usr/bin/env bash
# Run one real node against the local control plane: the second half of
# `cluster-up.sh --node` (which first runs node-net.sh up and starts the
# control plane on the node address). Idempotent: components already running
# are left alone, missing ones are (re)started.
#
#   containerd   our own instance: config, root, state and socket under
#                $STATE_DIR/node/containerd (never the system containerd);
#                runc, CNI plugins from /usr/lib/cni (Debian packages)
#   kubelet      cgroupfs driver, x509 + webhook authn, Webhook authz, its own
#                serving certificate, root dir $STATE_DIR/node/kubelet
#   kube-proxy   nftables mode, user system:kube-proxy
#   kube-router  network policy controller only (iptables + ipsets), user pgpilot-kube-router:
#                the bridge plugin enforces no NetworkPolicy
#   coredns      host process on $NODE_IP:53, only cluster.local and reverse zones
#   local-path-provisioner  host process; StorageClass local-path (default)
#
# Host packages it needs (installed with apt-get when missing): containerd,
# runc, containernetworking-plugins, iptables, nftables, conntrack, jq, ipset.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SCRIPTS=$E2E_DIR/scripts

lock_cluster
[[ -f $NODE_MARKER ]] || die "$STATE_DIR is not a node cluster: start it with cluster-up.sh --node"
"$SCRIPTS/node-net.sh" up # already done by cluster-up.sh; cheap, and repairs a lost route
apiserver_ready || die "the API server is not ready at $APISERVER_URL"
[[ -x $COREDNS_BIN/coredns && -x $LOCAL_PATH_BIN/local-path-provisioner && -x $CRI_RESET_BIN/cri-reset &&
  -x $KUBE_ROUTER_BIN/kube-router ]] ||
  "$SCRIPTS/build-binaries.sh" --node >/dev/null

# --- host packages ------------------------------------------------------------------
need=()
for p in containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
  iptables:iptables nft:nftables conntrack:conntrack jq:jq ipset:ipset; do
  f=${p%%:*}
  if [[ $f == /* ]]; then [[ -x $f ]] || need+=("${p#*:}"); else command -v "$f" >/dev/null || need+=("${p#*:}"); fi
done
if ((${#need[@]})); then
  log "installing Debian packages: ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

CTRD_DIR=$NODE_DIR/containerd
KUBELET_DIR=$NODE_DIR/kubelet
CNI_DIR=$NODE_DIR/cni
LP_DIR=$NODE_DIR/local-path # volume directories
mkdir -p "$CTRD_DIR" "$KUBELET_DIR" "$CNI_DIR/net.d" "$CNI_DIR/ipam" "$NODE_DIR/pod-logs" \
  "$NODE_DIR/volume-plugins" "$LP_DIR" "$NODE_DIR/etc"
chmod 700 "$NODE_DIR" # pods see their volumes through bind mounts, not these paths

# --- certificates and kubeconfigs ---------------------------------------------------
if [[ ! -f $PKI_DIR/kubelet.crt ]]; then
  # The Node authorizer and NodeRestriction know a kubelet by this name and group.
  client kubelet "system:node:$NODE_NAME" system:nodes
  # Serving: the API server calls the kubelet (logs, exec, port-forward) at
  # the node address and checks this against the cluster CA.
  sign kubelet-serving "/CN=system:node:$NODE_NAME" "extendedKeyUsage=serverAuth
subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME"
  client kube-proxy system:kube-proxy # bound to system:node-proxier by default
  client coredns pgpilot-coredns
  client local-path pgpilot-local-path
  chmod 600 "$PKI_DIR"/*.key
  log "generated node certificates"
fi
# Added later than the others: a node state from before has no certificate for it yet.
if [[ ! -f $PKI_DIR/kube-router.crt ]]; then
  client kube-router pgpilot-kube-router
  chmod 600 "$PKI_DIR/kube-router.key"
fi
for n in kubelet kube-proxy kube-router coredns local-path; do write_kubeconfig "$NODE_DIR/$n.kubeconfig" "$n"; done

# --- configuration ------------------------------------------------------------------
# containerd: everything of ours under $CTRD_DIR; pod network namespaces under
# its state dir (not /run/netns); runc state under $CTRD_DIR/runc. The sandbox
# image must already be imported: containerd would otherwise try to pull it.
# restrict_oom_score_adj: this machine withholds CAP_SYS_RESOURCE even from
# root, so a negative oom_score_adj (the CRI gives sandboxes -998, the kubelet
# Guaranteed pods -997) fails in runc ("can't get final child's PID from
# pipe"); with it, no container goes below containerd's own score (0).
cat >"$CTRD_DIR/config.toml" <<EOF
version = 2
root = "$CTRD_DIR/root"
state = "$CTRD_DIR/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD_DIR/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CNI_DIR/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$CTRD_DIR/runc"
EOF

# CNI: pods on the bridge of node-net.sh, addresses from $POD_CIDR (the bridge
# keeps .1), hostPort support. No ipMasq: pods have nowhere else to go.
# containerd adds the loopback interface itself (the loopback plugin).
cat >"$CNI_DIR/net.d/10-pgpilot.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "pgpilot",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$NODE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$CNI_DIR/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

# kubelet. resolvConf "": pods get only the cluster DNS, never the host's
# resolver. Image GC off (imageGCHighThresholdPercent 100): images are imported,
# never pulled, so a collected one would be gone. Low eviction thresholds: the
# disk is shared with everything else on the machine.
cat >"$NODE_DIR/etc/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI_DIR/kubelet-serving.crt
tlsPrivateKeyFile: $PKI_DIR/kubelet-serving.key
rotateCertificates: false
serverTLSBootstrap: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI_DIR/ca.crt}
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
clusterDNS: [$DNS_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: ""
podLogsDir: $NODE_DIR/pod-logs
volumePluginDir: $NODE_DIR/volume-plugins
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
shutdownGracePeriod: 0s
serializeImagePulls: false
maxPods: 110
EOF

# kube-proxy: nftables mode, which replaces a Service's rules in one transaction. In
# iptables mode (iptables-nft here) the filter and nat tables commit one after the other:
# when a Service goes from no endpoint to one (the `-rw` Service in every switchover) a
# connection attempt between the two commits is neither rejected nor translated, its SYN
# vanishes and the client waits out its connect timeout (19 of 20 such flips lost a SYN
# here, and about one connect in 700 at rest; none in nftables mode). NodePorts only on the
# node address; it leaves the conntrack sysctls as they are (0 = leave as-is).
# minSyncPeriod 100ms: rules follow an EndpointSlice change within a tenth of a second, as
# suits a very small cluster (the default 1 s batches changes in big ones, and adds up to
# 1 s to a failover behind a Service; 0 is not possible here, the config defaults it to 1 s).
cat >"$NODE_DIR/etc/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $NODE_DIR/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
mode: nftables
clusterCIDR: $POD_CIDR
detectLocalMode: ClusterCIDR
nodePortAddresses: ["$NODE_IP/32"]
oomScoreAdj: 0 # no CAP_SYS_RESOURCE here for the default -999
nftables:
  minSyncPeriod: 100ms
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF

# CoreDNS: answers only its zones (no forward plugin, so every other name gets
# REFUSED and nothing leaves the machine).
cat >"$NODE_DIR/etc/Corefile" <<EOF
$CLUSTER_DOMAIN:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $NODE_IP
    errors
    health 127.0.0.1:$COREDNS_HEALTH_PORT
    ready 127.0.0.1:$COREDNS_READY_PORT
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $NODE_DIR/coredns.kubeconfig
        pods insecure
        ttl 5
    }
    cache 5
    loadbalance
}
EOF

# local-path: volumes are directories under $LP_DIR on this node; the helper
# pod (mkdir/rm of one directory) runs the pgclient image as root.
HELPER_IMAGE=${PGPILOT_LOCAL_PATH_HELPER_IMAGE:-localhost/pgpilot/pgclient:17}
cat >"$NODE_DIR/etc/local-path.json" <<EOF
{"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["$LP_DIR"]}]}
EOF
cat >"$NODE_DIR/etc/local-path-helper-pod.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: helper-pod
spec:
  tolerations:
    - {key: node.kubernetes.io/disk-pressure, operator: Exists, effect: NoSchedule}
  containers:
    - name: helper-pod
      image: $HELPER_IMAGE
      imagePullPolicy: Never
      securityContext: {runAsUser: 0, runAsGroup: 0}
EOF

# --- processes ----------------------------------------------------------------------
# node_wait WHAT TIMEOUT COMPONENT CMD...: poll CMD; fail if COMPONENT exits.
# Liveness by kill -0 on the recorded pid, not pid_of: while a process execs,
# its /proc cmdline is briefly empty, and pid_of would call it dead.
node_wait() {
  local what=$1 timeout=$2 comp=$3 deadline pid
  shift 3
  pid=$(cat "$RUN_DIR/$comp.pid" 2>/dev/null || true)
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$LOG_DIR/$comp.log" >&2 || true
      die "$comp exited while waiting for $what (log: $LOG_DIR/$comp.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 20 "$LOG_DIR/$comp.log" >&2 || true
      die "timed out after ${timeout}s waiting for $what (log: $LOG_DIR/$comp.log)"
    fi
    sleep 0.2
  done
  log "$what: ok (+$(elapsed) s)"
}
running() { pid_of "$1" >/dev/null; }

if ! running containerd; then
  # The proxy variables point at a closed loopback port: should anything ever
  # make this containerd pull an image (a pod without imagePullPolicy: Never
  # whose image is missing), the pull fails here instead of leaving the machine.
  launch containerd env HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= \
    containerd --config "$CTRD_DIR/config.toml"
fi
node_wait "containerd" 30 containerd nctr version

# The sandbox image first (without it no pod starts), then the helper image of
# local-path (without it no volume gets provisioned); other images:
# import-images.sh.
"$SCRIPTS/import-images.sh" registry.k8s.io/pause:3.10 ||
  die "no pause image: build it (images/pause/build.sh) before cluster-up.sh --node"
"$SCRIPTS/import-images.sh" "$HELPER_IMAGE" ||
  log "WARNING: no $HELPER_IMAGE image: local-path volumes cannot be provisioned until it is imported"

if ! running kubelet; then
  # Paths outside the state dir that the kubelet (device-plugin socket, log
  # links) and libcni (result cache) create at fixed places: node-down.sh
  # removes those that did not exist before us.
  for p in /var/lib/kubelet /var/log/containers /var/lib/cni; do
    [[ -e $p ]] || grep -qx "$p" "$NODE_DIR/created.paths" 2>/dev/null || echo "$p" >>"$NODE_DIR/created.paths"
  done
  # The kubelet sets these kernel tunables itself (protectKernelDefaults
  # false); remember the machine's values so node-down.sh can restore them.
  for key in vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops \
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes; do
    grep -q "^$key " "$NODE_DIR/sysctl.saved" 2>/dev/null ||
      echo "$key $(<"/proc/sys/${key//.//}")" >>"$NODE_DIR/sysctl.saved"
  done
  launch kubelet "$K8S_BIN/kubelet" \
    --config="$NODE_DIR/etc/kubelet.yaml" \
    --kubeconfig="$NODE_DIR/kubelet.kubeconfig" \
    --root-dir="$KUBELET_DIR" \
    --cert-dir="$KUBELET_DIR/pki" \
    --hostname-override="$NODE_NAME" \
    --node-ip="$NODE_IP" \
    --v=0
fi
node_ready() {
  [[ $(kctl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
}
node_wait "node $NODE_NAME Ready" 120 kubelet node_ready

if ! running kube-proxy; then
  launch kube-proxy "$K8S_BIN/kube-proxy" --config="$NODE_DIR/etc/kube-proxy.yaml" --v=0
fi
node_wait "kube-proxy /healthz" 60 kube-proxy curl -fsS --max-time 1 "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz"

sed -e "s|@DNS_IP@|$DNS_IP|g" -e "s|@NODE_IP@|$NODE_IP|g" -e "s|@NODE_NAME@|$NODE_NAME|g" \
  "$E2E_DIR/manifests/node-addons.yaml" | kctl apply -f - >/dev/null
log "applied node add-ons (kube-dns Service, local-path StorageClass, RBAC)"

# kube-router: NetworkPolicies as iptables chains and ipsets (iptables-nft here, beside
# kube-proxy's own nftables table). Pods are filtered as they leave and enter the bridge
# (bridge-nf-call-iptables, set by node-net.sh); traffic from the node itself (kubelet
# probes, the host-run manager and tests) is let through, as kube-router does for every
# node. Policy changes are applied on each event; the full resync runs every minute.
if ! running kube-router; then
  launch kube-router "$KUBE_ROUTER_BIN/kube-router" \
    --kubeconfig="$NODE_DIR/kube-router.kubeconfig" \
    --hostname-override="$NODE_NAME" \
    --run-firewall=true --run-router=false --run-service-proxy=false --run-loadbalancer=false \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --iptables-sync-period=1m \
    --health-port="$KUBE_ROUTER_HEALTH_PORT" \
    --metrics-port=0 \
    --v=1
fi
node_wait "kube-router /healthz" 60 kube-router curl -fsS --max-time 1 "http://127.0.0.1:$KUBE_ROUTER_HEALTH_PORT/healthz"

if ! running coredns; then
  launch coredns "$COREDNS_BIN/coredns" -conf "$NODE_DIR/etc/Corefile"
fi
node_wait "CoreDNS /ready" 60 coredns curl -fsS --max-time 1 "http://127.0.0.1:$COREDNS_READY_PORT/ready"

if ! running local-path-provisioner; then
  lp_log=$LOG_DIR/local-path-provisioner.log
  lp_from=$(($(stat -c %s "$lp_log" 2>/dev/null || echo 0) + 1)) # this start's lines only
  launch local-path-provisioner "$LOCAL_PATH_BIN/local-path-provisioner" --debug start \
    --kubeconfig "$NODE_DIR/local-path.kubeconfig" \
    --namespace local-path-storage \
    --service-account-name local-path-provisioner-service-account \
    --config "$NODE_DIR/etc/local-path.json" \
    --helper-pod-file "$NODE_DIR/etc/local-path-helper-pod.yaml" \
    --helper-image "$HELPER_IMAGE"
  lp_started() { tail -c "+$lp_from" "$lp_log" | grep -q 'Provisioner started'; }
  node_wait "local-path-provisioner" 30 local-path-provisioner lp_started
fi

log "node $NODE_NAME up (+$(elapsed) s): $NODE_IP, pods $POD_CIDR, DNS $DNS_IP, StorageClass local-path"
