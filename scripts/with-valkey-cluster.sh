#!/usr/bin/env bash
# Runs a command against a throwaway Valkey Cluster: N primaries (default 3) and R replicas each
# (default 0), every node on free loopback ports (client and cluster bus) with its own temp dir,
# no persistence; all nodes stopped when the command ends, fails or is interrupted.
#
#   scripts/with-valkey-cluster.sh [-n PRIMARIES] [-r REPLICAS] -- command [args ...]
#
# The command sees VALKEY_HOST=127.0.0.1 and VALKEY_PORT=<port of one node> (the library finds
# the others) and VALKEY_CLUSTER_PORTS="<all ports>". Exits with the command's status.
set -euo pipefail

primaries=3 replicas=0
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case "$1" in
    -n) primaries=$2; shift 2;;
    -r) replicas=$2; shift 2;;
    *) echo "usage: $0 [-n PRIMARIES] [-r REPLICAS] -- command [args]" >&2; exit 2;;
  esac
done
[ "${1:-}" = "--" ] && [ $# -gt 1 ] || { echo "usage: $0 [-n PRIMARIES] [-r REPLICAS] -- command [args]" >&2; exit 2; }
shift

command -v valkey-server >/dev/null || "$(dirname "$0")/install-deps.sh"

count=$((primaries * (1 + replicas)))
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}
read -r -a ports <<<"$(free_ports "$count")"
read -r -a buses <<<"$(free_ports "$count")"
root=$(mktemp -d -t hicache-valkey-cluster.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$root"
}
trap cleanup EXIT INT TERM

for i in $(seq 0 $((count - 1))); do
  dir="$root/node$i"; mkdir -p "$dir"
  valkey-server --port "${ports[$i]}" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    --logfile "$dir/valkey.log" --protected-mode no --cluster-enabled yes \
    --cluster-port "${buses[$i]}" --cluster-config-file "$dir/nodes.conf" --cluster-node-timeout 2000 &
  pids+=($!)
done
for i in $(seq 0 $((count - 1))); do
  for _ in $(seq 1 200); do
    valkey-cli -p "${ports[$i]}" ping >/dev/null 2>&1 && break
    sleep 0.05
  done
done
addrs=(); for p in "${ports[@]}"; do addrs+=("127.0.0.1:$p"); done
valkey-cli --cluster create "${addrs[@]}" --cluster-replicas "$replicas" --cluster-yes >"$root/create.log" 2>&1 \
  || { echo "cluster create failed:" >&2; cat "$root/create.log" >&2; exit 1; }
for p in "${ports[@]}"; do
  for _ in $(seq 1 400); do
    valkey-cli -p "$p" cluster info 2>/dev/null | grep -q "cluster_state:ok" && break
    sleep 0.05
  done
done

export VALKEY_HOST=127.0.0.1 VALKEY_PORT="${ports[0]}" VALKEY_CLUSTER_PORTS="${ports[*]}"
set +e
"$@"
exit $?
