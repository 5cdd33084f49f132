"""Copies libhicache_valkey.so into the package when it is built.

The library is taken from $HICACHE_VALKEY_LIB when set, else from ../target/release (the Rust
crate's `cargo build --release` output next to this directory). Set HICACHE_VALKEY_NO_BUNDLE=1
to build without it; the package then needs HICACHE_VALKEY_LIB at run time.
"""

import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
NAME = "libhicache_valkey.dylib" if sys.platform == "darwin" else "libhicache_valkey.so"


def find_library():
    env = os.environ.get("HICACHE_VALKEY_LIB")
    candidates = [Path(env)] if env else []
    candidates.append(HERE.parent / "target" / "release" / NAME)
    for c in candidates:
        if c.is_file():
            return c
    return None


class BuildPyWithLibrary(build_py):
    def run(self):
        super().run()
        if os.environ.get("HICACHE_VALKEY_NO_BUNDLE") == "1":
            return
        lib = find_library()
        if lib is None:
            raise SystemExit(
                f"hicache_valkey: {NAME} not found (looked at $HICACHE_VALKEY_LIB and "
                f"{HERE.parent / 'target' / 'release' / NAME}); run `cargo build --release` in the "
                "repository root first, or set HICACHE_VALKEY_LIB, or HICACHE_VALKEY_NO_BUNDLE=1"
            )
        dest = Path(self.build_lib) / "hicache_valkey" / NAME
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lib, dest)
        os.chmod(dest, 0o755)
        print(f"hicache_valkey: bundled {lib} -> {dest}")


class BinaryDistribution(Distribution):
    """The wheel carries a native library: tag it for this platform."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildPyWithLibrary}, distclass=BinaryDistribution)
