# The real node of the local control plane: containerd 2 (built from its Go module) with runc
# and the CNI plugins from Debian, a kubelet and kube-proxy from the same Kubernetes build, and
# the images built by tests/images/build loaded into containerd. Sourced by `up` and `down`.
#
# Pods get addresses on the bridge cogo0 (10.88.0.0/16), which the tests create; nothing from
# that network is forwarded anywhere else. The node's own address is the bridge's host side,
# 10.88.0.1 (the kubelet refuses a loopback address), reachable only from this host and the pods. Pods reach the API server (which listens on
# 127.0.0.1 only) through the `kubernetes` Service address, 10.96.0.1:443, DNATed to
# 127.0.0.1 on the bridge (route_localnet).

CONTAINERD_VERSION=v2.2.9
CRICTL_VERSION=v1.34.0
CONTAINERD_DIR=$CACHE/containerd-$CONTAINERD_VERSION
NODE_NAME=cogo-node
POD_CIDR=10.88.0.0/16
BRIDGE=cogo0
BRIDGE_IP=10.88.0.1
CLUSTER_DNS=10.96.0.10
KUBELET_PORT=$((PORT_BASE + 250))
KUBELET_HEALTHZ_PORT=$((PORT_BASE + 248))
PROXY_HEALTHZ_PORT=$((PORT_BASE + 256))
PROXY_METRICS_PORT=$((PORT_BASE + 249))
CNI_BIN_DIR=${COGO_CNI_BIN_DIR:-/usr/lib/cni}
NODE_IPTABLES_TAG=cogo-local-node
IMAGE_TAG_PAUSE=3.10-cogo
# Host paths that containerd, CNI or the kubelet may create outside the state directory; those
# that did not exist before `up` are removed by `down`.
NODE_HOST_PATHS=(/var/lib/cni /run/containerd /var/lib/kubelet /var/log/pods /var/log/containers /etc/cni /opt/cni /var/run/netns)

node_build() {
  if [[ ! -x "$CONTAINERD_DIR/containerd" || ! -x "$CONTAINERD_DIR/containerd-shim-runc-v2" || ! -x "$CONTAINERD_DIR/ctr" ]]; then
    log "building containerd $CONTAINERD_VERSION (containerd, containerd-shim-runc-v2, ctr)"
    mkdir -p "$CONTAINERD_DIR"
    CGO_ENABLED=0 GOBIN=$CONTAINERD_DIR go install -tags "no_btrfs no_devmapper no_zfs" \
      "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
      "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
      "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION"
  fi
  if [[ ! -x "$BIN/crictl" || ! -f "$BIN/.crictl-$CRICTL_VERSION" ]]; then
    log "building crictl $CRICTL_VERSION"
    GOBIN=$BIN go install "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
    touch "$BIN/.crictl-$CRICTL_VERSION"
  fi
  ln -sfn "$CONTAINERD_DIR/ctr" "$BIN/ctr"
}

node_check_host() {
  [[ $(id -u) == 0 ]] || die "the real node needs root (it runs containerd, the kubelet and iptables)"
  local cmd
  for cmd in runc iptables ip; do
    command -v "$cmd" >/dev/null || die "$cmd is required (Debian: apt-get install runc iptables iproute2)"
  done
  [[ -x "$CNI_BIN_DIR/bridge" && -x "$CNI_BIN_DIR/host-local" && -x "$CNI_BIN_DIR/loopback" ]] \
    || die "the CNI plugins are missing from $CNI_BIN_DIR (Debian: apt-get install containernetworking-plugins)"
  grep -qw overlay /proc/filesystems || die "the kernel has no overlay filesystem"
  [[ -d /proc/sys/net/bridge ]] || die "bridge netfilter (br_netfilter) is not available in this kernel"
}

# Removes what a node run leaves outside its state directory: containers, mounts, network
# namespaces, the bridge and iptables rules. Safe when nothing is there.
node_sweep() {
  local runc_root=$CLUSTER_DIR/runc id m ns
  if [[ -d "$runc_root" ]]; then
    for id in $(runc --root "$runc_root" list -q 2>/dev/null); do
      runc --root "$runc_root" kill "$id" KILL >/dev/null 2>&1 || true
      runc --root "$runc_root" delete --force "$id" >/dev/null 2>&1 || true
    done
  fi
  # Mounts under the state directory, deepest first.
  for m in $(awk -v d="$CLUSTER_DIR" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  # (Pod network namespaces are mounts under the state directory: unmounted above.)
  # Every process still in a pod cgroup of the kubelet, whatever runc knows of it (a container
  # whose `runc create` was cut short by the sweep above never reaches runc's state).
  local procs
  for _ in 1 2 3 4 5; do
    procs=$({ find /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/kubepods.slice -name cgroup.procs -exec cat {} + 2>/dev/null || true; } | sort -u)
    [[ -z "$procs" ]] && break
    for pid in $procs; do kill -9 "$pid" 2>/dev/null || true; done
    sleep 0.5
  done
  # The kubelet's cgroups, once their processes are gone.
  local cg
  for cg in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/kubepods.slice; do
    [[ -d "$cg" ]] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link delete "$BRIDGE" 2>/dev/null || true; fi
  if [[ -f "$CLUSTER_DIR/run/created-paths" ]]; then
    local path
    while read -r path; do
      [[ -n "$path" && -e "$path" ]] || continue
      awk -v d="$path" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
      rm -rf "$path"
    done < "$CLUSTER_DIR/run/created-paths"
  fi
  if [[ -f "$CLUSTER_DIR/run/sysctl.orig" ]]; then sysctl -qp "$CLUSTER_DIR/run/sysctl.orig" >/dev/null 2>&1 || true; fi
  if command -v iptables >/dev/null; then
    if [[ -x "$KUBE_BIN" ]]; then "$KUBE_BIN" kube-proxy --cleanup >/dev/null 2>&1 || true; fi
    local table rule
    for table in nat filter mangle; do
      { iptables -t "$table" -S 2>/dev/null | grep -- "--comment $NODE_IPTABLES_TAG" || true; } | sed 's/^-A /-D /' |
        while read -r rule; do
          eval "iptables -t $table $rule" 2>/dev/null || true
        done
    done
    # The chain the NetworkPolicy test hands the pods' connections through (tests/tests/node/netpol.rs).
    iptables -t mangle -F COGO-E2E-NETPOL 2>/dev/null && iptables -t mangle -X COGO-E2E-NETPOL 2>/dev/null || true
  fi
}

node_write_config() {
  local pki=$CLUSTER_DIR/pki
  mkdir -p "$CLUSTER_DIR"/{containerd,cni/net.d,cni/ipam,kubelet,runc}
  cat > "$CLUSTER_DIR/containerd/config.toml" <<TOML
version = 3
root = "$CLUSTER_DIR/containerd/root"
state = "$CLUSTER_DIR/containerd/state"

[grpc]
  address = "$CLUSTER_DIR/containerd/containerd.sock"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "docker.io/library/cogo-pause:$IMAGE_TAG_PAUSE"

[plugins.'io.containerd.cri.v1.runtime']
  enable_cdi = false
  netns_mounts_under_state_dir = true
  # Sandboxes ask for a negative OOM score; where even root may not lower it (as in this
  # project's CI VMs), containerd clamps it instead of failing every pod.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$CLUSTER_DIR/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$CNI_BIN_DIR"]
    conf_dir = "$CLUSTER_DIR/cni/net.d"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
TOML
  cat > "$CLUSTER_DIR/cni/net.d/10-cogo.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "cogo",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$BRIDGE_IP"}]],
               "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$CLUSTER_DIR/cni/ipam"}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
  cat > "$CLUSTER_DIR/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $BRIDGE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CLUSTER_DIR/containerd/containerd.sock
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$CLUSTER_DNS]
resolvConf: $CLUSTER_DIR/kubelet/resolv.conf
serializeImagePulls: false
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
localStorageCapacityIsolation: true
protectKernelDefaults: false
makeIPTablesUtilChains: false
maxPods: 110
podPidsLimit: 4096
podLogsDir: $CLUSTER_DIR/pod-logs
YAML
  # Pods resolve only cluster names: there is no upstream resolver to forward to.
  printf 'nameserver %s\noptions ndots:5\n' "$CLUSTER_DNS" > "$CLUSTER_DIR/kubelet/resolv.conf"
  cat > "$CLUSTER_DIR/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $CLUSTER_DIR/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
clusterCIDR: $POD_CIDR
conntrack: {maxPerCore: 0}
nodePortAddresses: [127.0.0.1/32]
YAML
}

# Imports every image archive of $CACHE/images into the node's containerd.
node_load_images() {
  local archive base
  for archive in "$CACHE"/images/*.tar; do
    [[ -f "$archive" ]] || die "no images in $CACHE/images: run tests/images/build (make images)"
    base=$(basename "$archive" .tar); base=${base%%_*}
    "$CONTAINERD_DIR/ctr" --address "$CLUSTER_DIR/containerd/containerd.sock" -n k8s.io images import \
      --base-name "docker.io/library/$base" --digests=false "$archive" >/dev/null \
      || die "cannot import $archive"
  done
  log "loaded $(ls "$CACHE"/images/*.tar | wc -l) images into containerd"
}

node_start() {
  local pki=$CLUSTER_DIR/pki
  node_write_config
  client_cert node "system:node:$NODE_NAME" system:nodes
  client_cert kube-proxy system:kube-proxy
  kubeconfig node node
  kubeconfig kube-proxy kube-proxy

  touch "$CLUSTER_DIR/run/real-node"
  local path
  for path in "${NODE_HOST_PATHS[@]}"; do
    [[ -e "$path" ]] || echo "$path" >> "$CLUSTER_DIR/run/created-paths"
  done
  # Remember the host's settings so `down` puts them back.
  printf 'net.ipv4.ip_forward=%s\nnet.bridge.bridge-nf-call-iptables=%s\n' \
    "$(sysctl -n net.ipv4.ip_forward)" "$(sysctl -n net.bridge.bridge-nf-call-iptables)" > "$CLUSTER_DIR/run/sysctl.orig"
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 >/dev/null
  ip link add "$BRIDGE" type bridge
  ip addr add "$BRIDGE_IP/16" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  sysctl -qw "net.ipv4.conf.$BRIDGE.route_localnet=1"
  # Pod traffic stays on this machine: nothing from the bridge is forwarded elsewhere.
  iptables -I FORWARD -i "$BRIDGE" ! -o "$BRIDGE" -m comment --comment "$NODE_IPTABLES_TAG" -j DROP
  iptables -I FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment "$NODE_IPTABLES_TAG" -j ACCEPT
  # The node's address is the bridge's host side (the kubelet may not use a loopback address);
  # only this host and the pods may reach it.
  iptables -I INPUT -d "$BRIDGE_IP/32" ! -i "$BRIDGE" -m comment --comment "$NODE_IPTABLES_TAG" -j DROP
  iptables -I INPUT -d "$BRIDGE_IP/32" -i lo -m comment --comment "$NODE_IPTABLES_TAG" -j ACCEPT
  # The kubernetes Service address leads to the API server on 127.0.0.1.
  iptables -t nat -A PREROUTING -i "$BRIDGE" -d 10.96.0.1/32 -p tcp --dport 443 \
    -m comment --comment "$NODE_IPTABLES_TAG" -j DNAT --to-destination "127.0.0.1:$APISERVER_PORT"

  log "starting containerd $CONTAINERD_VERSION"
  PATH=$CONTAINERD_DIR:$PATH start containerd "$CONTAINERD_DIR/containerd" --config "$CLUSTER_DIR/containerd/config.toml"
  wait_for "'$CONTAINERD_DIR/ctr' --address '$CLUSTER_DIR/containerd/containerd.sock' version" 30 \
    || die "containerd did not start; see $CLUSTER_DIR/logs/containerd.log"
  node_load_images

  log "starting the kubelet (node $NODE_NAME) and kube-proxy"
  start kubelet "$KUBE_BIN" kubelet --config "$CLUSTER_DIR/kubelet/config.yaml" \
    --kubeconfig "$CLUSTER_DIR/node.kubeconfig" --root-dir "$CLUSTER_DIR/kubelet/root" \
    --hostname-override "$NODE_NAME" --node-ip "$BRIDGE_IP" \
    --node-labels "cogo.xyz/node=real,type=real" --v 1
  start kube-proxy "$KUBE_BIN" kube-proxy --config "$CLUSTER_DIR/kube-proxy.yaml"
  wait_for "[[ \$(kube kubectl --kubeconfig '$KUBECONFIG_OUT' get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}') == True ]]" 90 \
    || die "the node did not become Ready; see $CLUSTER_DIR/logs/kubelet.log"

  log "starting cluster DNS (CoreDNS $COREDNS_VERSION at $CLUSTER_DNS)"
  sed "s/COREDNS_TAG/${COREDNS_VERSION#v}/" "$here/coredns.yaml" | kube kubectl --kubeconfig "$KUBECONFIG_OUT" apply -f - >/dev/null
  kube kubectl --kubeconfig "$KUBECONFIG_OUT" -n kube-system rollout status deployment/coredns --timeout=120s >/dev/null \
    || die "CoreDNS did not become ready; see kubectl -n kube-system describe pods -l k8s-app=kube-dns"
}
