"""``ValkeyStore``: a Pythonic handle over the C library's batch API.

Values are read from / written to the caller's memory directly (no ``.tobytes()`` copies):
anything exposing contiguous memory works -- ``bytes`` (read-only: set only), ``bytearray``,
``memoryview``, numpy arrays, torch CPU tensors (by ``data_ptr()``) -- and so do raw
``(pointer, length)`` segments. A value may be one buffer or a list of segments (scatter-gather:
the stored value is their concatenation).
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import threading
from ctypes import byref, c_char_p, c_int32, c_uint32, c_uint64
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from . import _lib
from ._lib import (
    HandleP,
    check,
    hicache_key,
    hicache_segment,
    hicache_valkey_options,
    hicache_stats,
    hicache_value,
)
from .errors import IncompatibleLayoutError, InvalidArgumentError, InvalidConfigError, StoreClosedError

__all__ = ["ValkeyStore", "Outcome", "BatchResult", "ExistsResult"]

# The C pair structs (hicache_key, hicache_segment, hicache_value: a pointer and a size_t) as
# rows of an (n, 2) uintp array, to build whole arrays of them without a Python loop per item.
_PAIR_BYTES = 2 * np.dtype(np.uintp).itemsize
if not _PAIR_BYTES == ctypes.sizeof(hicache_key) == ctypes.sizeof(hicache_segment) == ctypes.sizeof(hicache_value):
    raise IncompatibleLayoutError(
        f"numpy's (uintp, uintp) is {_PAIR_BYTES} bytes, the C key/segment/value pairs "
        f"{ctypes.sizeof(hicache_key)}/{ctypes.sizeof(hicache_segment)}/{ctypes.sizeof(hicache_value)}"
    )

_U64_MAX = (1 << 64) - 1


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


#: Each outcome code's enum member, looked up instead of constructed (a tenth of the time).
_OUTCOME_OF = {int(o): o for o in Outcome}


def _to_outcomes(raw: np.ndarray, error: str) -> BatchResult:
    get = _OUTCOME_OF.get
    # An outcome newer than this package stays a plain int.
    r = BatchResult(get(v, v) for v in raw.tolist())
    r.error = error
    return r


class _CallArrays:
    """The C side of batch calls -- the ``hicache_key``, ``hicache_segment`` and ``hicache_value``
    arrays, the outcomes, the keys' bytes -- in numpy arrays whose addresses are taken once, when
    they are made or grown. Each thread keeps one between calls (:data:`_per_thread`).

    Why: a call that moved megabytes leaves Python on cold caches, where every allocation, ctypes
    pointer object and numpy operation costs 3-13 us. Before this, with fresh arrays per call,
    the Python side of a 128-page call measured 119-161 us (12-15 % of a call at 16 KiB pages).
    A key array for keys of one length, and a value array for one segment count, stay as they are
    from call to call (only the keys' bytes are copied in)."""

    def __init__(self) -> None:
        self._n = self._nseg = self._nblob = 0
        self._keys_for: Optional[Tuple[int, int]] = None  # (count, length) the key array holds
        self._vals_for: Optional[Tuple[int, int]] = None  # (count, segments per value)
        self._grow(64, 128, 4096)

    def _grow(self, n: int, nseg: int, nblob: int) -> None:
        if n > self._n:
            n = max(n, 2 * self._n)
            self.key_pairs = np.empty((n, 2), np.uintp)
            self.val_pairs = np.empty((n, 2), np.uintp)
            self.out = np.empty(n, np.int32)
            self.found = np.empty(n, np.uint8)
            self.leading = np.empty(1, np.uintp)
            self._iota = np.arange(n, dtype=np.uintp)
            self.keys_at, self.vals_at = self.key_pairs.ctypes.data, self.val_pairs.ctypes.data
            self.out_at, self.found_at, self.leading_at = self.out.ctypes.data, self.found.ctypes.data, self.leading.ctypes.data
            self._n, self._keys_for, self._vals_for = n, None, None
        if nseg > self._nseg:
            nseg = max(nseg, 2 * self._nseg)
            self.seg_pairs = np.empty((nseg, 2), np.uintp)
            self._segs_at = self.seg_pairs.ctypes.data
            self._nseg, self._vals_for = nseg, None
        if nblob > self._nblob:
            nblob = max(nblob, 2 * self._nblob)
            self._blob = np.empty(nblob, np.uint8)
            self._blob_mv = memoryview(self._blob)
            self._blob_at = self._blob.ctypes.data
            self._nblob, self._keys_for = nblob, None

    def set_keys(self, keys: Sequence[Union[str, bytes, bytearray, memoryview]]) -> int:
        """Fills the key array with ``keys`` (str as UTF-8); returns the array's address."""
        n = len(keys)
        enc = [k.encode("utf-8") if isinstance(k, str) else bytes(k) for k in keys]
        blob = b"".join(enc)
        self._grow(n, 0, len(blob))
        self._blob_mv[: len(blob)] = blob
        if not n:
            return self.keys_at
        lens = list(map(len, enc))
        ptr, ln = self.key_pairs[:n, 0], self.key_pairs[:n, 1]
        if lens.count(lens[0]) == n:
            if self._keys_for != (n, lens[0]):
                np.multiply(self._iota[:n], lens[0], out=ptr)
                ptr += self._blob_at
                ln[:] = lens[0]
                self._keys_for = (n, lens[0])
        else:
            ln[:] = lens
            np.cumsum(ln, out=ptr)
            ptr -= ln
            ptr += self._blob_at
            self._keys_for = None
        return self.keys_at

    def set_values(self, ptrs: Any, sizes: Any, segments_per_value: Union[int, Sequence[int], np.ndarray], n: int) -> int:
        """Fills the value and segment arrays for ``n`` values whose segments are given flat
        (``ptrs[i]``, ``sizes[i]``), ``segments_per_value`` each (an int, or one count per value);
        returns the value array's address."""
        ptrs = np.asarray(ptrs, dtype=np.uint64)
        sizes = np.asarray(sizes, dtype=np.uint64)
        if ptrs.ndim != 1 or ptrs.shape != sizes.shape:
            raise InvalidArgumentError(f"ptrs and sizes must be 1-D and of one length, got {ptrs.shape} and {sizes.shape}")
        total = ptrs.shape[0]
        counts = None
        if isinstance(segments_per_value, (int, np.integer)):
            per = int(segments_per_value)
            if per < 0 or per * n != total:
                raise InvalidArgumentError(f"{total} segments cannot be {n} values of {per} segments")
        else:
            counts = np.asarray(segments_per_value, dtype=np.uintp)
            if counts.shape != (n,) or int(counts.sum()) != total:
                raise InvalidArgumentError(f"segment counts {counts.shape} do not describe {total} segments of {n} values")
        self._grow(n, total, 0)
        segs = self.seg_pairs
        segs[:total, 0] = ptrs
        segs[:total, 1] = sizes
        vptr, vlen = self.val_pairs[:n, 0], self.val_pairs[:n, 1]
        if counts is None:
            if self._vals_for != (n, per):
                np.multiply(self._iota[:n], per * _PAIR_BYTES, out=vptr)
                vptr += self._segs_at
                vlen[:] = per
                self._vals_for = (n, per)
        elif n:
            vlen[:] = counts
            np.cumsum(vlen, out=vptr)
            vptr -= vlen
            vptr *= _PAIR_BYTES
            vptr += self._segs_at
            self._vals_for = None
        return self.vals_at


class _PerThread(threading.local):
    """This thread's :class:`_CallArrays`, and whether a call of this thread is building or
    using them (then a signal handler or finalizer that makes a call meanwhile gets arrays of
    its own instead of overwriting them)."""

    def __init__(self) -> None:
        self.arrays = _CallArrays()
        self.busy = False


_per_thread = _PerThread()


def encode_keys(keys: Sequence[Union[str, bytes, bytearray, memoryview]]) -> Tuple[np.ndarray, Any]:
    """A ``hicache_key`` array (``(n, 2)`` of pointer and length) for ``keys`` (str as UTF-8), in
    arrays of its own, and the object keeping their bytes alive."""
    a = _CallArrays()
    a.set_keys(keys)
    return a.key_pairs[: len(keys)], a


def build_values(
    ptrs: Any, sizes: Any, segments_per_value: Union[int, Sequence[int], np.ndarray], n: int
) -> Tuple[np.ndarray, Any]:
    """``hicache_value`` array (``(n, 2)``) for ``n`` values whose segments are given flat
    (``ptrs[i]``, ``sizes[i]``), ``segments_per_value`` each (an int, or one count per value), in
    arrays of their own. Returns ``(values, keepalive)``; keep both alive during the call."""
    a = _CallArrays()
    a.set_values(ptrs, sizes, segments_per_value, n)
    return a.val_pairs[:n], a


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


_addressof, _c_char = ctypes.addressof, ctypes.c_char


def _ndarray_rows(values: Sequence[Any]) -> Optional[Tuple[List[int], List[int]]]:
    """The common case, one numpy array per page, without the general checks: the addresses and
    sizes when every value is a writable, C-contiguous, non-empty ndarray, else None (the general
    path then checks each value and names the one it cannot take). An address through ctypes'
    buffer export, which refuses read-only and non-contiguous memory, takes a third of the time
    of ``ndarray.ctypes.data`` (about 0.25 against 0.8 us a page)."""
    nd = np.ndarray
    if not all(type(v) is nd for v in values):
        return None
    try:
        ptrs = [_addressof(_c_char.from_buffer(v)) for v in values]
    except (TypeError, ValueError, BufferError):
        return None
    return ptrs, [v.nbytes for v in values]


def _opt_int(name: str, v: Any, bits: int = 31) -> int:
    """An integer option between 0 and ``2**bits - 1`` (31 bits: a non-negative ``int32_t``)."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        try:
            v = int(v)  # e.g. "6380" from a config file
        except (TypeError, ValueError):
            raise InvalidConfigError(f"option {name} must be an integer, got {v!r}") from None
    v = int(v)
    if v < 0 or v >= 1 << bits:
        raise InvalidConfigError(f"option {name} must be between 0 and {(1 << bits) - 1}, got {v}")
    return v


def _opt_str(name: str, v: Any) -> bytes:
    if not isinstance(v, str):
        raise InvalidConfigError(f"option {name} must be a string, got {type(v).__name__}")
    b = v.encode("utf-8")
    if b"\0" in b:
        raise InvalidConfigError(f"option {name} contains a NUL character")
    return b


#: Options given as booleans (stored as 1 / 0).
_BOOL_OPTIONS = frozenset({"checksum", "is_mla", "tls", "tls_insecure_skip_verify", "skip_existing"})
#: Integer bits an option may use, by its ctypes field type.
_INT_BITS = {c_int32: 31, c_uint32: 32, c_uint64: 64}


def _fill_options(opts: hicache_valkey_options, given: Dict[str, Any]) -> List[bytes]:
    """Sets each field of ``opts`` named in ``given`` (``None``: left unset, that is, from the
    environment or the default), converted by the field's C type as the struct declares it in
    ``_lib``. Returns the encoded strings, which must stay alive until the struct is used."""
    ctypes_of = dict(hicache_valkey_options._fields_)
    strings = []
    for name, v in given.items():
        if v is None:
            continue
        t = ctypes_of[name]
        if t is c_char_p:
            b = _opt_str(name, v)
            strings.append(b)
            setattr(opts, name, b)
        elif name in _BOOL_OPTIONS:
            setattr(opts, name, 1 if v else 0)
        elif t in _INT_BITS:
            setattr(opts, name, _opt_int(name, v, _INT_BITS[t]))
        else:  # a field type this function does not know yet
            raise TypeError(f"option {name}: no conversion to {t.__name__}")
    return strings


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
        socket_path: Optional[str] = None,
        tls: Optional[bool] = None,
        tls_ca_cert: Optional[str] = None,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
        tls_server_name: Optional[str] = None,
        tls_insecure_skip_verify: Optional[bool] = None,
        skip_existing: Optional[bool] = None,
    ):
        # Keyword argument -> the hicache_valkey_options field of the same name.
        options: Dict[str, Any] = {
            "url": url, "host": host, "port": port, "db": db, "username": username,
            "password": password, "model_name": model_name, "tp_rank": tp_rank, "tp_size": tp_size,
            "pp_rank": pp_rank, "pp_size": pp_size, "cp_rank": cp_rank, "cp_size": cp_size,
            "is_mla": is_mla, "value_format": value_format, "checksum": checksum,
            "connect_timeout_ms": connect_timeout_ms, "timeout_ms": timeout_ms,
            "connections": connections, "socket_path": socket_path,
            "tls": tls, "tls_ca_cert": tls_ca_cert, "tls_cert": tls_cert, "tls_key": tls_key,
            "tls_server_name": tls_server_name, "tls_insecure_skip_verify": tls_insecure_skip_verify,
            "skip_existing": skip_existing,
        }
        if not isinstance(value_format, (int, np.integer)) or isinstance(value_format, bool):
            raise InvalidConfigError(f"value_format must be an unsigned 64-bit integer, got {value_format!r}")
        L = _lib.lib()
        self._lib = L
        opts = hicache_valkey_options()
        check(L.hicache_valkey_options_init(byref(opts), ctypes.sizeof(opts)), "hicache_valkey_options_init")
        strings = _fill_options(opts, options)
        ptr = HandleP()
        check(L.hicache_valkey_open(byref(opts), byref(ptr)), "hicache_valkey_open")
        del strings  # referenced until the library copied them
        self._ptr: Optional[Any] = ptr
        self._addr: int = ctypes.cast(ptr, ctypes.c_void_p).value or 0  # the data path passes it as an int
        self._cond = threading.Condition(threading.Lock())
        self._inflight = 0
        self._closing = False
        self.value_format = int(value_format)
        self.model_name = model_name
        self.is_mla = bool(is_mla)
        self._given = {k: v for k, v in options.items() if v is not None and k not in ("is_mla", "value_format")}
        if password is not None:
            self._given["password"] = "***"
        if url is not None and "@" in url:
            self._given["url"] = "<redacted>"

    # -- lifetime ------------------------------------------------------------------------------

    def _enter(self) -> None:
        """Counts a call in; raises :class:`StoreClosedError` once :meth:`close` has started.
        Every ``_enter`` is followed by a :meth:`_leave` (``try``/``finally``); :meth:`close`
        waits until every call that entered has left."""
        with self._cond:
            if self._ptr is None or self._closing:
                raise StoreClosedError("the ValkeyStore is closed")
            self._inflight += 1

    def _leave(self) -> None:
        with self._cond:
            self._inflight -= 1
            if self._closing and self._inflight == 0:
                self._cond.notify_all()

    @contextlib.contextmanager
    def _handle(self) -> Iterator[Any]:
        """The C handle, for one call: ``with self._handle() as h: L.fn(h, ...)`` (see
        :meth:`_enter`)."""
        self._enter()
        try:
            yield self._ptr
        finally:
            self._leave()

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def close(self) -> None:
        """Closes the connections. Waits for calls in flight on other threads; idempotent."""
        with self._cond:
            if self._ptr is None:
                return
            self._closing = True
            while self._inflight:
                self._cond.wait()
            ptr, self._ptr = self._ptr, None
        self._lib.hicache_valkey_close(ptr)

    def __enter__(self) -> "ValkeyStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if getattr(self, "_ptr", None) is not None and not self._inflight:
                self._lib.hicache_valkey_close(self._ptr)
                self._ptr = None
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"ValkeyStore({', '.join(f'{k}={v!r}' for k, v in self._given.items())}) [{state}]"

    # -- data path -----------------------------------------------------------------------------

    def _batch(self, op: str, keys, ptrs: Any, sizes: Any, segments_per_value: Any, rows: bool) -> Any:
        """One ``hicache_valkey_batch_<op>`` call (``op``: "set" or "get") over ``keys`` and their
        values' segments given flat (see :meth:`batch_set_segments`), built in this thread's
        :class:`_CallArrays`. Returns a :class:`BatchResult` when ``rows``, else a copy of the
        int32 outcome array. The caller keeps the memory the segments point into alive."""
        what = f"hicache_valkey_batch_{op}"
        fn = _lib.by_address(what)
        n = len(keys)
        pt = _per_thread
        own = not pt.busy
        a = pt.arrays if own else _CallArrays()
        pt.busy = True
        try:
            keys_at = a.set_keys(keys)
            vals_at = a.set_values(ptrs, sizes, segments_per_value, n)
            self._enter()
            try:
                status = fn(self._addr, keys_at, vals_at, n, a.out_at)
                out = a.out[:n]
                error = _lib.last_error() if status == 0 and n and out.max() > 1 else ""
                check(status, what)
            finally:
                self._leave()
            return _to_outcomes(out, error) if rows else out.copy()
        finally:
            if own:
                pt.busy = False

    def _batch_objects(self, op: str, keys, values: Sequence[Any]) -> BatchResult:
        """:meth:`batch_set` and :meth:`batch_get`: one value object (or list of segments) per key."""
        if len(keys) != len(values):
            raise InvalidArgumentError(f"batch_{op}: {len(keys)} keys but {len(values)} values")
        fast = _ndarray_rows(values)
        if fast is not None:
            return self._batch(op, keys, fast[0], fast[1], 1, True)
        keep: list = []
        per_value = [value_segments(v, op == "get", keep) for v in values]
        flat = [seg for segs in per_value for seg in segs]
        return self._batch(op, keys, [p for p, _ in flat], [s for _, s in flat], [len(s) for s in per_value], True)

    def batch_set(self, keys: Sequence[Union[str, bytes]], values: Sequence[Any]) -> BatchResult:
        """Stores ``values[i]`` under ``keys[i]`` in one pipelined batch. Returns one
        :class:`Outcome` per key (``OK`` when stored)."""
        return self._batch_objects("set", keys, values)

    def batch_get(self, keys: Sequence[Union[str, bytes]], targets: Sequence[Any]) -> BatchResult:
        """Reads ``keys[i]`` straight into ``targets[i]`` (a writable buffer or list of segments
        whose total size is the stored value's). ``OK`` means exactly the stored bytes are
        there; on any other outcome the target was not written (except ``CHECKSUM_MISMATCH``)."""
        return self._batch_objects("get", keys, targets)

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
        return self._batch("set", keys, ptrs, sizes, segments_per_value, False)

    def batch_get_segments(
        self, keys: Sequence[Union[str, bytes]], ptrs: Any, sizes: Any, segments_per_value: Union[int, Sequence[int]]
    ) -> np.ndarray:
        """Raw form of :meth:`batch_get` (see :meth:`batch_set_segments`); the memory must be
        writable and no two segments may overlap."""
        return self._batch("get", keys, ptrs, sizes, segments_per_value, False)

    def _exists(self, keys: Sequence[Union[str, bytes]], found: bool) -> Tuple[int, Optional[List[bool]]]:
        """``hicache_valkey_batch_exists``: the leading count, and one flag per key when
        ``found`` (in this thread's :class:`_CallArrays`, as :meth:`_batch`)."""
        pt = _per_thread
        own = not pt.busy
        a = pt.arrays if own else _CallArrays()
        pt.busy = True
        try:
            n = len(keys)
            keys_at = a.set_keys(keys)
            self._enter()
            try:
                status = _lib.by_address("hicache_valkey_batch_exists")(
                    self._addr, keys_at, n, a.found_at if found else None, a.leading_at
                )
                check(status, "hicache_valkey_batch_exists")
            finally:
                self._leave()
            return int(a.leading[0]), (a.found[:n].astype(bool).tolist() if found else None)
        finally:
            if own:
                pt.busy = False

    def batch_exists(self, keys: Sequence[Union[str, bytes]]) -> ExistsResult:
        """Which keys exist, in one pipelined batch: ``(leading, found)``."""
        leading, found = self._exists(keys, True)
        return ExistsResult(leading, found or [])

    def leading_hits(self, keys: Sequence[Union[str, bytes]]) -> int:
        """How many keys exist in a row from the first (one pipelined batch)."""
        return self._exists(keys, False)[0]

    # -- housekeeping --------------------------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        """The server's figures (memory, keyspace hits/misses, clients, this model's key count)
        and this handle's counters, as a dict. Costs a SCAN: for operators, not the data path."""
        out = hicache_stats()
        out.struct_size = ctypes.sizeof(hicache_stats)
        with self._handle() as h:
            check(self._lib.hicache_valkey_stats(h, byref(out)), "hicache_valkey_stats")
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
        with self._handle() as h:
            check(self._lib.hicache_valkey_clear(h, byref(deleted)), "hicache_valkey_clear")
        return int(deleted.value)

    def ping(self) -> int:
        """One PING round trip; returns its duration in microseconds."""
        rtt = c_uint64(0)
        with self._handle() as h:
            check(self._lib.hicache_valkey_ping(h, byref(rtt)), "hicache_valkey_ping")
        return int(rtt.value)
