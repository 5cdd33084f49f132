#!/usr/bin/env bash
# Runs the Python package's tests (python_ctypes/tests) on a fresh machine, as one command:
#   1. scripts/install-deps.sh (valkey-server etc.), `cargo build --release` (libhicache_valkey.so);
#   2. the cached venv with the real SGLang 0.5.23 (scripts/sglang-venv.sh); when the package
#      registry cannot be reached (exit 3), a small venv with numpy + pytest instead, where the
#      SGLang tests skip;
#   3. `pip install ./python_ctypes` into it (the build copies target/release/libhicache_valkey.so
#      into the package);
#   4. pytest, from outside python_ctypes so the installed package is what gets imported.
# Extra arguments go to pytest. Exits non-zero on any failure, and when pytest ran no test.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

"$root/scripts/install-deps.sh"
cargo build --release
lib="$root/target/release/libhicache_valkey.so"
[ -f "$lib" ] || { echo "pytest.sh: $lib was not built" >&2; exit 1; }

require_sglang=1
set +e
py=$("$root/scripts/sglang-venv.sh")
rc=$?
set -e
if [ $rc -eq 3 ]; then
  echo "pytest.sh: the package registry cannot be reached; using a small venv without SGLang" \
       "(the SGLang tests will be skipped)" >&2
  require_sglang=0
  cache=${HICACHE_VALKEY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hicache-valkey}
  venv="$cache/small-numpy-pytest-v1"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv --system-site-packages "$venv"
  fi
  py="$venv/bin/python"
  if ! "$py" -c 'import numpy, pytest' 2>/dev/null; then
    "$py" -m pip install -q --disable-pip-version-check numpy pytest >&2 \
      || { { apt-get update -qq && apt-get install -y -qq python3-numpy python3-pytest; } >/dev/null 2>&1 || true; }
  fi
  "$py" -c 'import numpy, pytest' \
    || { echo "pytest.sh: no numpy/pytest available for the fallback venv" >&2; exit 1; }
elif [ $rc -ne 0 ]; then
  echo "pytest.sh: scripts/sglang-venv.sh failed ($rc)" >&2
  exit $rc
fi
echo "pytest.sh: python $py" >&2

# A fresh build each time, so the package always carries the library just built.
rm -rf "$root/python_ctypes/build" "$root/python_ctypes/"*.egg-info
pip_args=(install -q --disable-pip-version-check --force-reinstall --no-deps)
if "$py" -c 'import setuptools' 2>/dev/null; then pip_args+=(--no-build-isolation); fi
HICACHE_VALKEY_LIB="$lib" "$py" -m pip "${pip_args[@]}" "$root/python_ctypes" >&2
rm -rf "$root/python_ctypes/build" "$root/python_ctypes/"*.egg-info

# The installed package (and its bundled library) is what the tests import.
unset HICACHE_VALKEY_LIB
export HICACHE_VALKEY_REQUIRE_SGLANG=$require_sglang
set +e
"$py" -m pytest "$root/python_ctypes/tests" -p no:cacheprovider -rs "$@"
status=$?
set -e
if [ $status -eq 5 ]; then
  echo "pytest.sh: pytest collected no tests" >&2
  exit 1
fi
exit $status
