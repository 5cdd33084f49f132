#!/usr/bin/env bash
# Runs a command against a throwaway Valkey Cluster: N primaries (default 3) and R replicas each
# (default 0), every node on free loopback ports (client and cluster bus) with its own temp dir,
# no persistence; all nodes stopped when the command ends, fails or is interrupted.
#
#   scripts/with-valkey-cluster.sh [-n PRIMARIES] [-r REPLICAS] -- command [args ...]
#
# The command sees VALKEY_HOST=127.0.0.1 and VALKEY_PORT=<port of one node> (the library finds
# the others) and VALKEY_CLUSTER_PORTS="<all ports>". Exits with the command's status.
# Every node must answer as itself (scripts/lib-valkey.sh; a taken port or bus port is replaced
# by a new one) and every node must report cluster_state:ok within 20 s; otherwise the command
# does not run: the script prints what failed, with the nodes' log tails, and exits 1.
set -euo pipefail

usage() { echo "usage: $0 [-n PRIMARIES] [-r REPLICAS] -- command [args]" >&2; exit 2; }
primaries=3 replicas=0
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case "$1" in
    -n) [ $# -ge 2 ] || usage; primaries=$2; shift 2;;
    -r) [ $# -ge 2 ] || usage; replicas=$2; shift 2;;
    *) usage;;
  esac
done
{ [ "${1:-}" = "--" ] && [ $# -gt 1 ]; } || usage
shift

here=$(cd "$(dirname "$0")" && pwd)
command -v valkey-server >/dev/null || "$here/install-deps.sh"
# shellcheck source=scripts/lib-valkey.sh
. "$here/lib-valkey.sh"

count=$((primaries * (1 + replicas)))
root=$(mktemp -d -t hicache-valkey-cluster.XXXXXX)
pids=() ports=()
VALKEY_STARTING_PID=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  local pid
  for pid in "${pids[@]}" ${VALKEY_STARTING_PID:+"$VALKEY_STARTING_PID"}; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}" ${VALKEY_STARTING_PID:+"$VALKEY_STARTING_PID"}; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$root"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
  local i
  echo "with-valkey-cluster.sh: $1; not running the command" >&2
  for i in $(seq 0 $((${#ports[@]} - 1))); do
    echo "node $i (port ${ports[$i]}):" >&2
    valkey_log_tail "$root/node$i" >&2
  done
  exit 1
}

for i in $(seq 0 $((count - 1))); do
  valkey_start_node "$root/node$i" --cluster-enabled yes --cluster-port @BUS@ \
    --cluster-config-file "$root/node$i/nodes.conf" --cluster-node-timeout 2000 ||
    fail "node $i did not start"
  pids+=("$NODE_PID")
  ports+=("$NODE_PORT")
  VALKEY_STARTING_PID=""
done

addrs=(); for p in "${ports[@]}"; do addrs+=("127.0.0.1:$p"); done
if ! valkey-cli --cluster create "${addrs[@]}" --cluster-replicas "$replicas" --cluster-yes \
     >"$root/create.log" 2>&1; then
  cat "$root/create.log" >&2
  fail "valkey-cli --cluster create failed"
fi
deadline=$((SECONDS + 20))
for p in "${ports[@]}"; do
  until valkey-cli -p "$p" cluster info 2>/dev/null | grep -q "cluster_state:ok"; do
    [ "$SECONDS" -lt "$deadline" ] || fail "node on port $p did not reach cluster_state:ok in 20 s"
    sleep 0.05
  done
done

export VALKEY_HOST=127.0.0.1 VALKEY_PORT="${ports[0]}" VALKEY_CLUSTER_PORTS="${ports[*]}"
set +e
"$@"
exit $?
