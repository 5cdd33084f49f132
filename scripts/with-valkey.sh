#!/usr/bin/env bash
# Runs a command with a throwaway valkey-server: a free loopback port, its own temp dir, no
# persistence; stopped when the command ends, fails or is interrupted.
#
#   scripts/with-valkey.sh [valkey-server args ...] -- command [args ...]
#
# The command sees VALKEY_HOST=127.0.0.1 and VALKEY_PORT=<port>. Exits with the command's status.
set -euo pipefail

server_args=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do server_args+=("$1"); shift; done
[ "${1:-}" = "--" ] || { echo "usage: $0 [server args] -- command [args]" >&2; exit 2; }
shift
[ $# -gt 0 ] || { echo "usage: $0 [server args] -- command [args]" >&2; exit 2; }

command -v valkey-server >/dev/null || "$(dirname "$0")/install-deps.sh"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir=$(mktemp -d -t hicache-valkey.XXXXXX)
valkey-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
  --logfile "$dir/valkey.log" --protected-mode no "${server_args[@]}" &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

for _ in $(seq 1 200); do
  if valkey-cli -p "$port" ${VALKEY_PASSWORD:+--no-auth-warning -a "$VALKEY_PASSWORD"} ping >/dev/null 2>&1; then break; fi
  kill -0 "$pid" 2>/dev/null || { echo "valkey-server failed to start:" >&2; cat "$dir/valkey.log" >&2; exit 1; }
  sleep 0.05
done

export VALKEY_HOST=127.0.0.1 VALKEY_PORT="$port"
set +e
"$@"
status=$?
exit $status
