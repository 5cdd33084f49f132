"""SGLang's own cache controllers (``HiCacheController``, ``HybridCacheController``) built for real
on CPU, attached to our backend through SGLang's ``dynamic`` path, with their storage threads
(prefetch, prefetch I/O, prefetch sync, backup) running.

What SGLang's scheduler thread would do around them (the radix tree: which nodes to back up,
allocating host staging for a storage hit) is done here by the helpers, following
``UnifiedRadixCache`` (``write_backup_storage``, ``_try_alloc_storage_hit``,
``_alloc_prefetch_aux_staging``). Everything below the controller -- hit queries, batching by
STORAGE_BATCH_SIZE, v1/v0 KV transfers, v2 side-pool transfers, trailing-key re-alignment, the
MIN reductions (single rank: no-ops) -- is SGLang's code.
"""

from __future__ import annotations

import hashlib
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from sglang_hybrid import HybridPools, dynamic_extra

QUEUE_TIMEOUT_S = 60.0


class PythonPageHash:
    """Stands in for SGLang's native page hash (``cpp_utils/hash_binding.cpp``, a JIT-built C++
    extension that needs ninja, which the test venv does not have) with the same algorithm for
    plain token ids: page digest = SHA-256(previous page's digest, if any || the page's token ids
    as little-endian uint32). Everything around it (``get_storage_hash_str``,
    ``_native_hash_input``) stays SGLang's."""

    @staticmethod
    def get_hash(raw, logical_len, unit_width, is_bigram, prior_digest, page_size=None):
        if is_bigram or unit_width != 1:
            raise NotImplementedError("the stand-in hashes plain token ids only")
        tokens = list(raw[:logical_len])
        if any(t < 0 or t > 0xFFFFFFFF for t in tokens):
            raise NotImplementedError("the stand-in hashes uint32 token ids only")

        def digest(prev, page):
            h = hashlib.sha256()
            if prev is not None:
                h.update(prev)
            h.update(b"".join(int(t).to_bytes(4, "little") for t in page))
            return h.digest()

        if page_size is None:
            return digest(prior_digest, tokens).hex()
        out, prev = [], prior_digest
        for start in range(0, logical_len, page_size):
            prev = digest(prev, tokens[start:start + page_size])
            out.append(prev.hex())
        return out


def use_python_page_hash(monkeypatch) -> None:
    from sglang.srt.mem_cache.cpp_utils import native_hash

    monkeypatch.setattr(native_hash, "_load_native_hash_module", lambda: PythonPageHash)


@contextmanager
def parallel_ranks(tp_rank: int = 0, tp_size: int = 1):
    """SGLang's runtime parallel context for one rank, without torch.distributed (the controllers'
    rank reductions have no groups then, as on a single rank)."""
    from sglang.srt.runtime_context import get_parallel

    with get_parallel().override(
        tp_rank=tp_rank, tp_size=tp_size, pp_rank=0, pp_size=1, attn_dcp_size=1, attn_dcp_rank=0
    ):
        yield


def make_kv_pair(kind: str, layout: str, pages: int, *, page_size: int = 4, layers: int = 3, heads: int = 2,
                 head_dim: int = 8, kv_lora_rank: int = 16, qk_rope_head_dim: int = 8, dtype=torch.bfloat16):
    """SGLang's CPU device KV pool, its allocator and its real host pool of exactly ``pages`` pages."""
    from sglang.srt.mem_cache.allocator import TokenToKVPoolAllocator
    from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool, MLATokenToKVPool
    from sglang.srt.mem_cache.pool_host.mha import MHATokenToKVPoolHost
    from sglang.srt.mem_cache.pool_host.mla import MLATokenToKVPoolHost

    size = pages * page_size
    common = dict(host_to_device_ratio=1.0, host_size=0, page_size=page_size, layout=layout, pin_memory=False,
                  device="cpu", start_layer=0, end_layer=layers, host_token_capacity=size)
    if kind == "mha":
        dev = MHATokenToKVPool(size, page_size, dtype, head_num=heads, head_dim=head_dim, layer_num=layers,
                               device="cpu", enable_memory_saver=False, start_layer=0, end_layer=layers)
        host = MHATokenToKVPoolHost(dev.get_device_pool_infos()[0].buffer_info, device_capacity_tokens=dev.size, **common)
    else:
        dev = MLATokenToKVPool(size, page_size, dtype, kv_lora_rank=kv_lora_rank, qk_rope_head_dim=qk_rope_head_dim,
                               layer_num=layers, device="cpu", enable_memory_saver=False, start_layer=0, end_layer=layers)
        host = MLATokenToKVPoolHost(dev.get_device_pool_infos()[0].buffer_info, device_capacity_tokens=dev.size,
                                    target_layer_num=layers, override_kv_cache_dim=dev.kv_cache_dim, **common)
    alloc = TokenToKVPoolAllocator(size=size, dtype=dtype, device="cpu", kvcache=dev, need_sort=False)
    return dev, alloc, host


def dense_controller(alloc, host, port: int, model: str, *, interface_v1: bool = True, tp_rank: int = 0,
                     tp_size: int = 1, **extra):
    from sglang.srt.managers.cache_controller import HiCacheController

    with parallel_ranks(tp_rank, tp_size):
        return HiCacheController(
            alloc, host, host.page_size, None, threading.Event(), io_backend="direct",
            storage_backend="dynamic", model_name=model,
            storage_backend_extra_config=dynamic_extra(port, interface_v1=int(interface_v1), **extra),
        )


def hybrid_controller(alloc, dev, pools: HybridPools, port: int, model: str, *, interface_v1: bool = True,
                      late: tuple = ("draft",), tp_rank: int = 0, tp_size: int = 1, **extra):
    """HybridCacheController over SGLang's HostPoolGroup (KV anchor + side pools); the pools in
    ``late`` join afterwards through the controller's own register_host_pool_entry (the MTP draft
    pool's path)."""
    from sglang.srt.mem_cache.hicache_storage import PoolName
    from sglang.srt.mem_cache.hybrid_cache.hybrid_cache_controller import HybridCacheController
    from sglang.srt.mem_cache.pool_host import HostPoolGroup, PoolEntry

    entries = [PoolEntry(name=PoolName.KV, host_pool=pools.kv, device_pool=dev, layer_mapper=lambda i: i,
                         is_primary_index_anchor=True)]
    for name, pool in pools.side.items():
        if name not in late:
            entries.append(PoolEntry(name=PoolName(name), host_pool=pool, device_pool=None, layer_mapper=lambda i: i))
    with parallel_ranks(tp_rank, tp_size):
        ctrl = HybridCacheController(
            alloc, HostPoolGroup(entries), pools.kv.page_size, None, threading.Event(), io_backend="direct",
            storage_backend="dynamic", model_name=model,
            storage_backend_extra_config=dynamic_extra(port, interface_v1=int(interface_v1), **extra),
        )
    for name in late:
        if name in pools.side:
            ctrl.register_host_pool_entry(
                PoolEntry(name=PoolName(name), host_pool=pools.side[name], device_pool=None, layer_mapper=lambda i: i)
            )
    return ctrl


def stop(ctrl) -> None:
    ctrl.detach_storage_backend()  # stops the threads and closes the backend (close())


def page_hashes(token_ids: List[int], page_size: int) -> List[str]:
    """SGLang's storage page keys of a token sequence (what the prefetch query computes)."""
    from sglang.srt.mem_cache.utils import get_storage_hash_str

    return list(get_storage_hash_str(token_ids, None, page_size=page_size))


def backup(ctrl, host_indices: torch.Tensor, token_ids: List[int], hash_value: List[str],
           extra_pools=None, prefix_keys=None):
    """One node's write_storage; waits for the backup thread's ack. Returns the operation."""
    if extra_pools is None:
        ctrl.write_storage(host_indices, token_ids, hash_value, prefix_keys)
    else:
        ctrl.write_storage(host_indices, token_ids, hash_value, prefix_keys, extra_pools=extra_pools)
    return ctrl.ack_backup_queue.get(timeout=QUEUE_TIMEOUT_S)


@dataclass
class PrefetchResult:
    operation: object
    hit_tokens: int  # the (rank-reduced) hit query result
    completed_tokens: int
    pool_hits: Dict[str, int]
    host_indices: Optional[torch.Tensor]


def _acks_until_done(ctrl, operation):
    completed, pool_hits = 0, {}
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    while time.monotonic() < deadline:
        ack = ctrl.ack_prefetch_queue.get(timeout=QUEUE_TIMEOUT_S)
        assert ack.operation is operation
        if ack.completed_tokens is not None:
            completed = max(completed, ack.completed_tokens)
        if ack.pool_hits is not None:
            pool_hits = {str(k): v for k, v in ack.pool_hits.items()}
        if ack.completed_req:
            return completed, pool_hits
    raise AssertionError("the prefetch did not complete in time")


def dense_prefetch(ctrl, rid: str, token_ids: List[int]) -> PrefetchResult:
    op = ctrl.prefetch(rid, token_ids)
    hit_op = ctrl.prefetch_hit_queue.get(timeout=QUEUE_TIMEOUT_S)
    assert hit_op is op
    hit = op.storage_hit_count
    if hit == 0:
        return PrefetchResult(op, 0, 0, {}, None)
    host_indices = ctrl.mem_pool_host.alloc(hit)
    assert host_indices is not None
    op.host_indices = host_indices
    ctrl.prefetch_buffer.put(op)
    completed, pool_hits = _acks_until_done(ctrl, op)
    return PrefetchResult(op, hit, completed, pool_hits, host_indices)


def hybrid_prefetch(ctrl, rid: str, token_ids: List[int], query_pools) -> PrefetchResult:
    """The hybrid prefetch path: hit query with the components' PREFETCH transfers (placeholder
    keys, KV-derived pools with keys=None), host staging at hit time (KV through the controller's
    allocate_storage_hit, the side pools like UnifiedRadixCache._alloc_prefetch_aux_staging),
    then SGLang's transfer threads."""
    from sglang.srt.mem_cache.base_prefix_cache import CacheRequestHandle

    op = ctrl.prefetch(CacheRequestHandle(rid, 0), token_ids, None, None, extra_pools=query_pools)
    hit_op = ctrl.prefetch_hit_queue.get(timeout=QUEUE_TIMEOUT_S)
    assert hit_op is op
    hit = op.storage_hit_count
    if hit == 0:
        return PrefetchResult(op, 0, 0, {}, None)
    host_indices, alloc_len = ctrl.allocate_storage_hit(
        op, hit, allow_partial=True, min_tokens=ctrl.page_size, evict_host=lambda n: 0
    )
    assert host_indices is not None and alloc_len == hit
    hit_pages = hit // ctrl.page_size
    group = ctrl.mem_pool_host
    for t in op.pool_transfers or []:
        if t.host_indices is not None or t.indices_from_pool:
            continue
        entry = group.entry_map[t.name]
        num = min(len(t.keys or ()), hit_pages) * entry.host_pool.page_size
        if num:
            t.host_indices = group.alloc(num, pool=t.name)
            assert t.host_indices is not None
    op.host_indices = host_indices
    op.hash_value = op.hash_value[:hit_pages]
    ctrl.prefetch_buffer.put(op)
    completed, pool_hits = _acks_until_done(ctrl, op)
    return PrefetchResult(op, hit, completed, pool_hits, host_indices)
