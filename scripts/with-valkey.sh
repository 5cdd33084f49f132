#!/usr/bin/env bash
# Runs a command with a throwaway valkey-server: a free loopback port, its own temp dir, no
# persistence; stopped when the command ends, fails or is interrupted.
#
#   scripts/with-valkey.sh [valkey-server args ...] -- command [args ...]
#
# The command sees VALKEY_HOST=127.0.0.1 and VALKEY_PORT=<port>. Exits with the command's status.
# The command runs only once the server answers as itself (`INFO server` reports its process id);
# a port taken by someone else is replaced by a new one (scripts/lib-valkey.sh). When no server
# can be started the command does not run: the script prints the server's log tail and exits 1.
set -euo pipefail

server_args=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do server_args+=("$1"); shift; done
[ "${1:-}" = "--" ] || { echo "usage: $0 [server args] -- command [args]" >&2; exit 2; }
shift
[ $# -gt 0 ] || { echo "usage: $0 [server args] -- command [args]" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
command -v valkey-server >/dev/null || "$here/install-deps.sh"
# shellcheck source=scripts/lib-valkey.sh
. "$here/lib-valkey.sh"

dir=$(mktemp -d -t hicache-valkey.XXXXXX)
VALKEY_STARTING_PID=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  if [ -n "$VALKEY_STARTING_PID" ]; then
    kill "$VALKEY_STARTING_PID" 2>/dev/null || true
    wait "$VALKEY_STARTING_PID" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! valkey_start_node "$dir" "${server_args[@]}"; then
  echo "with-valkey.sh: no valkey-server could be started; not running: $*" >&2
  exit 1
fi

export VALKEY_HOST=127.0.0.1 VALKEY_PORT="$NODE_PORT"
set +e
"$@"
exit $?
