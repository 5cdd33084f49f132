#!/usr/bin/env bash
# The demo, from a fresh machine: installs what is missing (scripts/install-deps.sh), builds and
# installs the library (scripts/install.sh), builds examples/demo.c against the installed CMake
# package, and runs it against a throwaway valkey-server on a free loopback port
# (scripts/with-valkey.sh), which is stopped afterwards.
#
#   scripts/demo.sh                  # PREFIX defaults to build/prefix
#   scripts/demo.sh --cluster        # the same against a throwaway 3-primary Valkey Cluster
#   scripts/demo.sh --socket         # the same over the server's Unix domain socket (VALKEY_SOCKET)
#   HICACHE_PREFIX=/opt/hv scripts/demo.sh
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=${HICACHE_PREFIX:-$repo/build/prefix}
build=$repo/build/examples
log=$repo/build/demo-build.log

step() { printf '\n==> %s\n' "$*"; }

step "checking dependencies (valkey-server, cmake, a C compiler...)"
"$repo/scripts/install-deps.sh"
command -v cargo >/dev/null 2>&1 || { echo "demo.sh: cargo is missing: install a Rust toolchain (rustup) first" >&2; exit 1; }
command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || { echo "demo.sh: no C compiler" >&2; exit 1; }

step "building and installing libhicache_valkey into $prefix"
"$repo/scripts/install.sh" "$prefix"

step "building examples/demo.c with find_package(hicache_valkey)"
mkdir -p "$repo/build"
if ! { cmake -S "$repo/examples" -B "$build" -DCMAKE_PREFIX_PATH="$prefix" && cmake --build "$build"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "demo.sh: building the demo failed (log: $log)" >&2
  exit 1
fi
echo "built $build/demo"

if [ "${1:-}" = "--cluster" ]; then
  step "starting a throwaway 3-primary Valkey Cluster and running the demo"
  "$repo/scripts/with-valkey-cluster.sh" -n 3 -- "$build/demo"
elif [ "${1:-}" = "--socket" ]; then
  step "starting a throwaway valkey-server with a Unix socket and running the demo over it"
  sockdir=$(mktemp -d -t hv-demo.XXXXXX)
  trap 'rm -rf "$sockdir"' EXIT
  VALKEY_SOCKET="$sockdir/valkey.sock" "$repo/scripts/with-valkey.sh" --unixsocket "$sockdir/valkey.sock" --unixsocketperm 700 -- "$build/demo"
else
  step "starting a throwaway valkey-server and running the demo"
  "$repo/scripts/with-valkey.sh" -- "$build/demo"
fi
