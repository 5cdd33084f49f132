#!/usr/bin/env bash
# The C tests, end to end, on a fresh machine:
#   1. scripts/install-deps.sh (valkey-server, cmake, valgrind, pkg-config...)
#   2. scripts/install.sh into a fresh prefix (build/ctest/prefix)
#   3. configures and builds ctests/ twice, through find_package(hicache_valkey) only:
#      plain (gcc/cc, -O2) and with -fsanitize=address,undefined (gcc, UBSan errors fatal)
#   4. runs ctest under scripts/with-valkey.sh (a throwaway valkey-server) three ways:
#      plain, sanitized (ASAN_OPTIONS=detect_leaks=1), and the plain build under valgrind
#      memcheck (--error-exitcode=1 --leak-check=full, ctests/valgrind.supp)
#   5. compiles a small program with nothing but pkg-config (shared and static) and runs it
#   6. the C++ example examples/cpp_page_pool: configured and built against the installed
#      package with two cmake commands, run against a throwaway valkey-server; then compiled
#      with only pkg-config's flags (g++ -std=c++17) and run small
#
#   scripts/ctest.sh
# Environment: HICACHE_CTEST_DIR (default build/ctest), HICACHE_CTEST_JOBS (default 2).
# Exits non-zero if anything failed; the last line sums up all modes.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${HICACHE_CTEST_DIR:-$repo/build/ctest}
jobs=${HICACHE_CTEST_JOBS:-2}
prefix=$work/prefix
start=$SECONDS

step() { printf '\n==> %s\n' "$*"; }

step "dependencies"
"$repo/scripts/install-deps.sh"
for tool in cmake ctest gcc g++ valgrind pkg-config valkey-server cargo readelf; do
  command -v "$tool" >/dev/null 2>&1 || { echo "ctest.sh: $tool is missing" >&2; exit 1; }
done

step "install the library into a fresh prefix: $prefix"
rm -rf "$prefix"
mkdir -p "$work"
"$repo/scripts/install.sh" "$prefix"

# configure_and_build <dir> <cmake args...>; the log is kept in <dir>.log.
configure_and_build() {
  local dir=$1
  shift
  if ! { cmake -S "$repo/ctests" -B "$dir" -DCMAKE_PREFIX_PATH="$prefix" "$@" &&
         cmake --build "$dir" -j "$jobs"; } >"$dir.log" 2>&1; then
    cat "$dir.log" >&2
    echo "ctest.sh: configuring or building $dir failed (log: $dir.log)" >&2
    exit 1
  fi
  echo "built $dir"
}

step "build the tests: plain, and with ASan + UBSan"
configure_and_build "$work/plain" -DHV_MEMCHECK=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
configure_and_build "$work/asan" -DHV_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_C_COMPILER=gcc -DCMAKE_CXX_COMPILER=g++
# The sanitizer runtimes must really be in the sanitized binaries.
for lib in libasan libubsan; do
  readelf -d "$work/asan/test_basics" | grep -q "$lib" ||
    { echo "ctest.sh: $work/asan/test_basics is not linked with $lib" >&2; exit 1; }
done

passed=0
failed=0
summary=()

# run_ctest <mode> <ctest args...>: ctest under a throwaway valkey-server; counts its results.
run_ctest() {
  local mode=$1
  shift
  local log="$work/$mode.log" status=0
  step "ctest ($mode)"
  "$repo/scripts/with-valkey.sh" -- ctest --output-on-failure -j "$jobs" "$@" 2>&1 | tee "$log" || status=$?
  local line total bad
  line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n1 || true)
  if [ -z "$line" ]; then
    echo "ctest.sh: $mode: no ctest summary (status $status)" >&2
    failed=$((failed + 1))
    summary+=("$mode: ctest did not run (status $status)")
    return
  fi
  total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line")
  bad=$(sed -E 's/.*, ([0-9]+) tests? failed.*/\1/' <<<"$line")
  if [ "$total" -eq 0 ] || { [ "$status" -ne 0 ] && [ "$bad" -eq 0 ]; }; then
    bad=$((bad + 1)) # no test found, or ctest failed outside the tests
  fi
  passed=$((passed + total - bad))
  failed=$((failed + bad))
  summary+=("$mode: $line")
}

run_ctest plain --test-dir "$work/plain" -L plain
ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  run_ctest asan+ubsan --test-dir "$work/asan"
run_ctest valgrind --test-dir "$work/plain" -L memcheck

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
if [ "$pkg_status" -eq 0 ]; then
  passed=$((passed + 2))
  summary+=("pkg-config: shared and static builds compiled and ran")
else
  failed=$((failed + 2))
  summary+=("pkg-config: FAILED (status $pkg_status)")
fi

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
if [ "$cpp_status" -eq 0 ]; then
  passed=$((passed + 2))
  summary+=("C++ example: cpp_page_pool built with find_package and with pkg-config, ran, all good")
else
  failed=$((failed + 2))
  summary+=("C++ example: FAILED (status $cpp_status)")
fi

step "summary ($((SECONDS - start)) s)"
printf '  %s\n' "${summary[@]}"
echo "ctests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
