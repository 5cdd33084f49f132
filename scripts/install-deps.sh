#!/usr/bin/env bash
# Installs what building and testing hicache-valkey needs on a Debian bookworm machine:
# valkey-server/valkey-tools 8.x from bookworm-backports (the suite is added for the mirror the
# machine already uses), cmake, pkg-config, valgrind, g++, shellcheck; and cargo-nextest (the
# runner scripts/test.sh uses for the cargo tests, for its JUnit results) with `cargo install`.
# Idempotent: does nothing when everything is present. Needs root (or sudo) only when a Debian
# package is missing. openssl (the command) makes the TLS tests' throwaway certificates.
set -euo pipefail

need=()
command -v valkey-server >/dev/null 2>&1 || need+=(valkey-server)
command -v valkey-benchmark >/dev/null 2>&1 || need+=(valkey-tools)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
# the C and Python TLS tests and `bench --transports` make throwaway certificates with it
command -v openssl >/dev/null 2>&1 || need+=(openssl)

if command -v cargo >/dev/null 2>&1 && ! cargo nextest --version >/dev/null 2>&1; then
  echo "install-deps: cargo install --locked cargo-nextest" >&2
  cargo install --locked cargo-nextest >&2
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

echo "install-deps: installing ${need[*]}" >&2
# valkey 8.x lives in bookworm-backports; add that suite for the mirror already configured.
if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  # the first non-security mirror from a "URIs:" (deb822) or "deb" (one-line) entry; comments skipped
  mirror=$(grep -rhE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
           | grep -oE 'https?://[^ ]+' | grep -v security | grep -E '/debian/?$' | head -n1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  echo "deb ${mirror%/} bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
fi
$SUDO apt-get update -qq
valkey_pkgs=() other=()
for p in "${need[@]}"; do
  case "$p" in valkey-*) valkey_pkgs+=("$p");; *) other+=("$p");; esac
done
export DEBIAN_FRONTEND=noninteractive
if [ ${#valkey_pkgs[@]} -gt 0 ]; then
  $SUDO apt-get install -y -qq -t bookworm-backports "${valkey_pkgs[@]}" >/dev/null
  # the package starts a system service on :6379 where systemd runs; tests never use it.
fi
if [ ${#other[@]} -gt 0 ]; then
  $SUDO apt-get install -y -qq "${other[@]}" >/dev/null
fi
valkey-server --version >&2
