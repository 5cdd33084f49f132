#!/usr/bin/env bash
# Runs the Python package's tests (python_ctypes/tests) on a fresh machine, as one command:
#   1. scripts/install-deps.sh (valkey-server etc.);
#   2. the cached venv with the real SGLang 0.5.23 (scripts/sglang-venv.sh); when the package
#      registry cannot be reached (exit 3), a small venv with numpy + pytest instead, where the
#      SGLang tests skip;
#   3. `pip install ./python_ctypes` into it: the package's build backend runs
#      `cargo build --release --lib` and puts libhicache_valkey.so in the wheel;
#   4. pytest, from outside python_ctypes so the installed package is what gets imported.
# Extra arguments go to pytest. Exits non-zero on any failure, and when pytest ran no test.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

"$root/scripts/install-deps.sh"

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

# The plain install, as a user runs it (the build compiles the library); reinstalled each time
# so the package carries the library of this tree. HICACHE_VALKEY_LIB would make the build
# bundle that file instead, and the tests load the bundled copy: unset it.
unset HICACHE_VALKEY_LIB
rm -rf "$root/python_ctypes/build" "$root/python_ctypes/"*.egg-info
pip_args=(install -q --disable-pip-version-check --force-reinstall --no-deps)
# Offline, build in this venv when it has the build backend's requirements (setuptools with
# bdist_wheel) instead of fetching them into an isolated one.
if "$py" -c 'import setuptools.command.bdist_wheel' 2>/dev/null \
   || "$py" -c 'import setuptools, wheel.bdist_wheel' 2>/dev/null; then
  pip_args+=(--no-build-isolation)
fi
echo "pytest.sh: pip install ./python_ctypes (compiles the Rust library: minutes on a fresh clone)" >&2
"$py" -m pip "${pip_args[@]}" "$root/python_ctypes" >&2
rm -rf "$root/python_ctypes/build" "$root/python_ctypes/"*.egg-info
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
