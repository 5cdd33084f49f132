"""The Python side of the C boundary against the library and its header: enum names and values,
struct field types, layout checks that ``python -O`` keeps, the version. No server needed."""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hicache_valkey as hv
from hicache_valkey import Outcome, Status, _lib
from hicache_valkey.errors import HiCacheValkeyError, error_for_status

REPO = Path(__file__).resolve().parents[2]
HEADER = REPO / "include" / "hicache_valkey.h"


def library_enum(name_of, prefix: str) -> dict:
    """``{NAME: value}`` of a C enum as the library names it: every value from 0 up to the
    first one the library calls ``<prefix>UNKNOWN``, and no named value in the 256 after."""
    names = {}
    value = 0
    while name_of(value) != prefix + "UNKNOWN":
        name = name_of(value)
        assert name.startswith(prefix), f"{value} is named {name!r}"
        names[name[len(prefix):]] = value
        value += 1
        assert value < 1 << 16, f"no {prefix}UNKNOWN"
    stray = {v: name_of(v) for v in [-1, *range(value, value + 256)] if name_of(v) != prefix + "UNKNOWN"}
    assert not stray, f"values after a gap, which the enum check above would miss: {stray}"
    return names


def test_status_enum_is_the_librarys():
    assert {s.name: s.value for s in Status} == library_enum(_lib.status_str, "HICACHE_STATUS_")


def test_outcome_enum_is_the_librarys():
    assert {o.name: o.value for o in Outcome} == library_enum(_lib.outcome_str, "HICACHE_OUTCOME_")


@pytest.mark.parametrize("status", [s for s in Status if s != Status.OK], ids=lambda s: s.name)
def test_every_error_status_has_its_own_exception(status):
    e = error_for_status(status, "m")
    assert type(e) is not HiCacheValkeyError and e.status == status


# -- structs -------------------------------------------------------------------------------------

_C_TYPES = {
    "uint8_t": ctypes.c_uint8, "uint32_t": ctypes.c_uint32, "int32_t": ctypes.c_int32,
    "uint64_t": ctypes.c_uint64, "size_t": ctypes.c_size_t, "double": ctypes.c_double,
    "char": ctypes.c_char,
}


def header_fields(name: str):
    """``[(field, ctype)]`` of ``typedef struct name {...}`` in the header."""
    m = re.search(r"typedef struct %s \{(.*?)\} %s;" % (name, name), HEADER.read_text(), re.S)
    assert m, f"struct {name} not in the header"
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    out = []
    for decl in filter(None, (d.strip() for d in body.split(";"))):
        d = re.fullmatch(r"(?:const\s+)?(?:struct\s+)?(\w+)\s*(\*?)\s*(\w+)(?:\[(\d+)\])?", " ".join(decl.split()))
        assert d, f"cannot read {decl!r} of {name}"
        base, star, field, count = d.groups()
        if star:
            t = {"char": ctypes.c_char_p, "void": ctypes.c_void_p}.get(base) or ctypes.POINTER(
                _C_TYPES.get(base) or getattr(_lib, base)
            )
        else:
            t = _C_TYPES[base]
        out.append((field, t * int(count) if count else t))
    return out


@pytest.mark.skipif(not HEADER.is_file(), reason="include/hicache_valkey.h is not next to the tests")
@pytest.mark.parametrize("struct", ["hicache_valkey_options", "hicache_key", "hicache_segment", "hicache_value", "hicache_stats"])
def test_ctypes_struct_fields_have_the_headers_types(struct):
    ours = [(f, t) for f, t in getattr(_lib, struct)._fields_]
    theirs = header_fields(struct)
    assert [f for f, _ in ours] == [f for f, _ in theirs]
    for (f, a), (_, b) in zip(ours, theirs):
        same = a is b or (ctypes.sizeof(a) == ctypes.sizeof(b) and getattr(a, "_type_", None) == getattr(b, "_type_", None)
                          and getattr(a, "_length_", None) == getattr(b, "_length_", None))
        assert same, f"{struct}.{f}: {a} here, {b} in the header"


@pytest.mark.skipif(not HEADER.is_file(), reason="include/hicache_valkey.h is not next to the tests")
def test_options_v1_size_is_the_headers():
    m = re.search(r"#define HICACHE_VALKEY_OPTIONS_V1_SIZE (\d+)", HEADER.read_text())
    assert m and int(m.group(1)) == _lib.OPTIONS_V1_SIZE


def test_every_option_field_is_a_keyword_argument():
    """A field appended to ``hicache_valkey_options`` is reachable from ``ValkeyStore``."""
    import inspect

    fields = {f for f, _ in _lib.hicache_valkey_options._fields_} - {"struct_size", "reserved"}
    assert fields <= set(inspect.signature(hv.ValkeyStore).parameters)


def test_layouts_agree_now():
    assert _lib._layout_problems() == []


def test_layout_check_is_not_an_assert():
    """Under ``python -O`` a wrong layout still raises (the check is no ``assert``)."""
    code = (
        "import hicache_valkey._lib as l\n"
        "l.OPTIONS_V1_SIZE += 8\n"
        "try:\n    l._check_layouts()\nexcept l.IncompatibleLayoutError as e:\n    print('raised:', e)\n"
    )
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "raised:" in out.stdout and "model_name" in out.stdout, out.stdout


# -- version -------------------------------------------------------------------------------------


def cargo_version() -> str:
    import importlib.util

    spec = importlib.util.spec_from_file_location("_hv_build_backend", REPO / "python_ctypes" / "build_backend.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod.version()


@pytest.mark.skipif(not (REPO / "Cargo.toml").is_file(), reason="not in the repository")
def test_version_is_the_crates():
    pytest.importorskip("setuptools")
    want = cargo_version()
    assert hv.__version__ == want  # the wheel's metadata, written from Cargo.toml at build time
    if not os.environ.get(hv.LIB_ENV):  # the bundled library, built from the same Cargo.toml
        assert hv.version() == want
