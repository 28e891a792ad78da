#!/usr/bin/env bash
# Runs the 3-node NATS cluster of cluster-a.conf, cluster-b.conf and cluster-c.conf
# on this machine, with the JetStream stores under DIR (default /tmp/cauce-nats).
# Ctrl-C stops all three.
#
#   ops/nats/cluster.sh [DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
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
