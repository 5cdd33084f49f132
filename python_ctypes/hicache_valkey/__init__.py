"""hicache_valkey: Valkey as the storage tier of an LLM inference engine's hierarchical KV cache.

Python bindings (ctypes) over the C library ``libhicache_valkey.so``, and an SGLang HiCache
storage backend in :mod:`hicache_valkey.sglang` (SGLang is imported only there, lazily).
"""

from __future__ import annotations

from ._lib import LIB_ENV, find_library, library_path, version
from .errors import (
    AuthenticationError,
    HiCacheValkeyError,
    IncompatibleLayoutError,
    InternalError,
    InvalidArgumentError,
    InvalidConfigError,
    LibraryNotFoundError,
    PermissionDeniedError,
    TlsError,
    ProtocolError,
    ServerError,
    Status,
    StoreClosedError,
    ValkeyConnectionError,
    ValkeyTimeoutError,
)
from .store import BatchResult, ExistsResult, Outcome, ValkeyStore

try:  # the crate's version, written into the wheel's metadata at build time (from Cargo.toml)
    from importlib.metadata import PackageNotFoundError as _NotInstalled, version as _dist_version

    __version__ = _dist_version("hicache_valkey")
except _NotInstalled:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ValkeyStore",
    "Outcome",
    "BatchResult",
    "ExistsResult",
    "Status",
    "HiCacheValkeyError",
    "LibraryNotFoundError",
    "IncompatibleLayoutError",
    "InvalidArgumentError",
    "InvalidConfigError",
    "ValkeyConnectionError",
    "AuthenticationError",
    "PermissionDeniedError",
    "TlsError",
    "ValkeyTimeoutError",
    "ProtocolError",
    "ServerError",
    "InternalError",
    "StoreClosedError",
    "version",
    "library_path",
    "find_library",
    "LIB_ENV",
]
