#!/usr/bin/env bash
# Builds the C library (cargo build --release --lib; the CLI binary is not needed) and installs
# it under PREFIX (default: build/prefix in the repository):
#
#   PREFIX/lib/libhicache_valkey.so.X.Y.Z, .so.X -> .so.X.Y.Z, .so -> .so.X   (SONAME .so.X)
#   PREFIX/lib/libhicache_valkey.a
#   PREFIX/include/hicache_valkey.h, hicache_valkey.hpp (the C++17 wrapper, header only)
#   PREFIX/lib/cmake/hicache_valkey/hicache_valkeyConfig.cmake (+ ConfigVersion.cmake)
#   PREFIX/lib/pkgconfig/hicache_valkey.pc
#
#   scripts/install.sh [PREFIX]
#
# The version comes from Cargo.toml; the templates from cmake/. Honours CARGO_TARGET_DIR.
# Set HICACHE_SKIP_BUILD=1 to install what target/release already holds.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=${1:-$repo/build/prefix}
case "$prefix" in /*) ;; *) prefix="$PWD/$prefix" ;; esac
case "$prefix" in *'|'*|*' '*) echo "install.sh: PREFIX may not contain '|' or spaces: $prefix" >&2; exit 1 ;; esac
target_dir=${CARGO_TARGET_DIR:-$repo/target}
case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac

# The [package] version of Cargo.toml (the first `version = "..."` line after [package]).
version=$(awk '/^\[package\]/{p=1; next} /^\[/{p=0} p && /^version *=/{gsub(/.*= *"|".*/, ""); print; exit}' "$repo/Cargo.toml")
if ! [[ "$version" =~ ^([0-9]+)\.([0-9]+)\.([0-9]+)$ ]]; then
  echo "install.sh: cannot read a X.Y.Z version from Cargo.toml (got '$version')" >&2
  exit 1
fi
major=${BASH_REMATCH[1]}
soname="libhicache_valkey.so.$major"
sizeof_void_p=$(( $(getconf LONG_BIT) / 8 ))

if [ "${HICACHE_SKIP_BUILD:-0}" != 1 ]; then
  echo "install.sh: cargo build --release --lib" >&2
  (cd "$repo" && cargo build --release --lib)
fi

so="$target_dir/release/libhicache_valkey.so"
a="$target_dir/release/libhicache_valkey.a"
header="$repo/include/hicache_valkey.h"
header_hpp="$repo/include/hicache_valkey.hpp"
for f in "$so" "$a" "$header" "$header_hpp"; do
  [ -f "$f" ] || { echo "install.sh: $f is missing" >&2; exit 1; }
done
# build.rs sets the SONAME; refuse to install a library without it (the symlinks would lie).
if command -v readelf >/dev/null 2>&1; then
  got=$(readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  if [ "$got" != "$soname" ]; then
    echo "install.sh: $so has SONAME '${got:-none}', expected $soname (is build.rs there?)" >&2
    exit 1
  fi
fi

echo "install.sh: installing hicache_valkey $version into $prefix" >&2
install -d "$prefix/lib" "$prefix/include" "$prefix/lib/cmake/hicache_valkey" "$prefix/lib/pkgconfig"
install -m 0755 "$so" "$prefix/lib/libhicache_valkey.so.$version"
ln -sfn "libhicache_valkey.so.$version" "$prefix/lib/$soname"
ln -sfn "$soname" "$prefix/lib/libhicache_valkey.so"
install -m 0644 "$a" "$prefix/lib/libhicache_valkey.a"
install -m 0644 "$header" "$prefix/include/hicache_valkey.h"
install -m 0644 "$header_hpp" "$prefix/include/hicache_valkey.hpp"

subst() {
  sed -e "s|@HV_VERSION@|$version|g" -e "s|@HV_SOVERSION@|$major|g" \
      -e "s|@HV_SIZEOF_VOID_P@|$sizeof_void_p|g" -e "s|@HV_PREFIX@|$prefix|g" "$1" > "$2.tmp"
  if grep -q '@HV_[A-Z_]*@' "$2.tmp"; then
    echo "install.sh: unsubstituted placeholder in $2" >&2; rm -f "$2.tmp"; exit 1
  fi
  chmod 0644 "$2.tmp"
  mv "$2.tmp" "$2"
}
subst "$repo/cmake/hicache_valkeyConfig.cmake.in" "$prefix/lib/cmake/hicache_valkey/hicache_valkeyConfig.cmake"
subst "$repo/cmake/hicache_valkeyConfigVersion.cmake.in" "$prefix/lib/cmake/hicache_valkey/hicache_valkeyConfigVersion.cmake"
subst "$repo/cmake/hicache_valkey.pc.in" "$prefix/lib/pkgconfig/hicache_valkey.pc"

cat >&2 <<MSG
install.sh: done. Use it with
  CMake:      cmake -DCMAKE_PREFIX_PATH=$prefix ...   then find_package(hicache_valkey CONFIG REQUIRED)
              (C++: target_link_libraries(app PRIVATE hicache_valkey::hicache_valkey_cpp), #include <hicache_valkey.hpp>)
  pkg-config: PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs hicache_valkey
MSG
