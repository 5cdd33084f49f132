#!/usr/bin/env bash
# End-to-end benchmark: installs the dependencies, builds the release CLI, starts a throwaway
# loopback valkey-server (scripts/with-valkey.sh) and runs `hicache-valkey bench` against it,
# side by side with valkey-benchmark and the valkey-py peer script (bench/peer_valkey_py.py).
# Writes docs/bench.json and docs/bench.svg unless told otherwise (--quick: target/bench-quick.*).
#
#   scripts/bench.sh [--quick] [other `hicache-valkey bench` options]
#
# The valkey-py peer needs a python with `valkey` and `numpy`: $HICACHE_VALKEY_PEER_PYTHON if
# set, else the SGLang test venv (scripts/sglang-venv.sh) when it is already built, else a small
# venv of its own (valkey + numpy only) under the cache directory.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release --quiet -p hicache-valkey-cli

cache=${HICACHE_VALKEY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hicache-valkey}
sglang_venv="$cache/sglang-0.5.23-torch-2.14.1-tf-5.19.0-v1"
peer_python=${HICACHE_VALKEY_PEER_PYTHON:-}
if [ -z "$peer_python" ] && [ -f "$sglang_venv/.complete" ]; then
  peer_python=$(scripts/sglang-venv.sh)
fi
if [ -z "$peer_python" ]; then
  venv="$cache/bench-peer-v1"
  if [ ! -f "$venv/.complete" ]; then
    echo "bench.sh: creating $venv (valkey + numpy for the peer script)" >&2
    rm -rf "$venv"
    mkdir -p "$cache"
    if python3 -m venv "$venv" && "$venv/bin/python" -m pip install -q --disable-pip-version-check valkey numpy >&2; then
      touch "$venv/.complete"
    else
      echo "bench.sh: cannot build the peer venv; the valkey-py reference is skipped" >&2
    fi
  fi
  [ -f "$venv/.complete" ] && peer_python="$venv/bin/python"
fi

json=docs/bench.json svg=docs/bench.svg
for a in "$@"; do
  case "$a" in
    --quick) json=target/bench-quick.json svg=target/bench-quick.svg ;;
    --json|--json=*) json="" ;;
    --plot|--plot=*) svg="" ;;
  esac
done
args=()
[ -n "$json" ] && args+=(--json "$json")
[ -n "$svg" ] && args+=(--plot "$svg")
if [ -n "$peer_python" ]; then args+=(--peer-python "$peer_python"); else args+=(--no-peer); fi
mkdir -p docs

# Against the throwaway server only (no password, db 0), whatever the caller's environment says.
unset VALKEY_URL VALKEY_DB VALKEY_PASSWORD VALKEY_USERNAME
exec scripts/with-valkey.sh -- "${CARGO_TARGET_DIR:-target}/release/hicache-valkey" bench "${args[@]}" "$@"
