"""Loading ``libhicache_valkey.so`` and declaring its C ABI (include/hicache_valkey.h) for ctypes.

The library is loaded with :class:`ctypes.CDLL`, which releases the GIL for the duration of each
call: several Python threads can have I/O in flight on one handle at once (the handle is
thread-safe). Do not switch to ``PyDLL``.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from ctypes import (
    POINTER,
    Structure,
    c_char,
    c_char_p,
    c_double,
    c_int32,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import IncompatibleLayoutError, LibraryNotFoundError, error_for_status

LIB_ENV = "HICACHE_VALKEY_LIB"
if sys.platform == "darwin":
    LIB_NAME = "libhicache_valkey.dylib"
elif sys.platform == "win32":
    LIB_NAME = "hicache_valkey.dll"
else:
    LIB_NAME = "libhicache_valkey.so"

#: Pass in an int32 option to take the value from the environment, else the default.
UNSET = -1
#: ``HICACHE_VALKEY_OPTIONS_V1_SIZE``: the size of the first published options struct (64-bit);
#: later versions only append fields.
OPTIONS_V1_SIZE = 104


class hicache_valkey_options(Structure):
    """``hicache_valkey_options``, the one Python copy of its layout. A field the header appends
    is one line appended here: ``ValkeyStore`` passes the keyword argument of the same name,
    converted by this type (``c_char_p``: str; ``c_int32``/``c_uint32``/``c_uint64``: int), and
    ``hicache_valkey_options_init`` is given ``sizeof`` of this struct."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("port", c_int32),
        ("db", c_int32),
        ("tp_rank", c_int32),
        ("tp_size", c_int32),
        ("pp_rank", c_int32),
        ("pp_size", c_int32),
        ("cp_rank", c_int32),
        ("cp_size", c_int32),
        ("checksum", c_int32),
        ("connect_timeout_ms", c_int32),
        ("timeout_ms", c_int32),
        ("connections", c_int32),
        ("is_mla", c_uint32),
        ("value_format", c_uint64),
        ("url", c_char_p),
        ("host", c_char_p),
        ("username", c_char_p),
        ("password", c_char_p),
        ("model_name", c_char_p),
        # appended in 0.2
        ("socket_path", c_char_p),
        ("tls", c_int32),
        ("tls_insecure_skip_verify", c_int32),
        ("skip_existing", c_int32),
        ("reserved", c_int32),
        ("tls_ca_cert", c_char_p),
        ("tls_cert", c_char_p),
        ("tls_key", c_char_p),
        ("tls_server_name", c_char_p),
    ]


class hicache_key(Structure):
    _fields_ = [("ptr", POINTER(c_uint8)), ("len", c_size_t)]


class hicache_segment(Structure):
    _fields_ = [("ptr", c_void_p), ("len", c_size_t)]


class hicache_value(Structure):
    _fields_ = [("segments", POINTER(hicache_segment)), ("count", c_size_t)]


class hicache_stats(Structure):
    """``hicache_stats`` (called ``hicache_valkey_stats`` before cluster support added
    ``cluster_primaries``)."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("reserved", c_uint32),
        ("model_keys", c_uint64),
        ("db_keys", c_uint64),
        ("used_memory_bytes", c_uint64),
        ("used_memory_human", c_char * 32),
        ("maxmemory_bytes", c_uint64),
        ("maxmemory_policy", c_char * 32),
        ("evicted_keys", c_uint64),
        ("keyspace_hits", c_uint64),
        ("keyspace_misses", c_uint64),
        ("keyspace_hit_ratio", c_double),
        ("connected_clients", c_uint64),
        ("server_version", c_char * 32),
        ("get_hits", c_uint64),
        ("get_misses", c_uint64),
        ("get_hit_ratio", c_double),
        ("exists_hits", c_uint64),
        ("exists_misses", c_uint64),
        ("exists_hit_ratio", c_double),
        ("pages_written", c_uint64),
        ("bytes_written", c_uint64),
        ("pages_read", c_uint64),
        ("bytes_read", c_uint64),
        ("errors", c_uint64),
        ("reconnects", c_uint64),
        ("set_calls", c_uint64),
        ("set_p50_us", c_uint64),
        ("set_p99_us", c_uint64),
        ("get_calls", c_uint64),
        ("get_p50_us", c_uint64),
        ("get_p99_us", c_uint64),
        ("exists_calls", c_uint64),
        ("exists_p50_us", c_uint64),
        ("exists_p99_us", c_uint64),
        ("cluster_primaries", c_uint64),
        ("unreachable_primaries", c_uint64),
    ]


hicache_valkey_stats = hicache_stats  # the struct's earlier name


class hicache_valkey(Structure):
    """Opaque handle."""


HandleP = POINTER(hicache_valkey)

# (name, restype, argtypes) of every exported function, in header order.
_PROTOTYPES = [
    ("hicache_valkey_options_init", c_int32, [POINTER(hicache_valkey_options), c_size_t]),
    ("hicache_valkey_open", c_int32, [POINTER(hicache_valkey_options), POINTER(HandleP)]),
    ("hicache_valkey_close", None, [HandleP]),
    (
        "hicache_valkey_batch_set",
        c_int32,
        [HandleP, POINTER(hicache_key), POINTER(hicache_value), c_size_t, POINTER(c_int32)],
    ),
    (
        "hicache_valkey_batch_get",
        c_int32,
        [HandleP, POINTER(hicache_key), POINTER(hicache_value), c_size_t, POINTER(c_int32)],
    ),
    (
        "hicache_valkey_batch_exists",
        c_int32,
        [HandleP, POINTER(hicache_key), c_size_t, POINTER(c_uint8), POINTER(c_size_t)],
    ),
    ("hicache_valkey_stats", c_int32, [HandleP, POINTER(hicache_stats)]),
    ("hicache_valkey_clear", c_int32, [HandleP, POINTER(c_uint64)]),
    ("hicache_valkey_ping", c_int32, [HandleP, POINTER(c_uint64)]),
    ("hicache_valkey_version", c_char_p, []),
    ("hicache_valkey_status_str", c_char_p, [c_int32]),
    ("hicache_valkey_outcome_str", c_char_p, [c_int32]),
    ("hicache_valkey_last_error", c_size_t, [POINTER(c_char), c_size_t]),
]

# The batch calls again, every array argument a plain address (``c_void_p`` from a Python int):
# the data path builds its arrays once per thread and passes their addresses, which spares it
# a ctypes pointer object per argument and call (about 12 us each with cold caches, the state
# Python finds itself in after a call that moved megabytes).
_BY_ADDRESS = [
    ("hicache_valkey_batch_set", [c_void_p, c_void_p, c_void_p, c_size_t, c_void_p]),
    ("hicache_valkey_batch_get", [c_void_p, c_void_p, c_void_p, c_size_t, c_void_p]),
    ("hicache_valkey_batch_exists", [c_void_p, c_void_p, c_size_t, c_void_p, c_void_p]),
]

_lib: Optional[ctypes.CDLL] = None
_lib_path: Optional[str] = None
_by_address: Dict[str, Any] = {}
_load_lock = threading.Lock()


def package_library_path() -> Path:
    """Where an installed package keeps its copy of the library."""
    return Path(__file__).resolve().parent / LIB_NAME


def find_library() -> str:
    """``$HICACHE_VALKEY_LIB`` when set, else the copy inside the package; raises
    :class:`LibraryNotFoundError` naming both places when neither exists."""
    bundled = package_library_path()
    env = os.environ.get(LIB_ENV)
    if env:
        if os.path.isfile(env):
            return env
        raise LibraryNotFoundError(
            f"{LIB_ENV} is set to {env!r}, which is not a file "
            f"(the package's own copy would be {str(bundled)!r}); "
            f"point it at a built library (`cargo build --release` makes "
            f"target/release/{LIB_NAME}), or unset {LIB_ENV}"
        )
    if bundled.is_file():
        return str(bundled)
    raise LibraryNotFoundError(
        f"{LIB_NAME} not found: not inside the package ({str(bundled)!r}) and {LIB_ENV} "
        f"is not set; reinstall the package (pip install ./python_ctypes builds the library "
        f"and bundles it), or set {LIB_ENV}=/path/to/{LIB_NAME}"
    )


def lib() -> ctypes.CDLL:
    """The loaded library with every prototype declared (loaded once, on first use)."""
    global _lib, _lib_path
    if _lib is not None:
        return _lib
    with _load_lock:
        if _lib is None:
            path = find_library()
            try:
                handle = ctypes.CDLL(path)  # CDLL: the GIL is released during calls
            except OSError as e:
                raise LibraryNotFoundError(f"cannot load {path!r}: {e}") from e
            for name, restype, argtypes in _PROTOTYPES:
                fn = getattr(handle, name)
                fn.restype = restype
                fn.argtypes = argtypes
            for name, argtypes in _BY_ADDRESS:
                fn = handle[name]  # a function object of its own, not the attribute above
                fn.restype = c_int32
                fn.argtypes = argtypes
                _by_address[name] = fn
            _lib_path = path
            _lib = handle
    return _lib


def by_address(name: str) -> Any:
    """The batch function ``name`` declared with every array argument a plain address."""
    lib()
    return _by_address[name]


def library_path() -> str:
    """The path the library was (or will be) loaded from."""
    lib()
    return str(_lib_path)


def _layout_problems() -> List[str]:
    """Where the ctypes structs differ from the header's layout (empty when they agree)."""
    ptr = ctypes.sizeof(c_void_p)
    problems = []

    def expect(what: str, got: int, want: int) -> None:
        if got != want:
            problems.append(f"{what} is {got}, the header's is {want}")

    for pair in (hicache_key, hicache_segment, hicache_value):
        expect(f"sizeof({pair.__name__})", ctypes.sizeof(pair), 2 * ptr)
    if ptr == 8:  # the header's figures are for 64-bit platforms
        o = hicache_valkey_options
        expect("offsetof(hicache_valkey_options, value_format)", o.value_format.offset, 56)
        # The first published fields end at HICACHE_VALKEY_OPTIONS_V1_SIZE; later ones follow.
        expect("the end of hicache_valkey_options.model_name", o.model_name.offset + ptr, OPTIONS_V1_SIZE)
        expect("offsetof(hicache_stats, used_memory_human)", hicache_stats.used_memory_human.offset, 32)
        expect("sizeof(hicache_stats)", ctypes.sizeof(hicache_stats), 360)
    return problems


def _check_layouts() -> None:
    """Raises :class:`IncompatibleLayoutError` unless the ctypes structs have the header's
    layout (a plain ``if``: ``python -O`` must not skip it)."""
    problems = _layout_problems()
    if problems:
        raise IncompatibleLayoutError(
            "hicache_valkey's ctypes declarations do not match include/hicache_valkey.h: " + "; ".join(problems)
        )


_check_layouts()  # at import: before anything can pass a struct to the library


_ERRBUF_LEN = 1024


def last_error() -> str:
    """This thread's last error message of the library (empty when the last call succeeded)."""
    f = lib().hicache_valkey_last_error
    buf = ctypes.create_string_buffer(_ERRBUF_LEN)
    n = f(buf, _ERRBUF_LEN)
    if n >= _ERRBUF_LEN:
        buf = ctypes.create_string_buffer(n + 1)
        f(buf, n + 1)
    return buf.value.decode("utf-8", "replace")


def check(status: int, what: str) -> None:
    """Raises the exception of ``status`` (with the library's message) unless it is OK. Must be
    called right after the call that returned ``status``, on the same thread."""
    if status != 0:
        message = last_error()
        name = lib().hicache_valkey_status_str(status).decode()
        raise error_for_status(status, f"{what} failed ({name}): {message}" if message else f"{what} failed ({name})")


def version() -> str:
    """The C library's version, e.g. ``"0.1.0"``."""
    return lib().hicache_valkey_version().decode()


def status_str(status: int) -> str:
    return lib().hicache_valkey_status_str(status).decode()


def outcome_str(outcome: int) -> str:
    return lib().hicache_valkey_outcome_str(outcome).decode()
