#!/usr/bin/env bash
# Regenerates include/hicache_valkey.h from src/ffi with the cbindgen version pinned in Cargo.lock.
set -euo pipefail
cd "$(dirname "$0")/.."
HICACHE_VALKEY_BLESS=1 cargo test --quiet --test header >/dev/null
echo "regenerated include/hicache_valkey.h"
