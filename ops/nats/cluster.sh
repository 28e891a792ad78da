#!/usr/bin/env bash
# Runs the 3-node NATS cluster of cluster-a.conf, cluster-b.conf and cluster-c.conf
# on this machine, with the JetStream stores under DIR (default /tmp/cauce-nats).
# Ctrl-C stops all three.
#
#   ops/nats/cluster.sh [DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# the configs include permissions.conf: each cauce role's user needs its password
for role in GATEWAY RETRIEVAL INFERENCE INGEST OPERATOR; do
    var="CAUCE_NATS_${role}_PASSWORD"
    if [ -z "${!var:-}" ]; then
        echo "cluster.sh: set $var (and the other CAUCE_NATS_*_PASSWORD variables): the servers require a login per cauce role" >&2
        exit 2
    fi
done
dir=${1:-/tmp/cauce-nats}
pids=()
stop() {
    kill "${pids[@]}" 2>/dev/null || true
    wait
}
trap stop INT TERM EXIT
for node in a b c; do
    mkdir -p "$dir/cluster-$node"
    nats-server -c "$here/cluster-$node.conf" -sd "$dir/cluster-$node" &
    pids+=("$!")
done
echo "cauce NATS cluster: nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224 (stores in $dir)"
wait
