"""``ValkeyStore``: a Pythonic handle over the C library's batch API.

Values are read from / written to the caller's memory directly (no ``.tobytes()`` copies):
anything exposing contiguous memory works -- ``bytes`` (read-only: set only), ``bytearray``,
``memoryview``, numpy arrays, torch CPU tensors (by ``data_ptr()``) -- and so do raw
``(pointer, length)`` segments. A value may be one buffer or a list of segments (scatter-gather:
the stored value is their concatenation).
"""

from __future__ import annotations

import ctypes
import enum
import threading
from ctypes import POINTER, byref, c_int32, c_size_t, c_uint8, c_uint64
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import _lib
from ._lib import (
    UNSET,
    HandleP,
    check,
    hicache_key,
    hicache_segment,
    hicache_valkey_options,
    hicache_stats,
    hicache_value,
)
from .errors import InvalidArgumentError, InvalidConfigError, StoreClosedError

__all__ = ["ValkeyStore", "Outcome", "BatchResult", "ExistsResult"]

# numpy mirrors of the C structs, to build whole arrays of them without a Python loop per item.
_PAIR = np.dtype([("ptr", np.uintp), ("len", np.uintp)])
KEY_DTYPE = SEGMENT_DTYPE = VALUE_DTYPE = _PAIR
assert _PAIR.itemsize == ctypes.sizeof(hicache_key) == ctypes.sizeof(hicache_segment) == ctypes.sizeof(hicache_value)

_U64_MAX = (1 << 64) - 1
_I32_MAX = (1 << 31) - 1


class Outcome(enum.IntEnum):
    """``hicache_outcome``: what happened to one key of a batch."""

    OK = 0
    MISS = 1
    SIZE_MISMATCH = 2
    FOREIGN = 3
    FORMAT_MISMATCH = 4
    CHECKSUM_MISMATCH = 5
    TIMEOUT = 6
    IO_ERROR = 7
    SERVER_ERROR = 8
    OUT_OF_MEMORY = 9
    TOO_LARGE = 10


class BatchResult(List[Outcome]):
    """One :class:`Outcome` per key, plus ``error``: the library's message about the first key
    that failed (timeout, I/O, server error), empty when none did. Misses are not errors."""

    error: str = ""

    @property
    def all_ok(self) -> bool:
        return all(o == Outcome.OK for o in self)

    @property
    def ok(self) -> List[bool]:
        return [o == Outcome.OK for o in self]


class ExistsResult(NamedTuple):
    """``leading``: how many keys exist in a row from the first; ``found``: one flag per key."""

    leading: int
    found: List[bool]


def _to_outcomes(raw: np.ndarray, error: str) -> BatchResult:
    r = BatchResult()
    for v in raw.tolist():
        try:
            r.append(Outcome(v))
        except ValueError:  # an outcome newer than this package
            r.append(v)  # type: ignore[arg-type]
    r.error = error
    return r


def encode_keys(keys: Sequence[Union[str, bytes, bytearray, memoryview]]) -> Tuple[np.ndarray, Any]:
    """A ``hicache_key`` array for ``keys`` (str as UTF-8) and the object keeping their bytes
    alive. One join and a few numpy operations, no per-key ctypes objects."""
    n = len(keys)
    enc = [k.encode("utf-8") if isinstance(k, str) else bytes(k) for k in keys]
    blob = np.frombuffer(b"".join(enc), dtype=np.uint8)
    lens = np.fromiter(map(len, enc), dtype=np.uintp, count=n)
    arr = np.empty(n, KEY_DTYPE)
    if n:
        starts = np.zeros(n, dtype=np.uintp)
        np.cumsum(lens[:-1], out=starts[1:])
        arr["ptr"] = starts + np.uintp(blob.ctypes.data)
        arr["len"] = lens
    return arr, blob


def build_values(
    ptrs: Any, sizes: Any, segments_per_value: Union[int, Sequence[int], np.ndarray], n: int
) -> Tuple[np.ndarray, np.ndarray]:
    """``hicache_value`` and ``hicache_segment`` arrays for ``n`` values whose segments are given
    flat (``ptrs[i]``, ``sizes[i]``), ``segments_per_value`` each (an int, or one count per
    value). Returns ``(values, segments)``; keep both alive during the call."""
    ptrs = np.asarray(ptrs, dtype=np.uint64)
    sizes = np.asarray(sizes, dtype=np.uint64)
    if ptrs.ndim != 1 or ptrs.shape != sizes.shape:
        raise InvalidArgumentError(f"ptrs and sizes must be 1-D and of one length, got {ptrs.shape} and {sizes.shape}")
    total = ptrs.shape[0]
    segs = np.empty(total, SEGMENT_DTYPE)
    segs["ptr"] = ptrs
    segs["len"] = sizes
    vals = np.empty(n, VALUE_DTYPE)
    if isinstance(segments_per_value, (int, np.integer)):
        per = int(segments_per_value)
        if per < 0 or per * n != total:
            raise InvalidArgumentError(f"{total} segments cannot be {n} values of {per} segments")
        vals["ptr"] = np.uintp(segs.ctypes.data) + np.arange(n, dtype=np.uintp) * np.uintp(per * SEGMENT_DTYPE.itemsize)
        vals["len"] = per
    else:
        counts = np.asarray(segments_per_value, dtype=np.uintp)
        if counts.shape != (n,) or int(counts.sum()) != total:
            raise InvalidArgumentError(f"segment counts {counts.shape} do not describe {total} segments of {n} values")
        starts = np.zeros(n, dtype=np.uintp)
        if n:
            np.cumsum(counts[:-1], out=starts[1:])
        vals["ptr"] = np.uintp(segs.ctypes.data) + starts * np.uintp(SEGMENT_DTYPE.itemsize)
        vals["len"] = counts
    return vals, segs


def _is_raw_segment(x: Any) -> bool:
    return (
        isinstance(x, tuple)
        and len(x) == 2
        and isinstance(x[0], (int, np.integer))
        and isinstance(x[1], (int, np.integer))
        and not isinstance(x[0], bool)
    )


def buffer_address(obj: Any, writable: bool) -> Tuple[int, int, Any]:
    """``(address, nbytes, keepalive)`` of an object exposing contiguous memory, without
    copying it. Raises :class:`InvalidArgumentError` for non-contiguous memory, device tensors,
    and (when ``writable``) read-only memory."""
    if _is_raw_segment(obj):
        ptr, n = int(obj[0]), int(obj[1])
        if not (0 <= ptr <= _U64_MAX) or n < 0:
            raise InvalidArgumentError(f"invalid raw segment (ptr={ptr:#x}, len={n})")
        return ptr, n, None
    tmod = type(obj).__module__ or ""
    if tmod.startswith("torch") and hasattr(obj, "data_ptr") and hasattr(obj, "is_contiguous"):
        if obj.device.type != "cpu":
            raise InvalidArgumentError(f"tensor is on {obj.device}; only CPU memory can be stored or read into")
        if not obj.is_contiguous():
            raise InvalidArgumentError(
                f"tensor of shape {tuple(obj.shape)} and strides {obj.stride()} is not contiguous"
            )
        return int(obj.data_ptr()), int(obj.numel()) * int(obj.element_size()), obj
    if isinstance(obj, np.ndarray):
        a = obj
    elif isinstance(obj, (bytes, bytearray, memoryview)) or not hasattr(obj, "__array_interface__"):
        try:
            a = np.frombuffer(obj, dtype=np.uint8)
        except (TypeError, ValueError, BufferError) as e:
            raise InvalidArgumentError(
                f"a value of type {type(obj).__name__} exposes no contiguous memory ({e})"
            ) from None
    else:
        a = np.asarray(obj)
    if not a.flags.c_contiguous:
        raise InvalidArgumentError(f"array of shape {a.shape} and strides {a.strides} is not C-contiguous")
    if writable and not a.flags.writeable:
        raise InvalidArgumentError(f"a value of type {type(obj).__name__} is read-only and cannot be read into")
    return int(a.ctypes.data), int(a.nbytes), (a, obj)


def value_segments(value: Any, writable: bool, keep: list) -> List[Tuple[int, int]]:
    """The ``(ptr, len)`` segments of one value: a buffer, a raw ``(ptr, len)`` pair, or a
    list/tuple of those (scatter-gather)."""
    if isinstance(value, (list, tuple)) and not _is_raw_segment(value):
        items = value
    else:
        items = (value,)
    out = []
    for item in items:
        ptr, n, k = buffer_address(item, writable)
        if k is not None:
            keep.append(k)
        out.append((ptr, n))
    return out


def _opt_int(name: str, v: Optional[int]) -> int:
    if v is None:
        return UNSET
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        try:
            v = int(v)  # e.g. "6380" from a config file
        except (TypeError, ValueError):
            raise InvalidConfigError(f"option {name} must be an integer, got {v!r}") from None
    v = int(v)
    if v < 0 or v > _I32_MAX:
        raise InvalidConfigError(f"option {name} must be between 0 and {_I32_MAX}, got {v}")
    return v


def _opt_str(name: str, v: Optional[str]) -> Optional[bytes]:
    if v is None:
        return None
    if not isinstance(v, str):
        raise InvalidConfigError(f"option {name} must be a string, got {type(v).__name__}")
    b = v.encode("utf-8")
    if b"\0" in b:
        raise InvalidConfigError(f"option {name} contains a NUL character")
    return b


class ValkeyStore:
    """A connection to Valkey for one namespace (model and parallel ranks).

    Every option left ``None`` is taken by the C library from the environment (``VALKEY_URL``,
    ``VALKEY_HOST``, ``VALKEY_PORT``, ``VALKEY_DB``, ``VALKEY_USERNAME``, ``VALKEY_PASSWORD``,
    ``HICACHE_VALKEY_*``), else from its defaults (localhost:6379, db 0, model "default").

    Thread-safe: one store may be used by several threads at once (the GIL is released during
    I/O). Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        *,
        url: Optional[str] = None,
        host: Optional[str] = None,
        port: Optional[int] = None,
        db: Optional[int] = None,
        username: Optional[str] = None,
        password: Optional[str] = None,
        model_name: Optional[str] = None,
        tp_rank: Optional[int] = None,
        tp_size: Optional[int] = None,
        pp_rank: Optional[int] = None,
        pp_size: Optional[int] = None,
        cp_rank: Optional[int] = None,
        cp_size: Optional[int] = None,
        is_mla: bool = False,
        value_format: int = 0,
        checksum: Optional[bool] = None,
        connect_timeout_ms: Optional[int] = None,
        timeout_ms: Optional[int] = None,
        connections: Optional[int] = None,
    ):
        L = _lib.lib()
        self._lib = L
        opts = hicache_valkey_options()
        check(L.hicache_valkey_options_init(byref(opts), sizeof(opts)), "hicache_valkey_options_init")
        strings = {
            "url": _opt_str("url", url),
            "host": _opt_str("host", host),
            "username": _opt_str("username", username),
            "password": _opt_str("password", password),
            "model_name": _opt_str("model_name", model_name),
        }
        for name, b in strings.items():
            if b is not None:
                setattr(opts, name, b)
        for name, v in (
            ("port", port),
            ("db", db),
            ("tp_rank", tp_rank),
            ("tp_size", tp_size),
            ("pp_rank", pp_rank),
            ("pp_size", pp_size),
            ("cp_rank", cp_rank),
            ("cp_size", cp_size),
            ("connect_timeout_ms", connect_timeout_ms),
            ("timeout_ms", timeout_ms),
            ("connections", connections),
        ):
            setattr(opts, name, _opt_int(name, v))
        if checksum is not None:
            opts.checksum = 1 if checksum else 0
        opts.is_mla = 1 if is_mla else 0
        if not isinstance(value_format, (int, np.integer)) or not 0 <= int(value_format) <= _U64_MAX:
            raise InvalidConfigError(f"value_format must be an unsigned 64-bit integer, got {value_format!r}")
        opts.value_format = int(value_format)

        handle = HandleP()
        status = L.hicache_valkey_open(byref(opts), byref(handle))
        check(status, "hicache_valkey_open")  # strings stay referenced by `strings` until here
        self._handle: Optional[Any] = handle
        self._cond = threading.Condition(threading.Lock())
        self._inflight = 0
        self._closing = False
        self.value_format = int(value_format)
        self.model_name = model_name
        self.is_mla = bool(is_mla)
        given = {
            "url": url, "host": host, "port": port, "db": db, "username": username,
            "model_name": model_name, "tp_rank": tp_rank, "tp_size": tp_size, "pp_rank": pp_rank,
            "pp_size": pp_size, "cp_rank": cp_rank, "cp_size": cp_size, "checksum": checksum,
            "connect_timeout_ms": connect_timeout_ms, "timeout_ms": timeout_ms,
            "connections": connections,
        }
        self._given = {k: v for k, v in given.items() if v is not None}
        if password is not None:
            self._given["password"] = "***"
        if url is not None and "@" in url:
            self._given["url"] = "<redacted>"

    # -- lifetime ------------------------------------------------------------------------------

    def _acquire(self):
        with self._cond:
            if self._handle is None or self._closing:
                raise StoreClosedError("the ValkeyStore is closed")
            self._inflight += 1
            return self._handle

    def _release(self) -> None:
        with self._cond:
            self._inflight -= 1
            if self._inflight == 0:
                self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._handle is None

    def close(self) -> None:
        """Closes the connections. Waits for calls in flight on other threads; idempotent."""
        with self._cond:
            if self._handle is None:
                return
            self._closing = True
            while self._inflight:
                self._cond.wait()
            handle, self._handle = self._handle, None
        self._lib.hicache_valkey_close(handle)

    def __enter__(self) -> "ValkeyStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if getattr(self, "_handle", None) is not None and not self._inflight:
                self._lib.hicache_valkey_close(self._handle)
                self._handle = None
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"ValkeyStore({', '.join(f'{k}={v!r}' for k, v in self._given.items())}) [{state}]"

    # -- data path -----------------------------------------------------------------------------

    def _batch_io(self, fn, what: str, keys, values_arr: np.ndarray, n: int) -> Tuple[np.ndarray, str]:
        key_arr, key_keep = encode_keys(keys)
        outcomes = np.empty(n, dtype=np.int32)
        handle = self._acquire()
        try:
            status = fn(
                handle,
                key_arr.ctypes.data_as(POINTER(hicache_key)),
                values_arr.ctypes.data_as(POINTER(hicache_value)),
                n,
                outcomes.ctypes.data_as(POINTER(c_int32)),
            )
            error = _lib.last_error() if status == 0 and (outcomes > 1).any() else ""
            check(status, what)
        finally:
            self._release()
        del key_keep
        return outcomes, error

    def _values_from_objects(self, keys, values, writable: bool, what: str) -> Tuple[np.ndarray, list]:
        if len(keys) != len(values):
            raise InvalidArgumentError(f"{what}: {len(keys)} keys but {len(values)} values")
        keep: list = []
        per_value = [value_segments(v, writable, keep) for v in values]
        counts = [len(s) for s in per_value]
        flat = [seg for segs in per_value for seg in segs]
        ptrs = [p for p, _ in flat]
        sizes = [s for _, s in flat]
        vals, segs = build_values(ptrs, sizes, counts, len(keys))
        keep.append(segs)
        return vals, keep

    def batch_set(self, keys: Sequence[Union[str, bytes]], values: Sequence[Any]) -> BatchResult:
        """Stores ``values[i]`` under ``keys[i]`` in one pipelined batch. Returns one
        :class:`Outcome` per key (``OK`` when stored)."""
        vals, keep = self._values_from_objects(keys, values, False, "batch_set")
        raw, err = self._batch_io(self._lib.hicache_valkey_batch_set, "hicache_valkey_batch_set", keys, vals, len(keys))
        del keep
        return _to_outcomes(raw, err)

    def batch_get(self, keys: Sequence[Union[str, bytes]], targets: Sequence[Any]) -> BatchResult:
        """Reads ``keys[i]`` straight into ``targets[i]`` (a writable buffer or list of segments
        whose total size is the stored value's). ``OK`` means exactly the stored bytes are
        there; on any other outcome the target was not written (except ``CHECKSUM_MISMATCH``)."""
        vals, keep = self._values_from_objects(keys, targets, True, "batch_get")
        raw, err = self._batch_io(self._lib.hicache_valkey_batch_get, "hicache_valkey_batch_get", keys, vals, len(keys))
        del keep
        return _to_outcomes(raw, err)

    def set(self, key: Union[str, bytes], value: Any) -> bool:
        """Stores one value; True when stored."""
        return self.batch_set([key], [value])[0] == Outcome.OK

    def get(self, key: Union[str, bytes], target: Any) -> bool:
        """Reads one value into ``target``; True on a hit."""
        return self.batch_get([key], [target])[0] == Outcome.OK

    def batch_set_segments(
        self, keys: Sequence[Union[str, bytes]], ptrs: Any, sizes: Any, segments_per_value: Union[int, Sequence[int]]
    ) -> np.ndarray:
        """Raw form of :meth:`batch_set`: the segments of all values given flat as two arrays of
        addresses and lengths (numpy arrays or lists), ``segments_per_value`` per value (an int
        or one count per value). Returns the int32 outcome array. The caller guarantees the
        memory is valid during the call."""
        n = len(keys)
        vals, segs = build_values(ptrs, sizes, segments_per_value, n)
        raw, _ = self._batch_io(self._lib.hicache_valkey_batch_set, "hicache_valkey_batch_set", keys, vals, n)
        del segs
        return raw

    def batch_get_segments(
        self, keys: Sequence[Union[str, bytes]], ptrs: Any, sizes: Any, segments_per_value: Union[int, Sequence[int]]
    ) -> np.ndarray:
        """Raw form of :meth:`batch_get` (see :meth:`batch_set_segments`); the memory must be
        writable and no two segments may overlap."""
        n = len(keys)
        vals, segs = build_values(ptrs, sizes, segments_per_value, n)
        raw, _ = self._batch_io(self._lib.hicache_valkey_batch_get, "hicache_valkey_batch_get", keys, vals, n)
        del segs
        return raw

    def batch_exists(self, keys: Sequence[Union[str, bytes]]) -> ExistsResult:
        """Which keys exist, in one pipelined batch: ``(leading, found)``."""
        n = len(keys)
        key_arr, key_keep = encode_keys(keys)
        found = np.zeros(max(n, 1), dtype=np.uint8)
        leading = c_size_t(0)
        handle = self._acquire()
        try:
            status = self._lib.hicache_valkey_batch_exists(
                handle, key_arr.ctypes.data_as(POINTER(hicache_key)), n,
                found.ctypes.data_as(POINTER(c_uint8)), byref(leading),
            )
            check(status, "hicache_valkey_batch_exists")
        finally:
            self._release()
        del key_keep
        return ExistsResult(int(leading.value), found[:n].astype(bool).tolist())

    def leading_hits(self, keys: Sequence[Union[str, bytes]]) -> int:
        """How many keys exist in a row from the first (one pipelined batch)."""
        n = len(keys)
        key_arr, key_keep = encode_keys(keys)
        leading = c_size_t(0)
        handle = self._acquire()
        try:
            status = self._lib.hicache_valkey_batch_exists(
                handle, key_arr.ctypes.data_as(POINTER(hicache_key)), n, None, byref(leading)
            )
            check(status, "hicache_valkey_batch_exists")
        finally:
            self._release()
        del key_keep
        return int(leading.value)

    # -- housekeeping --------------------------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        """The server's figures (memory, keyspace hits/misses, clients, this model's key count)
        and this handle's counters, as a dict. Costs a SCAN: for operators, not the data path."""
        out = hicache_stats()
        out.struct_size = ctypes.sizeof(hicache_stats)
        handle = self._acquire()
        try:
            check(self._lib.hicache_valkey_stats(handle, byref(out)), "hicache_valkey_stats")
        finally:
            self._release()
        d: Dict[str, Any] = {}
        for name, _ in hicache_stats._fields_:
            if name in ("struct_size", "reserved"):
                continue
            v = getattr(out, name)
            d[name] = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
        return d

    def clear(self) -> int:
        """Deletes every key of this model (all ranks) in this database; returns the count."""
        deleted = c_uint64(0)
        handle = self._acquire()
        try:
            check(self._lib.hicache_valkey_clear(handle, byref(deleted)), "hicache_valkey_clear")
        finally:
            self._release()
        return int(deleted.value)

    def ping(self) -> int:
        """One PING round trip; returns its duration in microseconds."""
        rtt = c_uint64(0)
        handle = self._acquire()
        try:
            check(self._lib.hicache_valkey_ping(handle, byref(rtt)), "hicache_valkey_ping")
        finally:
            self._release()
        return int(rtt.value)
