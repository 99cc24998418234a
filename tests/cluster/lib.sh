# Settings shared by the local control plane scripts (build, up, down). Sourced, not run.
# Everything listens on 127.0.0.1; ports can be moved with COGO_CLUSTER_PORT_BASE.

K8S_VERSION=1.36.3
KWOK_VERSION=v0.7.0
COREDNS_VERSION=v1.12.4
KNP_VERSION=v0.8.0
CACHE=${CACHE:-$HOME/.cache/cogo}
BIN=${COGO_TOOLS_DIR:-$CACHE/bin}
KUBE_BIN=$CACHE/k8s-v$K8S_VERSION/kube
COREDNS_BIN=$CACHE/coredns-$COREDNS_VERSION/coredns
KNP_BIN=$CACHE/kube-network-policies-$KNP_VERSION/kube-network-policies
CLUSTER_DIR=${COGO_CLUSTER_DIR:-${TMPDIR:-/tmp}/cogo-cluster-$(id -u)}
KUBECONFIG_OUT=$CLUSTER_DIR/kubeconfig

PORT_BASE=${COGO_CLUSTER_PORT_BASE:-26000}
ETCD_PORT=$((PORT_BASE + 379))
ETCD_PEER_PORT=$((PORT_BASE + 380))
APISERVER_PORT=$((PORT_BASE + 443))
CONTROLLER_MANAGER_PORT=$((PORT_BASE + 257))
SCHEDULER_PORT=$((PORT_BASE + 259))
KWOK_PORT=$((PORT_BASE + 247))
SERVICE_CIDR=10.96.0.0/16

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

# Waits up to $2 seconds for command $1 (a string) to succeed.
wait_for() {
  local what=$1 timeout=$2 i
  for ((i = 0; i < timeout * 5; i++)); do
    if eval "$what" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  return 1
}
