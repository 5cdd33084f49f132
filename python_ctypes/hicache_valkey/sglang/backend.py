"""``ValkeyHiCacheStorage``: SGLang's HiCacheStorage (v0 and v1) over the C library.

Imported by SGLang through its ``dynamic`` storage backend path::

    --hicache-storage-backend dynamic --hicache-storage-backend-extra-config \
      '{"backend_name":"valkey","module_path":"hicache_valkey.sglang",
        "class_name":"ValkeyHiCacheStorage","interface_v1":1,"host":"127.0.0.1","port":6379}'

which constructs it as ``ValkeyHiCacheStorage(storage_config, kwargs)``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from sglang.srt.mem_cache.hicache_storage import (
    HiCacheStorage,
    HiCacheStorageConfig,
    HiCacheStorageExtraInfo,
)

from ..errors import HiCacheValkeyError, InvalidConfigError
from ..store import ValkeyStore, buffer_address
from .page_format import UNREGISTERED, PageFormat, describe_pool

logger = logging.getLogger(__name__)

MODULE_PATH = "hicache_valkey.sglang"
CLASS_NAME = "ValkeyHiCacheStorage"
BACKEND_NAME = "valkey"

#: Settings read from extra_config, then from the constructor's kwargs. What is left unset the
#: C library takes from VALKEY_URL/HOST/PORT/DB/USERNAME/PASSWORD and HICACHE_VALKEY_*, else
#: from its defaults.
SETTING_TYPES: Dict[str, type] = {
    "url": str,
    "host": str,
    "port": int,
    "db": int,
    "username": str,
    "password": str,
    "connections": int,
    "timeout_ms": int,
    "connect_timeout_ms": int,
    "checksum": bool,
    "model_name": str,
}

#: extra_config keys that belong to SGLang (or to other layers) and are ignored here.
_FOREIGN_KEYS = {
    "backend_name",
    "module_path",
    "class_name",
    "interface_v1",
    "prefetch_threshold",
    "prefetch_timeout_base",
    "prefetch_timeout_per_ki_token",
    "hicache_storage_pass_prefix_keys",
    "tp_lcm_size",
}


def _convert(key: str, value: Any, typ: type) -> Any:
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return bool(value)
        s = str(value).strip().lower()
        if s in ("1", "true", "on", "yes"):
            return True
        if s in ("0", "false", "off", "no"):
            return False
        raise InvalidConfigError(f"extra-config {key}={value!r} is not a boolean (use true/false)")
    if typ is int:
        if isinstance(value, bool):
            raise InvalidConfigError(f"extra-config {key}={value!r} is not an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise InvalidConfigError(f"extra-config {key}={value!r} is not an integer") from None
    return str(value)


def resolve_settings(extra_config: Optional[dict], kwargs: Optional[dict]) -> Dict[str, Any]:
    """Connection settings: extra_config over kwargs (the environment and the defaults are
    applied by the C library to whatever is left out)."""
    extra = dict(extra_config or {})
    kw = dict(kwargs or {})
    out: Dict[str, Any] = {}
    for key, typ in SETTING_TYPES.items():
        for source in (extra, kw):
            v = source.get(key)
            if v is not None and v != "":
                out[key] = _convert(key, v, typ)
                break
    unknown = sorted((set(extra) - set(SETTING_TYPES) - _FOREIGN_KEYS) | (set(kw) - set(SETTING_TYPES)))
    if unknown:
        logger.warning("hicache-valkey: ignoring unknown settings %s (known: %s)", unknown, sorted(SETTING_TYPES))
    return out


class ValkeyHiCacheStorage(HiCacheStorage):
    """SGLang HiCache L3 storage in Valkey.

    * v1 (``interface_v1``): ``batch_get_v1`` / ``batch_set_v1`` move a batch of pages between the
      host pool and Valkey in one C call, straight from/to the pool's memory
      (``get_page_buffer_meta``), one value per page (its 1, 2, L or 2L buffers concatenated).
    * v0: ``get``/``set``/``batch_get``/``batch_set`` on the flat page tensors the controller
      passes, zero-copy; pages are stored in the same byte order as v1.
    * ``batch_exists``: one pipelined EXISTS batch, the leading hit count.

    Keys: ``hicache:{model}:t{tp_rank}of{tp_size}:{key}`` (MLA: ``hicache:{model}:mla:{key}``), plus
    ``pp{r}of{n}`` / ``cp{r}of{n}`` parts under pipeline / context parallelism. Values carry the
    pool's format fingerprint (see :mod:`.page_format`): a page written with another layout,
    dtype or geometry is a miss, never wrong data.

    Thread-safe: SGLang calls exists, gets and sets from three threads at once.
    """

    def __init__(self, storage_config: HiCacheStorageConfig, kwargs: Optional[dict] = None):
        if storage_config is None:
            raise InvalidConfigError("ValkeyHiCacheStorage needs a HiCacheStorageConfig")
        if getattr(storage_config, "dcp_size", 1) > 1:
            raise InvalidConfigError(
                "ValkeyHiCacheStorage does not support decode context parallelism (dcp_size > 1)"
            )
        if getattr(storage_config, "should_split_heads", False):
            logger.warning(
                "hicache-valkey: split-heads sharing across TP sizes is not supported; pages are "
                "keyed by tp_rank and tp_size and shared only between equal TP sizes"
            )
        self.storage_config = storage_config
        extra = dict(storage_config.extra_config or {})
        self.settings = resolve_settings(extra, kwargs)
        model_name = self.settings.pop("model_name", None) or storage_config.model_name or "default"
        self.model_name = model_name
        self.is_mla = bool(storage_config.is_mla_model)
        writer = getattr(storage_config, "is_storage_writer", None)
        self.is_storage_writer = bool(writer) if writer is not None else (not self.is_mla or storage_config.tp_rank == 0)
        self.interface_v1 = bool(extra.get("interface_v1", 0))
        self.enable_storage_metrics = bool(getattr(storage_config, "enable_storage_metrics", False))
        self._namespace = dict(
            model_name=model_name,
            tp_rank=int(storage_config.tp_rank),
            tp_size=int(storage_config.tp_size),
            pp_rank=int(storage_config.pp_rank),
            pp_size=int(storage_config.pp_size),
            cp_rank=int(getattr(storage_config, "attn_cp_rank", 0)),
            cp_size=int(getattr(storage_config, "attn_cp_size", 1)),
            is_mla=self.is_mla,
        )
        self.mem_pool_host = None
        self.page_format: Optional[PageFormat] = None
        self._swap_lock = threading.Lock()
        self._metrics_lock = threading.Lock()
        self._prefetch_pgs: List[int] = []
        self._prefetch_bw: List[float] = []
        self._backup_pgs: List[int] = []
        self._backup_bw: List[float] = []
        # Connect now so a bad address or password fails the attach, not the first request.
        self._store = self._open(UNREGISTERED)
        logger.info("hicache-valkey: connected (%r, writer=%s)", self._store, self.is_storage_writer)

    # -- setup ---------------------------------------------------------------------------------

    def _open(self, value_format: int) -> ValkeyStore:
        return ValkeyStore(**self.settings, **self._namespace, value_format=value_format)

    @property
    def value_format(self) -> int:
        """The fingerprint stored in (and required of) every value."""
        return self._store.value_format

    def register_mem_pool_host(self, mem_pool_host) -> None:
        super().register_mem_pool_host(mem_pool_host)
        if getattr(mem_pool_host, "kv_buffer", None) is None:
            logger.warning(
                "hicache-valkey: host pool %s has no kv_buffer (a logical anchor); pages cannot "
                "be stored", type(mem_pool_host).__name__,
            )
            self.page_format = None
            return
        fmt = describe_pool(mem_pool_host, interface_v1=self.interface_v1)
        with self._swap_lock:
            if fmt.fingerprint != self._store.value_format:
                old, self._store = self._store, self._open(fmt.fingerprint)
                old.close()
            self.page_format = fmt
        logger.info(
            "hicache-valkey: page format %#018x (%s)", fmt.fingerprint,
            ", ".join(f"{k}={v}" for k, v in fmt.description.items() if k not in ("segments", "schema")),
        )

    # -- metrics -------------------------------------------------------------------------------

    def _record(self, pgs: List[int], bw: List[float], pages: int, nbytes: int, seconds: float) -> None:
        if not self.enable_storage_metrics or pages <= 0:
            return
        with self._metrics_lock:
            pgs.append(pages)
            bw.append(nbytes / max(seconds, 1e-9) / 1e9)

    def get_stats(self):
        """SGLang's StorageMetrics: pages and GB/s of each prefetch (get) and backup (set) call
        since the previous call."""
        from sglang.srt.observability.metrics_collector import StorageMetrics

        with self._metrics_lock:
            m = StorageMetrics()
            m.prefetch_pgs.extend(self._prefetch_pgs)
            m.prefetch_bandwidth.extend(self._prefetch_bw)
            m.backup_pgs.extend(self._backup_pgs)
            m.backup_bandwidth.extend(self._backup_bw)
            self._prefetch_pgs.clear()
            self._prefetch_bw.clear()
            self._backup_pgs.clear()
            self._backup_bw.clear()
        return m

    def valkey_stats(self) -> Dict[str, Any]:
        """The server's side: this model's key count (all ranks), memory used (bytes and human),
        keyspace and this handle's hit/miss ratios, connected clients, ... (costs a SCAN)."""
        d = self._store.stats()
        d["model_name"] = self.model_name
        d["value_format"] = self._store.value_format
        return d

    # -- v1: zero-copy from the host pool ------------------------------------------------------

    def _v1_segments(self, keys: Sequence[str], host_indices, what: str):
        fmt = self.page_format
        if fmt is None or not fmt.segment_sizes:
            logger.error("hicache-valkey: %s before a host pool with zero-copy metadata was registered", what)
            return None
        ptrs, sizes = self.mem_pool_host.get_page_buffer_meta(host_indices)
        per = fmt.segments_per_page
        if len(ptrs) != per * len(keys):
            logger.error(
                "hicache-valkey: %s got %d buffers for %d keys (expected %d per page)", what, len(ptrs), len(keys), per
            )
            return None
        return ptrs, sizes, per

    def batch_get_v1(
        self, keys: List[str], host_indices: torch.Tensor, extra_info: Optional[HiCacheStorageExtraInfo] = None
    ) -> List[bool]:
        n = len(keys)
        if n == 0:
            return []
        seg = self._v1_segments(keys, host_indices, "batch_get_v1")
        if seg is None:
            return [False] * n
        ptrs, sizes, per = seg
        t0 = time.perf_counter()
        try:
            outcomes = self._store.batch_get_segments(keys, ptrs, sizes, per)
        except HiCacheValkeyError as e:
            logger.warning("hicache-valkey: batch_get_v1 of %d pages failed: %s", n, e)
            return [False] * n
        dt = time.perf_counter() - t0
        ok = outcomes == 0
        hits = int(ok.sum())
        self._record(self._prefetch_pgs, self._prefetch_bw, hits, hits * self.page_format.page_bytes, dt)
        return ok.tolist()

    def batch_set_v1(
        self, keys: List[str], host_indices: torch.Tensor, extra_info: Optional[HiCacheStorageExtraInfo] = None
    ) -> List[bool]:
        n = len(keys)
        if n == 0:
            return []
        if not self.is_storage_writer:
            # MLA: one rank writes the copy all ranks share. SGLang's controller skips backups on
            # the other ranks and counts them as done (backup_skip); do the same here.
            return [True] * n
        seg = self._v1_segments(keys, host_indices, "batch_set_v1")
        if seg is None:
            return [False] * n
        ptrs, sizes, per = seg
        t0 = time.perf_counter()
        try:
            outcomes = self._store.batch_set_segments(keys, ptrs, sizes, per)
        except HiCacheValkeyError as e:
            logger.warning("hicache-valkey: batch_set_v1 of %d pages failed: %s", n, e)
            return [False] * n
        dt = time.perf_counter() - t0
        ok = outcomes == 0
        stored = int(ok.sum())
        if stored < n:
            logger.warning("hicache-valkey: batch_set_v1 stored %d of %d pages", stored, n)
        self._record(self._backup_pgs, self._backup_bw, stored, stored * self.page_format.page_bytes, dt)
        return ok.tolist()

    # -- v0: flat page tensors -----------------------------------------------------------------

    def _v0_value(self, value: Any, writable: bool, keep: list) -> Tuple[List[int], List[int], Optional[Tuple[Any, Any]]]:
        """Segments of one flat page (in the stored byte order), and (target, staging) when a
        non-contiguous target needs a copy back after a hit."""
        copy_back = None
        if isinstance(value, torch.Tensor):
            if value.device.type != "cpu":
                raise HiCacheValkeyError(f"tensor on {value.device}: only CPU tensors can be stored")
            t = value
            if not t.is_contiguous():
                t = torch.empty_like(value, memory_format=torch.contiguous_format) if writable else value.contiguous()
                if writable:
                    copy_back = (value, t)
            keep.append(t)
            base, nbytes = int(t.data_ptr()), t.numel() * t.element_size()
        else:
            base, nbytes, k = buffer_address(value, writable)
            keep.append(k)
        fmt = self.page_format
        if fmt is not None and fmt.flat_offsets is not None and nbytes == fmt.page_bytes:
            return (fmt.flat_offsets + np.uint64(base)).tolist(), list(fmt.segment_sizes), copy_back
        return [base], [nbytes], copy_back

    def _v0_batch(self, keys: Sequence[str], values: Sequence[Any], writable: bool):
        keep: list = []
        ptrs: List[int] = []
        sizes: List[int] = []
        counts: List[int] = []
        nbytes: List[int] = []
        copies: List[Optional[Tuple[Any, Any]]] = []
        for v in values:
            p, s, c = self._v0_value(v, writable, keep)
            ptrs.extend(p)
            sizes.extend(s)
            counts.append(len(p))
            nbytes.append(sum(s))
            copies.append(c)
        return ptrs, sizes, counts, nbytes, copies, keep

    def get(self, key: str, target_location: Optional[Any] = None, target_sizes: Optional[Any] = None) -> Optional[torch.Tensor]:
        return self.batch_get([key], [target_location] if target_location is not None else None)[0]

    def batch_get(
        self, keys: List[str], target_locations: Optional[Any] = None, target_sizes: Optional[Any] = None
    ) -> List[Optional[torch.Tensor]]:
        n = len(keys)
        if n == 0:
            return []
        if target_locations is None:
            if self.mem_pool_host is None or getattr(self.mem_pool_host, "kv_buffer", None) is None:
                logger.error("hicache-valkey: batch_get without target tensors needs a registered host pool")
                return [None] * n
            target_locations = [self.mem_pool_host.get_dummy_flat_data_page() for _ in keys]
        if len(target_locations) != n:
            logger.error("hicache-valkey: batch_get with %d keys and %d targets", n, len(target_locations))
            return [None] * n
        t0 = time.perf_counter()
        try:
            ptrs, sizes, counts, page_bytes, copies, keep = self._v0_batch(keys, target_locations, True)
            outcomes = self._store.batch_get_segments(keys, ptrs, sizes, counts)
        except HiCacheValkeyError as e:
            logger.warning("hicache-valkey: batch_get of %d pages failed: %s", n, e)
            return [None] * n
        dt = time.perf_counter() - t0
        out: List[Optional[torch.Tensor]] = []
        nbytes = 0
        for i, o in enumerate(outcomes.tolist()):
            if o == 0:
                if copies[i] is not None:
                    copies[i][0].copy_(copies[i][1])
                out.append(target_locations[i])
                nbytes += page_bytes[i]
            else:
                out.append(None)
        del keep
        self._record(self._prefetch_pgs, self._prefetch_bw, sum(x is not None for x in out), nbytes, dt)
        return out

    def set(self, key: str, value: Optional[Any] = None, target_location: Optional[Any] = None, target_sizes: Optional[Any] = None) -> bool:
        if value is None:
            return False
        return self.batch_set([key], [value])

    def batch_set(
        self, keys: List[str], values: Optional[Any] = None, target_locations: Optional[Any] = None, target_sizes: Optional[Any] = None
    ) -> bool:
        n = len(keys)
        if n == 0:
            return True
        if not self.is_storage_writer:
            return True  # see batch_set_v1
        if values is None or len(values) != n:
            logger.error("hicache-valkey: batch_set needs one value per key")
            return False
        t0 = time.perf_counter()
        try:
            ptrs, sizes, counts, _, _, keep = self._v0_batch(keys, values, False)
            outcomes = self._store.batch_set_segments(keys, ptrs, sizes, counts)
        except HiCacheValkeyError as e:
            logger.warning("hicache-valkey: batch_set of %d pages failed: %s", n, e)
            return False
        dt = time.perf_counter() - t0
        del keep
        stored = int((outcomes == 0).sum())
        self._record(self._backup_pgs, self._backup_bw, stored, int(sum(sizes)) if stored == n else 0, dt)
        return stored == n

    # -- existence -----------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        return self.batch_exists([key]) == 1

    def batch_exists(self, keys: List[str], extra_info: Optional[HiCacheStorageExtraInfo] = None) -> int:
        if not keys:
            return 0
        try:
            return self._store.leading_hits(keys)
        except HiCacheValkeyError as e:
            logger.warning("hicache-valkey: batch_exists of %d keys failed: %s", len(keys), e)
            return 0

    # -- housekeeping --------------------------------------------------------------------------

    def clear(self) -> bool:
        """Deletes this model's pages (every rank, every format) -- and nothing else."""
        try:
            n = self._store.clear()
        except HiCacheValkeyError as e:
            logger.error("hicache-valkey: clear failed: %s", e)
            return False
        logger.info("hicache-valkey: cleared %d keys of model %r", n, self.model_name)
        return True

    def close(self) -> None:
        self._store.close()


def default_storage_config(model_name: Optional[str] = None, **fields) -> HiCacheStorageConfig:
    """A single-rank HiCacheStorageConfig (tp/pp/cp 0 of 1, MHA), for programmatic use."""
    base = dict(
        tp_rank=0, tp_size=1, pp_rank=0, pp_size=1, attn_cp_rank=0, attn_cp_size=1,
        is_mla_model=False, enable_storage_metrics=False, is_page_first_layout=True,
        model_name=model_name,
    )
    base.update(fields)
    return HiCacheStorageConfig(**base)


def dynamic_extra_config(extra_config: Optional[dict] = None, interface_v1: bool = True) -> dict:
    """``extra_config`` plus the keys SGLang's ``dynamic`` backend path needs to load this class."""
    extra = dict(extra_config or {})
    extra.setdefault("backend_name", BACKEND_NAME)
    extra["module_path"] = MODULE_PATH
    extra["class_name"] = CLASS_NAME
    extra.setdefault("interface_v1", 1 if interface_v1 else 0)
    return extra


def create_backend(
    config: Optional[HiCacheStorageConfig] = None, mem_pool_host: Any = None, **kwargs: Any
) -> ValkeyHiCacheStorage:
    """Creates the backend through SGLang's own ``StorageBackendFactory.create_backend("dynamic",
    ...)`` (SGLang cannot dispatch the name "valkey" to an outside class), then registers
    ``mem_pool_host`` when given. ``kwargs`` (host, port, db, password, ...) reach the
    constructor as its kwargs dict; extra_config entries take precedence over them."""
    from sglang.srt.mem_cache.storage.backend_factory import StorageBackendFactory

    if config is None:
        config = default_storage_config(kwargs.pop("model_name", None))
    cfg = dataclasses.replace(config, extra_config=dynamic_extra_config(config.extra_config))
    backend = StorageBackendFactory.create_backend("dynamic", cfg, mem_pool_host, **kwargs)
    if mem_pool_host is not None:
        backend.register_mem_pool_host(mem_pool_host)
    return backend
