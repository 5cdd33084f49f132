#!/usr/bin/env bash
# Checks that an installed hicache_valkey (scripts/install.sh PREFIX) tells a static link the
# system libraries rustc says libhicache_valkey.a needs:
#   rustc:      `cargo rustc --release --lib -- --print native-static-libs` (its note line)
#   pkg-config: Libs.private of PREFIX/lib/pkgconfig/hicache_valkey.pc, as
#               `pkg-config --static --libs-only-l` gives it (minus -lhicache_valkey)
#   CMake:      INTERFACE_LINK_LIBRARIES of hicache_valkey::hicache_valkey_static, read through
#               find_package() in a throwaway project (Threads::Threads stands for pthread,
#               which is what CMake's Threads package is for)
# The three must name the same libraries in the same order; -lc, which every C link has, is
# left out of rustc's list. Prints the three lists and exits 1 when they differ.
#
#   scripts/check-link-line.sh PREFIX [WORKDIR]
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 PREFIX [WORKDIR]" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=$(cd "$1" && pwd)
work=${2:-$(mktemp -d -t hicache-valkey-linkline.XXXXXX)}
mkdir -p "$work"

# "-lfoo -lbar" / "foo;bar" -> one name a line
names_of_flags() { tr ' ' '\n' | sed -n 's/^-l//p'; }

note=$(cd "$repo" && cargo rustc --release --lib -q -- --print native-static-libs 2>&1 |
       sed -n 's/.*native-static-libs: //p' | tail -n1)
[ -n "$note" ] || { echo "check-link-line.sh: rustc printed no native-static-libs line" >&2; exit 1; }
rustc_libs=$(names_of_flags <<<"$note" | grep -vx c)

pc_libs=$(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --static --libs-only-l hicache_valkey |
          names_of_flags | grep -vx hicache_valkey)

cat >"$work/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.18)
project(hicache_valkey_link_line C)
find_package(hicache_valkey CONFIG REQUIRED)
get_target_property(libs hicache_valkey::hicache_valkey_static INTERFACE_LINK_LIBRARIES)
file(WRITE "${CMAKE_BINARY_DIR}/interface_link_libraries.txt" "${libs}")
CMAKE
cmake -S "$work" -B "$work/build" -DCMAKE_PREFIX_PATH="$prefix" >"$work/cmake.log" 2>&1 ||
  { cat "$work/cmake.log" >&2; echo "check-link-line.sh: find_package(hicache_valkey) failed" >&2; exit 1; }
cmake_libs=$(tr ';' '\n' <"$work/build/interface_link_libraries.txt" | sed 's/^Threads::Threads$/pthread/' | grep -v '^$')

oneline() { tr '\n' ' ' <<<"$1"; echo; }
echo "rustc native-static-libs (without c):  $(oneline "$rustc_libs")"
echo "pkg-config Libs.private:               $(oneline "$pc_libs")"
echo "CMake static INTERFACE_LINK_LIBRARIES: $(oneline "$cmake_libs")"
status=0
if [ "$pc_libs" != "$rustc_libs" ]; then
  echo "check-link-line.sh: cmake/hicache_valkey.pc.in (Libs.private) differs from what rustc prints" >&2
  status=1
fi
if [ "$cmake_libs" != "$rustc_libs" ]; then
  echo "check-link-line.sh: cmake/hicache_valkeyConfig.cmake.in (the static target) differs from what rustc prints" >&2
  status=1
fi
[ "$status" -ne 0 ] || echo "check-link-line.sh: the pkg-config file and the CMake package match rustc"
exit "$status"
