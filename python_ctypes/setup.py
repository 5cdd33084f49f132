"""The parts of the build pyproject.toml cannot declare (run by build_backend.py, which first
builds the Rust library; see there):

- the version, read from the crate's Cargo.toml (its only source);
- copying the library build_backend.py names into the package;
- the wheel tag ``py3-none-<platform>``: the wheel holds a native library but no CPython
  extension, so it fits every Python 3 on this platform.
"""

import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

try:
    from setuptools.command.bdist_wheel import bdist_wheel  # setuptools >= 70.1
except ImportError:  # older setuptools, with the `wheel` package
    from wheel.bdist_wheel import bdist_wheel

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import build_backend  # noqa: E402  (the same directory; the backend's helpers)


class BuildPyWithLibrary(build_py):
    def run(self):
        super().run()
        lib = os.environ.get(build_backend.BUILT_LIB_ENV)
        if not lib:
            if os.environ.get("HICACHE_VALKEY_NO_BUNDLE") == "1":
                return
            raise SystemExit(
                "hicache_valkey: no library to bundle: build through the package's PEP 517 backend "
                "(pip install ./python_ctypes, pip wheel, python -m build --wheel), which runs cargo, "
                "or set HICACHE_VALKEY_NO_BUNDLE=1"
            )
        # An editable install imports the package from this directory: the library goes there.
        base = HERE if getattr(self, "editable_mode", False) else Path(self.build_lib)
        dest = base / "hicache_valkey" / build_backend.LIB_NAME
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lib, dest)
        os.chmod(dest, 0o755)
        print(f"hicache_valkey: bundled {lib} -> {dest}", file=sys.stderr)


class BinaryDistribution(Distribution):
    """Holds a native library: installed to platlib, and the wheel is not pure."""

    def has_ext_modules(self):
        return True


class PlatformWheel(bdist_wheel):
    """``py3-none-<platform>``: platform-specific (the library), Python- and ABI-independent."""

    def get_tag(self):
        _, _, plat = super().get_tag()
        return "py3", "none", plat


setup(
    version=build_backend.version(),
    distclass=BinaryDistribution,
    cmdclass={"build_py": BuildPyWithLibrary, "bdist_wheel": PlatformWheel},
)
