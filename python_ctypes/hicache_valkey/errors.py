"""Exceptions: one per ``hicache_status`` of the C library, all under :class:`HiCacheValkeyError`.

Each exception carries the library's message (``hicache_valkey_last_error``, read on the thread
that made the failing call, right after it) and the numeric status. Where a built-in exception
means the same thing, the class also derives from it (``ValueError``, ``ConnectionError``,
``PermissionError``, ``TimeoutError``), so generic handlers keep working.
"""

from __future__ import annotations

import enum
from typing import Dict, Optional, Type


class Status(enum.IntEnum):
    """``hicache_status``: the result of a call as a whole (stable values)."""

    OK = 0
    INVALID_ARGUMENT = 1
    INVALID_CONFIG = 2
    CONNECTION = 3
    AUTH = 4
    TIMEOUT = 5
    PROTOCOL = 6
    SERVER = 7
    PANIC = 8
    PERMISSION = 9
    TLS = 10


class HiCacheValkeyError(Exception):
    """Base class of every error raised by this package.

    ``status`` is the library's :class:`Status` (``None`` for errors found on the Python side
    before calling the library, such as a missing shared library) and ``message`` its text.
    """

    status: Optional[Status] = None

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            try:
                self.status = Status(status)
            except ValueError:  # a status this package does not know yet
                self.status = status  # type: ignore[assignment]

    def __str__(self) -> str:
        return self.message


class LibraryNotFoundError(HiCacheValkeyError, ImportError):
    """``libhicache_valkey.so`` is neither in the package nor at ``$HICACHE_VALKEY_LIB``."""


class IncompatibleLayoutError(HiCacheValkeyError, ImportError):
    """The package's ctypes mirrors of the C structs do not have the header's layout on this
    platform (a packaging bug: calling the library would corrupt memory)."""


class InvalidArgumentError(HiCacheValkeyError, ValueError):
    """An argument is invalid: an empty key, a read-only or non-contiguous buffer to read into,
    keys and values of different lengths, a NULL pointer with a non-zero length..."""

    status = Status.INVALID_ARGUMENT


class InvalidConfigError(HiCacheValkeyError, ValueError):
    """A configuration value is invalid (port 0, a bad URL, a rank outside its size...)."""

    status = Status.INVALID_CONFIG


class ValkeyConnectionError(HiCacheValkeyError, ConnectionError):
    """The server cannot be reached (refused, unresolvable host, connection dropped)."""

    status = Status.CONNECTION


class AuthenticationError(HiCacheValkeyError, PermissionError):
    """The server refused the credentials, or requires some."""

    status = Status.AUTH


class ValkeyTimeoutError(HiCacheValkeyError, TimeoutError):
    """The server did not answer in time."""

    status = Status.TIMEOUT


class ProtocolError(HiCacheValkeyError):
    """The server sent something unexpected."""

    status = Status.PROTOCOL


class ServerError(HiCacheValkeyError):
    """The server answered with an error."""

    status = Status.SERVER


class InternalError(HiCacheValkeyError):
    """A bug in the library was caught at the C boundary (the handle may still be used)."""

    status = Status.PANIC


class PermissionDeniedError(HiCacheValkeyError, PermissionError):
    """The server's ACL does not allow a command the call needs (``NOPERM``); the message
    names the command."""

    status = Status.PERMISSION


class TlsError(HiCacheValkeyError, ConnectionError):
    """A TLS connection could not be set up (untrusted or expired certificate, name mismatch,
    client certificate required, TLS against a plaintext port or the reverse); the message says
    which."""

    status = Status.TLS


class StoreClosedError(HiCacheValkeyError):
    """The :class:`~hicache_valkey.ValkeyStore` was closed."""


_BY_STATUS: Dict[int, Type[HiCacheValkeyError]] = {
    Status.INVALID_ARGUMENT: InvalidArgumentError,
    Status.INVALID_CONFIG: InvalidConfigError,
    Status.CONNECTION: ValkeyConnectionError,
    Status.AUTH: AuthenticationError,
    Status.TIMEOUT: ValkeyTimeoutError,
    Status.PROTOCOL: ProtocolError,
    Status.SERVER: ServerError,
    Status.PANIC: InternalError,
    Status.PERMISSION: PermissionDeniedError,
    Status.TLS: TlsError,
}


def error_for_status(status: int, message: str) -> HiCacheValkeyError:
    """The exception for a non-OK status, carrying ``message``."""
    cls = _BY_STATUS.get(status, HiCacheValkeyError)
    return cls(message, status)
