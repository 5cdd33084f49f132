"""``ValkeyHiCacheStorage``: SGLang's HiCacheStorage (v0, v1 and the hybrid models' v2) over the
C library.

Imported by SGLang through its ``dynamic`` storage backend path::

    --hicache-storage-backend dynamic --hicache-storage-backend-extra-config \
      '{"backend_name":"valkey","module_path":"hicache_valkey.sglang",
        "class_name":"ValkeyHiCacheStorage","interface_v1":1,"host":"127.0.0.1","port":6379}'

which constructs it as ``ValkeyHiCacheStorage(storage_config, kwargs)``.
"""

from __future__ import annotations

import dataclasses
import os
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
    PoolHitPolicy,
    PoolName,
    PoolTransfer,
    PoolTransferResult,
)

from ..errors import HiCacheValkeyError, InvalidConfigError
from ..store import ValkeyStore, buffer_address
from .hybrid import KV, SidePools, block_group_pages, leading_run, pool_name, trailing_restorable
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
    "skip_existing": bool,
    "model_name": str,
    "socket_path": str,
    "tls": bool,
    "tls_ca_cert": str,
    "tls_cert": str,
    "tls_key": str,
    "tls_server_name": str,
    "tls_insecure_skip_verify": bool,
}

#: The backend's own default for ``skip_existing`` (the C library's is off): engines sharing one
#: Valkey back up the same prefix pages, and a key already stored in this page format is then not
#: sent again (a 32-byte GETRANGE per key instead of the page; for new pages only one EXISTS per
#: batch). ``skip_existing: false`` in
#: extra_config or ``HICACHE_VALKEY_SKIP_EXISTING=0`` turns it off. See README "Performance".
SKIP_EXISTING_DEFAULT = True

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
    if "skip_existing" not in out and os.environ.get("HICACHE_VALKEY_SKIP_EXISTING") is None:
        out["skip_existing"] = SKIP_EXISTING_DEFAULT
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
    * v2 (hybrid models: Mamba, SWA, draft, indexer, DeepSeek-V4 pools): ``batch_exists_v2`` /
      ``batch_get_v2`` / ``batch_set_v2`` move each side pool registered through
      ``register_mem_host_pool_v2`` in one C call per pool, with the pool's own format
      fingerprint and key namespace (see :mod:`.hybrid`); a transfer named ``"kv"`` takes the v1
      path. None of them raises: failures are misses.

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
        #: The anchor pool has no bytes of its own (SGLang's LogicalHostPool, DeepSeek-V4): its
        #: pages live entirely in KV-derived side pools.
        self.kv_is_logical = False
        self.registered_pools: Dict[str, Any] = {}
        self._side = SidePools(self._open_side_store)
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

    def _open_side_store(self, value_format: int, per_rank: bool) -> ValkeyStore:
        ns = dict(self._namespace)
        ns["is_mla"] = not per_rank  # per-rank pools keep tp_rank/tp_size in their keys
        return ValkeyStore(**self.settings, **ns, value_format=value_format)

    @property
    def value_format(self) -> int:
        """The fingerprint stored in (and required of) every value."""
        return self._store.value_format

    def register_mem_pool_host(self, mem_pool_host) -> None:
        super().register_mem_pool_host(mem_pool_host)
        if getattr(mem_pool_host, "kv_buffer", None) is None:
            # A logical anchor (DeepSeek-V4's LogicalHostPool) only owns allocation indices;
            # the bytes of its pages are in the KV-derived side pools (v2).
            logger.info(
                "hicache-valkey: host pool %s has no kv_buffer (a logical anchor): its pages are "
                "stored through the side pools only", type(mem_pool_host).__name__,
            )
            self.page_format = None
            self.kv_is_logical = True
            return
        self.kv_is_logical = False
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
        d["side_pools"] = {
            n: {"value_format": p.fmt.fingerprint, "entry_bytes": p.fmt.entry_bytes, "per_rank": p.per_rank,
                "zero_copy": p.fmt.zero_copy, "usable": p.usable}
            for n, p in self._side.all().items()
        }
        return d

    # -- v1: zero-copy from the host pool ------------------------------------------------------

    def _v1_segments(self, keys: Sequence[str], host_indices, what: str):
        fmt = self.page_format
        if fmt is None or not fmt.segment_sizes:
            logger.error("hicache-valkey: %s before a host pool with zero-copy metadata was registered", what)
            return None
        page_size = int(self.mem_pool_host.page_size)
        if host_indices is None or int(host_indices.numel()) != len(keys) * page_size:
            logger.error(
                "hicache-valkey: %s with %d keys and %s host indices (expected %d per page)", what, len(keys),
                None if host_indices is None else int(host_indices.numel()), page_size,
            )
            return None
        try:
            ptrs, sizes = self.mem_pool_host.get_page_buffer_meta(host_indices)
        except Exception as e:
            logger.error("hicache-valkey: %s: the host pool gave no buffer metadata: %s", what, e)
            return None
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
        if self.kv_is_logical:
            return [True] * n  # nothing to move: the side pools (v2) carry the bytes
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
        if not self.is_storage_writer or self.kv_is_logical:
            # MLA: one rank writes the copy all ranks share. SGLang's controller skips backups on
            # the other ranks and counts them as done (backup_skip); do the same here. A logical
            # anchor has no bytes to write.
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
            return False  # nothing was stored (SGLang never backs up an empty batch)
        if values is None or len(values) != n:
            logger.error("hicache-valkey: batch_set needs one value per key")
            return False
        if any(v is None for v in values):
            logger.error("hicache-valkey: batch_set with a None value")
            return False
        if not self.is_storage_writer:
            return True  # see batch_set_v1
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

    # -- v2: the side pools of hybrid models -------------------------------------------------

    def register_mem_host_pool_v2(self, host_pool, host_pool_name) -> None:
        """One pool of a hybrid model's host pool group (the anchor comes again as "kv"). Also
        called later for a pool that joins at run time (the MTP draft pool). Never raises: a
        pool that cannot be stored is logged and its transfers are misses."""
        try:
            super().register_mem_host_pool_v2(host_pool, host_pool_name)
            name = pool_name(host_pool_name)
            if name == KV:
                if self.mem_pool_host is None:
                    self.register_mem_pool_host(host_pool)
                elif host_pool is not self.mem_pool_host:
                    logger.warning(
                        "hicache-valkey: a \"kv\" pool (%s) other than the anchor (%s) was registered; "
                        "KV pages keep moving through the anchor", type(host_pool).__name__,
                        type(self.mem_pool_host).__name__,
                    )
                return
            self._side.register(name, host_pool, self.is_mla)
        except Exception:
            logger.exception("hicache-valkey: registering host pool %r failed", host_pool_name)

    def on_host_pools_registered(self) -> None:
        pools = self._side.all()
        bad = sorted(n for n, p in pools.items() if not p.usable)
        logger.info(
            "hicache-valkey: host pools registered: kv (%s)%s%s",
            "logical" if self.kv_is_logical else type(self.mem_pool_host).__name__ if self.mem_pool_host is not None else "none",
            "".join(f", {n}" for n in sorted(pools)),
            f"; unusable (their transfers will miss): {bad}" if bad else "",
        )

    def side_pool_formats(self) -> Dict[str, int]:
        """Pool name -> value-format fingerprint of every registered side pool."""
        return {n: p.fmt.fingerprint for n, p in self._side.all().items()}

    def batch_exists_v2(
        self,
        keys: List[str],
        pool_transfers: Optional[List[PoolTransfer]] = None,
        extra_info: Optional[HiCacheStorageExtraInfo] = None,
    ) -> PoolTransferResult:
        """Which prefixes of ``keys`` (the queried span's page keys) can be restored.

        KV hits are the leading run of present pages. Each side pool is looked up under the page
        keys of the span (its transfer's keys are placeholders at query time; only their count,
        the trailing window, matters): an ALL_PAGES pool restores a prefix up to its first missing
        entry; a TRAILING_PAGES pool with window w restores prefix p only if entries
        [max(0, p - w), p) are present; a BLOCK_GROUPS pool reports the pages its leading
        complete key groups cover and gates nothing. ``restorable_prefix_pages`` is the
        intersection over all pools (it can have holes), ``kv_hit_pages`` its maximum and
        ``extra_pool_hit_pages`` each pool's own boundary."""
        try:
            return self._exists_v2(list(keys or []), list(pool_transfers or []))
        except Exception:
            logger.exception("hicache-valkey: batch_exists_v2 of %d keys failed", len(keys or []))
            return PoolTransferResult(0, {}, [])

    def _exists_v2(self, keys: List[str], transfers: List[PoolTransfer]) -> PoolTransferResult:
        n = len(keys)
        if n == 0:
            return PoolTransferResult(0, {}, [])
        side_transfers = [t for t in transfers if pool_name(t.name) != KV]
        if self.kv_is_logical:
            # No KV bytes to look up: the KV-derived side pools decide. Without one, nothing.
            data = any(
                (p := self._side.get(t.name)) is not None and p.usable for t in side_transfers
            )
            kv_pages = n if data else 0
        else:
            try:
                kv_pages = self._store.leading_hits(keys)
            except HiCacheValkeyError as e:
                logger.warning("hicache-valkey: batch_exists_v2 of %d keys failed: %s", n, e)
                kv_pages = 0
        hits: Dict[Any, int] = {PoolName.KV: kv_pages}
        if kv_pages == 0:
            return PoolTransferResult(0, hits, [])
        span = keys[:kv_pages]
        restorable = set(range(1, kv_pages + 1))
        for t in side_transfers:
            side = self._side.get(t.name)
            found = [False] * kv_pages
            if side is None or not side.usable:
                logger.warning("hicache-valkey: batch_exists_v2 for pool %s, which cannot be stored", pool_name(t.name))
            else:
                try:
                    found = side.exists(span)
                except HiCacheValkeyError as e:
                    logger.warning("hicache-valkey: batch_exists_v2 on pool %s failed: %s", side.name, e)
            policy = t.hit_policy
            if policy == PoolHitPolicy.ALL_PAGES:
                boundary = leading_run(found)
                pool_set: Optional[set] = set(range(1, boundary + 1))
            elif policy == PoolHitPolicy.TRAILING_PAGES:
                window = max(1, len(t.keys) if t.keys else 1)
                ok = trailing_restorable(found, window)
                boundary = ok[-1] if ok else 0
                pool_set = set(ok)
            elif policy == getattr(PoolHitPolicy, "BLOCK_GROUPS", object()):
                boundary = block_group_pages(found, getattr(t, "group_pages", 0))
                pool_set = None  # its own verdict only; it never gates the KV hit
            else:
                logger.warning("hicache-valkey: unknown hit policy %r for pool %s: not restorable", policy, pool_name(t.name))
                boundary, pool_set = 0, set()
            if boundary:
                hits[t.name] = boundary
            if pool_set is not None:
                restorable &= pool_set
        ordered = sorted(restorable)
        return PoolTransferResult(ordered[-1] if ordered else 0, hits, ordered)

    def batch_get_v2(
        self, transfers: List[PoolTransfer], extra_info: Optional[HiCacheStorageExtraInfo] = None
    ) -> Dict[Any, List[bool]]:
        """Reads every transfer's entries into its pool at its host indices (the pool's own index
        space; a KV-derived pool's are KV's). ``{pool: [bool] * len(keys)}``."""
        return self._batch_io_v2(transfers, write=False)

    def batch_set_v2(
        self, transfers: List[PoolTransfer], extra_info: Optional[HiCacheStorageExtraInfo] = None
    ) -> Dict[Any, List[bool]]:
        """Writes every transfer's entries from its pool. ``{pool: [bool] * len(keys)}``."""
        return self._batch_io_v2(transfers, write=True)

    def _batch_io_v2(self, transfers: Optional[List[PoolTransfer]], write: bool) -> Dict[Any, List[bool]]:
        results: Dict[Any, List[bool]] = {}
        for t in transfers or []:
            n = len(t.keys or [])
            try:
                r = self._transfer_v2(t, write)
            except Exception:
                logger.exception("hicache-valkey: batch_%s_v2 on pool %s failed", "set" if write else "get", pool_name(t.name))
                r = [False] * n
            if t.name in results:  # two transfers of one pool: one flag per entry of each, in order
                results[t.name] = results[t.name] + r
            else:
                results[t.name] = r
        return results

    def _transfer_v2(self, t: PoolTransfer, write: bool) -> List[bool]:
        keys = list(t.keys or [])
        n = len(keys)
        if n == 0:
            return []
        name = pool_name(t.name)
        if name == KV:
            if self.mem_pool_host is None:
                return [False] * n
            return self.batch_set_v1(keys, t.host_indices) if write else self.batch_get_v1(keys, t.host_indices)
        side = self._side.get(name)
        if side is None or not side.usable:
            logger.warning(
                "hicache-valkey: batch_%s_v2 for pool %s, which %s", "set" if write else "get", name,
                "was never registered" if side is None else f"cannot be stored ({side.error})",
            )
            return [False] * n
        hi = t.host_indices
        if hi is None or int(hi.numel()) != n * side.fmt.page_size:
            logger.error(
                "hicache-valkey: pool %s: %d keys but %s host indices (expected %d per entry)",
                name, n, None if hi is None else int(hi.numel()), side.fmt.page_size,
            )
            return [False] * n
        if write and not side.per_rank and not self.is_storage_writer:
            return [True] * n  # a shared pool: the writer rank stores the copy (see batch_set_v1)
        try:
            return side.set(keys, hi) if write else side.get(keys, hi)
        except HiCacheValkeyError as e:
            logger.warning("hicache-valkey: batch_%s_v2 of %d entries of pool %s failed: %s", "set" if write else "get", n, name, e)
            return [False] * n

    # -- housekeeping --------------------------------------------------------------------------

    def clear(self) -> bool:
        """Deletes this model's pages (every rank, every format, every side pool) -- and nothing
        else."""
        try:
            n = self._store.clear()
        except HiCacheValkeyError as e:
            logger.error("hicache-valkey: clear failed: %s", e)
            return False
        logger.info("hicache-valkey: cleared %d keys of model %r", n, self.model_name)
        return True

    def close(self) -> None:
        """Closes every connection (SGLang's detach calls it). Idempotent."""
        self._side.close()
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
