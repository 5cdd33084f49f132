"""PEP 517 build backend: setuptools', plus ``cargo build --release --lib`` of the Rust crate first.

``pip install ./python_ctypes`` (or ``pip wheel``, ``python -m build --wheel``) builds
``libhicache_valkey.so`` from the crate this directory sits in (the nearest parent directory with
a ``Cargo.toml``), then lets setuptools build the wheel; ``setup.py`` copies the library into it
and tags the wheel ``py3-none-<platform>`` (ctypes does not use the CPython ABI).

- The library is found in cargo's target directory as ``cargo metadata`` reports it, so
  ``CARGO_TARGET_DIR`` and ``build.target-dir`` are respected. ``$CARGO`` names cargo when set.
- ``HICACHE_VALKEY_LIB=/path/to/libhicache_valkey.so``: bundle that library, do not run cargo.
- ``HICACHE_VALKEY_NO_BUNDLE=1``: neither build nor bundle (the package then needs
  ``HICACHE_VALKEY_LIB`` at run time).

The package version is the crate's (``Cargo.toml`` is its only source, read by :func:`version`).
There is no sdist: the Rust sources live outside this directory; build a wheel from the tree.

Why not setuptools-rust: it is one more build requirement to fetch from the registry (offline
builds would need it preinstalled) and is made for extension modules; for a plain cdylib loaded
by ctypes it would still need the wheel tag overridden. This file is the part that is needed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (every hook not defined below)

HERE = Path(__file__).resolve().parent
if sys.platform == "darwin":
    LIB_NAME = "libhicache_valkey.dylib"
elif sys.platform == "win32":
    LIB_NAME = "hicache_valkey.dll"
else:
    LIB_NAME = "libhicache_valkey.so"
#: The C library's target name in the crate (``[lib] name``).
CRATE_LIB = "hicache_valkey"
#: Set by :func:`build_wheel` for setup.py: the library file to put in the wheel.
BUILT_LIB_ENV = "_HICACHE_VALKEY_BUILT_LIB"


class BuildError(RuntimeError):
    pass


def crate_root() -> Path:
    """The nearest directory above this one holding a ``Cargo.toml``."""
    for d in HERE.parents:
        if (d / "Cargo.toml").is_file():
            return d
    raise BuildError(
        f"hicache_valkey: no Cargo.toml in any parent of {HERE}: the package builds its library "
        "from the repository it sits in (build from a checkout, not from a copy of python_ctypes "
        "alone), or set HICACHE_VALKEY_LIB to a prebuilt libhicache_valkey.so"
    )


def version() -> str:
    """The crate's ``[package] version`` from ``Cargo.toml`` (the package's only version)."""
    manifest = crate_root() / "Cargo.toml"
    text = manifest.read_text(encoding="utf-8")
    try:
        import tomllib  # Python >= 3.11
    except ImportError:
        tomllib = None  # type: ignore[assignment]
    v: object = None
    if tomllib is not None:
        doc = tomllib.loads(text)
        v = doc.get("package", {}).get("version")
        if isinstance(v, dict) and v.get("workspace"):
            v = doc.get("workspace", {}).get("package", {}).get("version")
    else:  # the `version = "..."` line of the [package] table
        table = re.search(r"^\[package\][ \t]*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
        m = re.search(r"^version\s*=\s*\"([^\"]+)\"", table.group(1), re.M) if table else None
        v = m.group(1) if m else None
    if not isinstance(v, str) or not v:
        raise BuildError(f"hicache_valkey: cannot read the [package] version of {manifest}")
    return v


def _cargo() -> str:
    cargo = os.environ.get("CARGO") or "cargo"
    found = shutil.which(cargo)
    if found is None:
        raise BuildError(
            f"hicache_valkey: `{cargo}` not found on PATH; building the package compiles its Rust "
            "library (libhicache_valkey.so) with cargo. Install Rust (https://rustup.rs) and retry, "
            "or set HICACHE_VALKEY_LIB=/path/to/libhicache_valkey.so to bundle a prebuilt library"
        )
    return found


def build_library() -> Path:
    """Runs ``cargo build --release --lib`` on the crate and returns the built library's path."""
    root = crate_root()
    cargo = _cargo()
    manifest = str(root / "Cargo.toml")
    meta = json.loads(
        subprocess.run(
            [cargo, "metadata", "--format-version", "1", "--no-deps", "--manifest-path", manifest],
            check=True, stdout=subprocess.PIPE,
        ).stdout
    )
    # The package whose cdylib is libhicache_valkey (the root package, or a workspace member).
    packages = [
        p["name"] for p in meta["packages"]
        if any(t["name"] == CRATE_LIB and "cdylib" in t["crate_types"] for t in p["targets"])
    ]
    if len(packages) != 1:
        raise BuildError(f"hicache_valkey: expected one package with a `{CRATE_LIB}` cdylib in {manifest}, found {packages}")
    cmd = [cargo, "build", "--release", "--lib", "--manifest-path", manifest, "-p", packages[0]]
    print(f"hicache_valkey: {' '.join(cmd)}", file=sys.stderr, flush=True)
    rc = subprocess.run(cmd, stdout=2).returncode  # all of cargo's output to stderr
    if rc != 0:
        raise BuildError(f"hicache_valkey: `{' '.join(cmd)}` failed (exit {rc})")
    lib = Path(meta["target_directory"]) / "release" / LIB_NAME
    if not lib.is_file():
        raise BuildError(f"hicache_valkey: cargo succeeded but {lib} does not exist")
    return lib


def _prepare_library() -> None:
    """Decides which library setup.py bundles (building it unless told otherwise)."""
    os.environ.pop(BUILT_LIB_ENV, None)
    if os.environ.get("HICACHE_VALKEY_NO_BUNDLE") == "1":
        return
    prebuilt = os.environ.get("HICACHE_VALKEY_LIB")
    if prebuilt:
        if not Path(prebuilt).is_file():
            raise BuildError(f"hicache_valkey: HICACHE_VALKEY_LIB={prebuilt!r} is not a file")
        lib = Path(prebuilt)
    else:
        lib = build_library()
    os.environ[BUILT_LIB_ENV] = str(lib)


def build_wheel(wheel_directory: str, config_settings: Optional[dict] = None, metadata_directory: Optional[str] = None) -> str:
    _prepare_library()
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory: str, config_settings: Optional[dict] = None, metadata_directory: Optional[str] = None) -> str:
    _prepare_library()
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)


def get_requires_for_build_sdist(config_settings: Optional[dict] = None) -> list:
    return []


def build_sdist(sdist_directory: str, config_settings: Optional[dict] = None) -> str:
    raise BuildError(
        "hicache_valkey: no sdist: the package's library is built from the Rust crate around this "
        "directory, which an sdist of python_ctypes would not contain. Build a wheel from the "
        "checkout instead: `pip wheel ./python_ctypes` or `python -m build --wheel ./python_ctypes`"
    )
