"""hicache_valkey: Valkey as the storage tier of an LLM inference engine's hierarchical KV cache.

Python bindings (ctypes) over the C library ``libhicache_valkey.so``, and an SGLang HiCache
storage backend in :mod:`hicache_valkey.sglang` (SGLang is imported only there, lazily).
"""

from __future__ import annotations

from ._lib import LIB_ENV, find_library, library_path, version
from .errors import (
    AuthenticationError,
    PermissionDeniedError,
    HiCacheValkeyError,
    InternalError,
    InvalidArgumentError,
    InvalidConfigError,
    LibraryNotFoundError,
    ProtocolError,
    ServerError,
    Status,
    StoreClosedError,
    ValkeyConnectionError,
    ValkeyTimeoutError,
)
from .store import BatchResult, ExistsResult, Outcome, ValkeyStore

__version__ = "0.1.0"

__all__ = [
    "ValkeyStore",
    "Outcome",
    "BatchResult",
    "ExistsResult",
    "Status",
    "HiCacheValkeyError",
    "LibraryNotFoundError",
    "InvalidArgumentError",
    "InvalidConfigError",
    "ValkeyConnectionError",
    "AuthenticationError",
    "PermissionDeniedError",
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
