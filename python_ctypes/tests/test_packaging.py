"""`pip wheel ./python_ctypes` on a copy of the tree as a fresh clone has it (tracked and
untracked-but-not-ignored files: no target/, no build/, no library in the package): the build
backend compiles the library with cargo and the wheel is ``py3-none-<platform>`` and carries it.

The copy shares this checkout's cargo target directory through CARGO_TARGET_DIR (so only the
crate itself is recompiled, not its dependencies), which also checks that the backend honours it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from test_abi import cargo_version

REPO = Path(__file__).resolve().parents[2]
LIB_NAME = "libhicache_valkey.so" if sys.platform.startswith("linux") else None


def _can_build() -> str:
    """Why the wheel cannot be built here ("" when it can)."""
    if not (REPO / "Cargo.toml").is_file() or not (REPO / ".git").exists():
        return "not in a git checkout of the repository"
    if LIB_NAME is None:
        return "the test knows the library's file name on Linux only"
    for tool in ("cargo", "git"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:  # the backend's requirements, in this environment (the build runs without isolation)
        import setuptools.command.bdist_wheel  # noqa: F401
    except ImportError:
        try:
            import wheel.bdist_wheel  # noqa: F401
        except ImportError:
            return "setuptools >= 70.1 (or wheel) is not installed"
    return ""


pytestmark = pytest.mark.skipif(bool(_can_build()), reason=_can_build() or "-")


def _copy_tree(dest: Path) -> None:
    files = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, stdout=subprocess.PIPE,
    ).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():  # skips files deleted in the work tree
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _pip_wheel(source: Path, out: Path, **env_changes: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HICACHE_VALKEY_LIB", "HICACHE_VALKEY_NO_BUNDLE")}
    env.update(env_changes)
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
         "-w", str(out), str(source / "python_ctypes")],
        env=env, capture_output=True, text=True, timeout=1800,
    )


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("checkout")
    _copy_tree(dest)
    return dest


@pytest.fixture(scope="module")
def target_dir() -> str:
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps", "--manifest-path", str(REPO / "Cargo.toml")],
        check=True, stdout=subprocess.PIPE,
    ).stdout
    return json.loads(meta)["target_directory"]


def test_wheel_from_a_clean_tree_is_py3_none_platform_and_carries_the_library(checkout, target_dir, tmp_path):
    assert not (checkout / "target").exists() and not (checkout / "python_ctypes" / "hicache_valkey" / LIB_NAME).exists()
    out = _pip_wheel(checkout, tmp_path, CARGO_TARGET_DIR=target_dir)
    assert out.returncode == 0, out.stdout + out.stderr
    wheels = list(tmp_path.glob("*.whl"))
    assert len(wheels) == 1, wheels
    version = cargo_version()
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    assert wheels[0].name == f"hicache_valkey-{version}-py3-none-{plat}.whl"
    with zipfile.ZipFile(wheels[0]) as z:
        names = z.namelist()
        info = z.read(f"hicache_valkey-{version}.dist-info/WHEEL").decode()
        metadata = z.read(f"hicache_valkey-{version}.dist-info/METADATA").decode()
        lib = z.getinfo(f"hicache_valkey/{LIB_NAME}")
    assert f"Tag: py3-none-{plat}" in info.splitlines()
    assert "Root-Is-Purelib: false" in info.splitlines()
    assert f"Version: {version}" in metadata.splitlines()
    assert lib.file_size > 0 and (lib.external_attr >> 16) & 0o111, "the library is in the wheel, executable"
    assert "hicache_valkey/store.py" in names and not any(n.startswith(("build_backend", "setup")) for n in names)
    assert not (checkout / "target").exists(), "the library was built in CARGO_TARGET_DIR, not in the tree"


def test_a_missing_cargo_is_a_clear_error(checkout, tmp_path):
    out = _pip_wheel(checkout, tmp_path, CARGO=str(tmp_path / "no-such-cargo"))
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "no-such-cargo` not found on PATH" in text and "https://rustup.rs" in text, text
    assert not list(tmp_path.glob("*.whl"))
