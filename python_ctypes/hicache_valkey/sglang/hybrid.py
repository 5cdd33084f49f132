"""The side pools of hybrid models (SGLang's HiCacheStorage v2): Mamba state, SWA windows, draft
KV, DSA indexer, DeepSeek-V4 pools.

SGLang's hybrid cache controller moves the KV pages through v1 (``batch_get_v1`` /
``batch_set_v1``) and every other host pool through ``batch_get_v2`` / ``batch_set_v2``, one
:class:`SidePool` per pool name here. Each side pool has

* its own value-format fingerprint (:func:`.page_format.describe_side_pool`: geometry, dtypes,
  layout, byte order), stored in every value *and* part of the key, so a pool of another shape
  with the same entry size is a miss both for EXISTS and for GET, never a hit;
* its own key namespace inside the model's: ``hicache:{model}:{ranks}:
  {pool}:{fingerprint:016x}:{page key}``. ``clear()`` of the model (``hicache:{model}:*``)
  therefore removes the side pools too;
* its own rank scope: a pool whose bytes differ per TP rank (Mamba state always -- it is
  TP-sharded even when the model's MLA KV is replicated -- and MHA-geometry pools such as an MHA
  draft under an MLA target) is keyed by tp_rank/tp_size and written by every rank; a pool that
  is replicated on every rank of a rank-replicated (MLA / DeepSeek-V4) model is shared by the
  ranks and written by the storage writer only, like the KV pages.

An entry is one page of the pool (``page_size`` slots of it; a Mamba pool has page size 1, so an
entry is one request state), stored under the page key the controller gives. Transfers are one C
call per pool per batch: zero-copy from the pool's memory (``get_page_buffer_meta``) when the pool
provides it, else through ``get_data_page`` / ``set_from_flat_data_page`` copies.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import HiCacheValkeyError
from ..store import ValkeyStore
from .page_format import SidePoolFormat, describe_side_pool

logger = logging.getLogger(__name__)

#: The pool name of the KV pages (``PoolName.KV``).
KV = "kv"
#: Pools whose bytes are per TP rank whatever the model (SGLang's ``should_backup`` backs Mamba up
#: on every rank even when the MLA KV is written by one).
_ALWAYS_PER_RANK = {"mamba"}


def pool_name(name: Any) -> str:
    """``PoolName.MAMBA`` or ``"mamba"`` -> ``"mamba"``."""
    return str(getattr(name, "value", name))


def _is_mha_geometry(pool: Any) -> bool:
    try:
        from sglang.srt.mem_cache.pool_host.mha import MHATokenToKVPoolHost

        if isinstance(pool, MHATokenToKVPoolHost):
            return True
    except Exception:  # pragma: no cover - SGLang without the pool module
        pass
    return hasattr(pool, "head_num") and not hasattr(pool, "kv_cache_dim")


def is_per_rank(name: str, pool: Any, model_rank_replicated: bool) -> bool:
    """Whether the pool's bytes differ between TP ranks (so they get per-rank keys)."""
    if not model_rank_replicated:
        return True
    return name in _ALWAYS_PER_RANK or _is_mha_geometry(pool)


def leading_run(found: Sequence[bool]) -> int:
    for i, f in enumerate(found):
        if not f:
            return i
    return len(found)


def trailing_restorable(found: Sequence[bool], window: int) -> List[int]:
    """Prefix lengths p (1..len(found)) whose pages [max(0, p - window), p) are all present."""
    window = max(1, int(window))
    missing = np.concatenate(([0], np.cumsum(~np.asarray(found, dtype=bool))))
    out = []
    for p in range(1, len(found) + 1):
        lo = max(0, p - window)
        if missing[p] - missing[lo] == 0:
            out.append(p)
    return out


def block_group_pages(found: Sequence[bool], group_pages: int) -> int:
    """Pages covered by the leading complete groups of ``group_pages`` present pages."""
    g = max(1, int(group_pages or 1))
    groups = len(found) // g
    done = 0
    for i in range(groups):
        if all(found[i * g:(i + 1) * g]):
            done += g
        else:
            break
    return done


@dataclass
class SidePool:
    """One registered side pool: its host pool, format, key scope and store handle."""

    name: str
    pool: Any
    fmt: SidePoolFormat
    per_rank: bool
    store: Optional[ValkeyStore]
    error: Optional[str] = None
    _prefix: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self._prefix = f"{self.name}:{self.fmt.fingerprint:016x}:"

    @property
    def usable(self) -> bool:
        return self.store is not None and self.error is None and self.fmt.entry_bytes > 0

    def keys(self, page_keys: Sequence[str]) -> List[str]:
        p = self._prefix
        return [p + k for k in page_keys]

    # -- I/O: callers check lengths; these raise HiCacheValkeyError on transport failures --------

    def exists(self, page_keys: Sequence[str]) -> List[bool]:
        return self.store.batch_exists(self.keys(page_keys)).found

    def _meta(self, host_indices, n: int) -> Optional[Tuple[list, list]]:
        ptrs, sizes = self.pool.get_page_buffer_meta(host_indices)
        per = self.fmt.segments_per_entry
        if len(ptrs) != per * n or len(sizes) != per * n:
            logger.error(
                "hicache-valkey: pool %s gave %d buffers for %d entries (expected %d each)",
                self.name, len(ptrs), n, per,
            )
            return None
        want = self.fmt.segment_sizes
        for i in range(n):
            if tuple(int(s) for s in sizes[i * per:(i + 1) * per]) != want:
                logger.error("hicache-valkey: pool %s changed its buffer sizes since registration", self.name)
                return None
        return list(ptrs), list(sizes)

    def _slot(self, host_indices, i: int) -> int:
        return int(host_indices[i * self.fmt.page_size])

    def get(self, page_keys: Sequence[str], host_indices) -> List[bool]:
        n = len(page_keys)
        if self.fmt.zero_copy:
            meta = self._meta(host_indices, n)
            if meta is None:
                return [False] * n
            out = self.store.batch_get_segments(self.keys(page_keys), meta[0], meta[1], self.fmt.segments_per_entry)
            return (out == 0).tolist()
        # Copying path: one staging page per entry, one C call, then into the pool.
        import torch

        pages = [self.pool.get_dummy_flat_data_page().contiguous().reshape(-1) for _ in range(n)]
        views = [p.view(torch.uint8) for p in pages]
        if any(v.numel() != self.fmt.entry_bytes for v in views):
            logger.error("hicache-valkey: pool %s staging pages are not %d bytes", self.name, self.fmt.entry_bytes)
            return [False] * n
        out = self.store.batch_get_segments(
            self.keys(page_keys), [v.data_ptr() for v in views], [self.fmt.entry_bytes] * n, 1
        )
        ok = (out == 0).tolist()
        for i in range(n):
            if not ok[i]:
                continue
            try:
                self.pool.set_from_flat_data_page(self._slot(host_indices, i), pages[i])
            except Exception as e:
                logger.warning("hicache-valkey: pool %s could not take entry %d: %s", self.name, i, e)
                ok[i] = False
        del views
        return ok

    def set(self, page_keys: Sequence[str], host_indices) -> List[bool]:
        n = len(page_keys)
        if self.fmt.zero_copy:
            meta = self._meta(host_indices, n)
            if meta is None:
                return [False] * n
            out = self.store.batch_set_segments(self.keys(page_keys), meta[0], meta[1], self.fmt.segments_per_entry)
            return (out == 0).tolist()
        import torch

        pages = []
        for i in range(n):
            p = self.pool.get_data_page(self._slot(host_indices, i), flat=True).contiguous().reshape(-1)
            pages.append(p.view(torch.uint8))
        if any(p.numel() != self.fmt.entry_bytes for p in pages):
            logger.error("hicache-valkey: pool %s data pages are not %d bytes", self.name, self.fmt.entry_bytes)
            return [False] * n
        out = self.store.batch_set_segments(
            self.keys(page_keys), [p.data_ptr() for p in pages], [self.fmt.entry_bytes] * n, 1
        )
        del pages
        return (out == 0).tolist()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


class SidePools:
    """The registered side pools of one backend. Registration (scheduler thread) may race with
    transfers (prefetch and backup threads): the name -> pool map is replaced, never mutated."""

    def __init__(self, open_store):
        #: ``open_store(value_format, per_rank) -> ValkeyStore``
        self._open_store = open_store
        self._lock = threading.Lock()
        self._pools: Dict[str, SidePool] = {}

    def get(self, name: Any) -> Optional[SidePool]:
        return self._pools.get(pool_name(name))

    def all(self) -> Dict[str, SidePool]:
        return dict(self._pools)

    def register(self, name: Any, pool: Any, model_rank_replicated: bool) -> SidePool:
        """Describes the pool and opens its store. Never raises: a pool that cannot be used is
        kept with ``error`` set, and its transfers fail (misses), nothing else."""
        n = pool_name(name)
        per_rank = is_per_rank(n, pool, model_rank_replicated)
        try:
            fmt = describe_side_pool(pool, n)
        except Exception as e:
            logger.error("hicache-valkey: cannot describe host pool %s (%s): %s", n, type(pool).__name__, e)
            fmt = SidePoolFormat({"role": n, "error": repr(e)}, 0, int(getattr(pool, "page_size", 1) or 1), (), 0)
            side = SidePool(n, pool, fmt, per_rank, None, error=f"cannot describe the pool: {e}")
            self._install(side)
            return side
        error = None
        store = None
        if fmt.entry_bytes <= 0:
            error = "the pool exposes neither page buffer metadata nor flat data pages"
        else:
            try:
                store = self._open_store(fmt.fingerprint, per_rank)
            except HiCacheValkeyError as e:
                error = f"cannot open a store for it: {e}"
        if error:
            logger.error("hicache-valkey: host pool %s cannot be stored: %s", n, error)
        side = SidePool(n, pool, fmt, per_rank, store, error=error)
        self._install(side)
        logger.info(
            "hicache-valkey: side pool %s (%s): format %#018x, %d bytes per entry of %d slot(s), %s, %s",
            n, type(pool).__name__, fmt.fingerprint, fmt.entry_bytes, fmt.page_size,
            "zero-copy" if fmt.zero_copy else "copying", "per TP rank" if per_rank else "shared by TP ranks",
        )
        return side

    def _install(self, side: SidePool) -> None:
        with self._lock:
            old = self._pools.get(side.name)
            pools = dict(self._pools)
            pools[side.name] = side
            self._pools = pools
        if old is not None and old is not side:
            old.close()

    def close(self) -> None:
        with self._lock:
            pools, self._pools = self._pools, {}
        for side in pools.values():
            try:
                side.close()
            except Exception:  # pragma: no cover - close never raises today
                logger.exception("hicache-valkey: closing side pool %s failed", side.name)
