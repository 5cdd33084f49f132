#!/usr/bin/env bash
# The C tests, end to end, on a fresh machine:
#   1. scripts/install-deps.sh (valkey-server, cmake, valgrind, pkg-config...)
#   2. scripts/install.sh into a fresh prefix (build/ctest/prefix), and
#      scripts/check-link-line.sh: its pkg-config file and CMake package link what rustc says
#   3. configures and builds ctests/ twice, through find_package(hicache_valkey) only:
#      plain (gcc/cc, -O2) and with -fsanitize=address,undefined (gcc, UBSan errors fatal)
#   4. runs ctest under scripts/with-valkey.sh (a throwaway valkey-server) three ways:
#      plain, sanitized (ASAN_OPTIONS=detect_leaks=1), and the plain build under valgrind
#      memcheck (--error-exitcode=1 --leak-check=full, ctests/valgrind.supp)
#   5. compiles a small program with nothing but pkg-config (shared and static) and runs it
#   6. the C++ example examples/cpp_page_pool: configured and built against the installed
#      package with two cmake commands, run against a throwaway valkey-server; then compiled
#      with only pkg-config's flags (g++ -std=c++17) and run small
# A failing step does not stop the others (only what needs its result is skipped, and counted
# as failed). Every result is a JUnit file in the results directory: ctest's own
# (--output-junit) for the ctest runs, one test case per check for the rest.
#
#   scripts/ctest.sh
# Environment: HICACHE_CTEST_DIR (default build/ctest), HICACHE_CTEST_JOBS (default 2),
# HICACHE_CTEST_JUNIT_DIR (default $HICACHE_CTEST_DIR/junit; emptied first).
# Exits non-zero if anything failed; the last line sums up all of it from the JUnit files:
# "ctests: N passed, M failed".
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${HICACHE_CTEST_DIR:-$repo/build/ctest}
jobs=${HICACHE_CTEST_JOBS:-2}
junit=${HICACHE_CTEST_JUNIT_DIR:-$work/junit}
prefix=$work/prefix
start=$SECONDS
# shellcheck source=scripts/lib-junit.sh
. "$repo/scripts/lib-junit.sh"

step() { printf '\n==> %s\n' "$*"; }
summary=()
# check NAME STATUS: records one check as a JUnit test case.
check() {
  junit_case "$junit/$(printf %s "$1" | tr -c 'A-Za-z0-9_.+-' '_').xml" ctest.sh "$1" "$2"
  if [ "$2" -eq 0 ]; then summary+=("$1: ok"); else summary+=("$1: FAILED (status $2)"); fi
}
finish() {
  local passed failed skipped
  step "summary ($((SECONDS - start)) s)"
  printf '  %s\n' "${summary[@]}"
  read -r passed failed skipped < <(junit_count "$junit"/*.xml)
  [ "$skipped" -eq 0 ] || echo "  ($skipped skipped)"
  echo "ctests: $passed passed, $failed failed"
  if [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]; then exit 0; fi
  exit 1
}

rm -rf "$junit"
mkdir -p "$junit" "$work"

step "dependencies"
"$repo/scripts/install-deps.sh"
for tool in cmake ctest gcc g++ valgrind pkg-config valkey-server cargo readelf; do
  command -v "$tool" >/dev/null 2>&1 || { echo "ctest.sh: $tool is missing" >&2; exit 1; }
done

step "install the library into a fresh prefix: $prefix"
rm -rf "$prefix"
status=0
"$repo/scripts/install.sh" "$prefix" || status=$?
check "install.sh" "$status"
[ "$status" -eq 0 ] || finish # nothing else can run without the installed package

step "link line: rustc's native-static-libs = pkg-config Libs.private = CMake static target"
status=0
"$repo/scripts/check-link-line.sh" "$prefix" "$work/link-line" || status=$?
check "link line of the static library" "$status"

# configure_and_build <dir> <cmake args...>; the log is kept in <dir>.log. Returns non-zero on failure.
configure_and_build() {
  local dir=$1
  shift
  if ! { cmake -S "$repo/ctests" -B "$dir" -DCMAKE_PREFIX_PATH="$prefix" "$@" &&
         cmake --build "$dir" -j "$jobs"; } >"$dir.log" 2>&1; then
    cat "$dir.log" >&2
    echo "ctest.sh: configuring or building $dir failed (log: $dir.log)" >&2
    return 1
  fi
  echo "built $dir"
}

step "build the tests: plain, and with ASan + UBSan"
plain_built=0 asan_built=0
configure_and_build "$work/plain" -DHV_MEMCHECK=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo || plain_built=$?
check "build plain (+ memcheck)" "$plain_built"
configure_and_build "$work/asan" -DHV_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_C_COMPILER=gcc -DCMAKE_CXX_COMPILER=g++ || asan_built=$?
check "build asan+ubsan" "$asan_built"
if [ "$asan_built" -eq 0 ]; then
  # The sanitizer runtimes must really be in the sanitized binaries.
  status=0
  for lib in libasan libubsan; do
    readelf -d "$work/asan/test_basics" | grep -q "$lib" ||
      { echo "ctest.sh: $work/asan/test_basics is not linked with $lib" >&2; status=1; }
  done
  check "asan+ubsan runtimes linked" "$status"
fi

# run_ctest <mode> <ctest args...>: ctest under a throwaway valkey-server, its results in
# $junit/ctest-<mode>.xml. A run that fails outside its tests (no server, ctest itself failed)
# or that ran no test is one more failed case.
run_ctest() {
  local mode=$1
  shift
  local log="$work/$mode.log" xml="$junit/ctest-$mode.xml" status=0 passed failed skipped
  step "ctest ($mode)"
  # The server also listens on a Unix socket, for test_unix_socket (a short path: sun_path
  # holds 108 bytes).
  local sockdir
  sockdir=$(mktemp -d -t hv-sock.XXXXXX)
  HV_TEST_SOCKET="$sockdir/valkey.sock" "$repo/scripts/with-valkey.sh" --unixsocket "$sockdir/valkey.sock" --unixsocketperm 700 \
    -- ctest --output-on-failure --output-junit "$xml" -j "$jobs" "$@" 2>&1 |
    tee "$log" || status=$?
  rm -rf "$sockdir"
  if [ ! -s "$xml" ]; then
    rm -f "$xml"
    check "ctest $mode (no results)" "$((status == 0 ? 1 : status))"
    return
  fi
  read -r passed failed skipped < <(junit_count "$xml")
  summary+=("ctest $mode: $passed passed, $failed failed, $skipped skipped (status $status)")
  if [ "$passed" -eq 0 ] || { [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; }; then
    check "ctest $mode (ran no test, or failed outside its tests)" "$((status == 0 ? 1 : status))"
  fi
}

if [ "$plain_built" -eq 0 ]; then
  run_ctest plain --test-dir "$work/plain" -L plain
fi
if [ "$asan_built" -eq 0 ]; then
  ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    run_ctest asan+ubsan --test-dir "$work/asan"
fi
if [ "$plain_built" -eq 0 ]; then
  run_ctest valgrind --test-dir "$work/plain" -L memcheck
fi

step "pkg-config: compile and run a program with only pkg-config's flags"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
cc=${CC:-cc}
cflags=(-std=c11 -Wall -Wextra -Werror -pedantic -O2)
# (set -e does not apply inside a function called from `||`: every step says `|| return`.)
pkg_config_check() {
  local libdir
  echo "pkg-config --modversion hicache_valkey: $(pkg-config --modversion hicache_valkey)"
  echo "pkg-config --cflags --libs hicache_valkey: $(pkg-config --cflags --libs hicache_valkey)" || return
  libdir=$(pkg-config --variable=libdir hicache_valkey) || return
  # shared: the program records the SONAME
  # shellcheck disable=SC2046 # pkg-config output is meant to be split
  "$cc" "${cflags[@]}" "$repo/ctests/pkgconfig_smoke.c" -o "$work/pkgconfig_smoke" \
    $(pkg-config --cflags --libs hicache_valkey) -Wl,-rpath,"$libdir" || return
  readelf -d "$work/pkgconfig_smoke" | grep -q 'NEEDED.*\[libhicache_valkey\.so\.0\]' ||
    { echo "pkgconfig_smoke does not record libhicache_valkey.so.0" >&2; return 1; }
  "$repo/scripts/with-valkey.sh" -- "$work/pkgconfig_smoke" || return
  # static: libhicache_valkey.a plus Libs.private
  # shellcheck disable=SC2046
  "$cc" "${cflags[@]}" "$repo/ctests/pkgconfig_smoke.c" -o "$work/pkgconfig_smoke_static" \
    $(pkg-config --cflags hicache_valkey) \
    $(pkg-config --static --libs hicache_valkey | sed 's/-lhicache_valkey\b/-l:libhicache_valkey.a/') || return
  if readelf -d "$work/pkgconfig_smoke_static" | grep -q 'libhicache_valkey'; then
    echo "pkgconfig_smoke_static depends on the shared library" >&2
    return 1
  fi
  "$repo/scripts/with-valkey.sh" -- "$work/pkgconfig_smoke_static" || return
}
pkg_status=0
pkg_config_check || pkg_status=$?
check "pkg-config: shared and static programs compile and run" "$pkg_status"

step "C++ example: examples/cpp_page_pool against the installed package"
# (set -e does not apply inside a function called from `||`: every step says `|| return`.)
cpp_example_check() {
  local src="$repo/examples/cpp_page_pool" build="$work/cpp_page_pool" cxx=${CXX:-g++}
  rm -rf "$build"
  # The two commands a user runs (docs/cpp.md), then the program under a throwaway server.
  { cmake -S "$src" -B "$build" -DCMAKE_PREFIX_PATH="$prefix" &&
    cmake --build "$build" -j "$jobs"; } >"$build.log" 2>&1 ||
    { cat "$build.log" >&2; echo "cpp_page_pool: configuring or building failed" >&2; return 1; }
  "$repo/scripts/with-valkey.sh" -- "$build/cpp_page_pool" | tee "$build.out" || return
  grep -q '^cpp_page_pool: all good$' "$build.out" || { echo "cpp_page_pool did not say all good" >&2; return 1; }
  # The same source with nothing but pkg-config's flags.
  # shellcheck disable=SC2046 # pkg-config output is meant to be split
  "$cxx" -std=c++17 -Wall -Wextra -Werror -pedantic -O2 -pthread "$src/main.cpp" -o "$build/cpp_page_pool_pkgconfig" \
    $(pkg-config --cflags --libs hicache_valkey) -Wl,-rpath,"$(pkg-config --variable=libdir hicache_valkey)" || return
  "$repo/scripts/with-valkey.sh" -- "$build/cpp_page_pool_pkgconfig" --pages 8 --layers 4 --model cpp-page-pool-pkgconfig \
    >"$build/pkgconfig.out" || { cat "$build/pkgconfig.out"; return 1; }
  grep -q '^cpp_page_pool: all good$' "$build/pkgconfig.out" || { cat "$build/pkgconfig.out"; return 1; }
  echo "cpp_page_pool built with pkg-config only: all good"
}
cpp_status=0
cpp_example_check || cpp_status=$?
check "C++ example cpp_page_pool: find_package and pkg-config builds run" "$cpp_status"

finish
