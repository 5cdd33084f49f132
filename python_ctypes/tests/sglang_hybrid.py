"""Real SGLang host pools of hybrid models on CPU, for the v2 tests and their engine subprocesses.

* KV and the KV-like side pools (SWA window pool, MTP draft pool): SGLang's own
  ``MHATokenToKVPoolHost`` / ``MLATokenToKVPoolHost`` (see ``sglang_pools.make_pool``), each with
  its own geometry, as SGLang's hybrid pool assembler builds them (``build_kv_host_pool``).
* Mamba / linear-attention state: SGLang's own ``MambaPoolHost`` built from a
  ``MambaStateBufferInfo`` of CPU tensors (what ``build_mamba_host_pool`` gets from the device
  pool), ``pin_memory=False``.
* ``make_group``: SGLang's ``HostPoolGroup`` of ``PoolEntry`` s (KV anchor + side pools), what the
  hybrid controller registers with a storage backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from sglang_pools import make_pool

HYBRID_LAYOUTS = ("page_first", "page_first_direct")

#: Side-pool geometries (deliberately unlike the KV pool's, so a mix-up shows as wrong bytes).
SWA_GEOMETRY = dict(layers=2, heads=1, head_dim=16)
SWA_GEOMETRY_MLA = dict(layers=2, kv_lora_rank=8, qk_rope_head_dim=8)
DRAFT_GEOMETRY = dict(layers=1)


def swa_geometry(kind: str) -> dict:
    return SWA_GEOMETRY if kind == "mha" else SWA_GEOMETRY_MLA


def make_mamba_pool(
    layout: str,
    slots: int,
    *,
    layers: int = 2,
    temporal_shape: Tuple[int, ...] = (2, 4, 8),
    conv_shapes: Tuple[Tuple[int, ...], ...] = ((16, 3),),
    temporal_dtype: torch.dtype = torch.float32,
    conv_dtype: torch.dtype = torch.bfloat16,
    extra_state_shapes: Tuple[Tuple[int, ...], ...] = (),
):
    """A real ``MambaPoolHost`` with at least ``slots`` state slots (SGLang adds a padding slot)."""
    from sglang.srt.mem_cache.device_pool_info import MambaStateBufferInfo
    from sglang.srt.mem_cache.pool_host.mamba import MambaPoolHost

    dev_slots = max(2, slots)
    info = MambaStateBufferInfo(
        temporal=torch.zeros((layers, dev_slots, *temporal_shape), dtype=temporal_dtype),
        conv=tuple(torch.zeros((layers, dev_slots, *s), dtype=conv_dtype) for s in conv_shapes),
        extra_checkpoint_buffers=tuple(torch.zeros((dev_slots, *s), dtype=torch.int32) for s in extra_state_shapes),
    )
    pool = MambaPoolHost(
        info, slots / dev_slots, 0, device_capacity=dev_slots, pin_memory=False, device="cpu", layout=layout
    )
    assert pool.size >= slots, (pool.size, slots)
    return pool


def pool_tensors(pool) -> List[torch.Tensor]:
    """Every buffer of the pool, as flat uint8 views."""
    bufs = pool.kv_buffer if isinstance(pool.kv_buffer, (list, tuple)) else [pool.kv_buffer]
    return [b.view(-1).view(torch.uint8) for b in bufs if b.numel() > 0]


def fill(pool, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for b in pool_tensors(pool):
        b.copy_(torch.randint(0, 256, (b.numel(),), dtype=torch.uint8, generator=g))


def zero(pool) -> None:
    for b in pool_tensors(pool):
        b.zero_()


def snapshot(pool) -> List[torch.Tensor]:
    return [b.clone() for b in pool_tensors(pool)]


def equal_to(pool, snap: List[torch.Tensor]) -> bool:
    return all(torch.equal(a, b) for a, b in zip(pool_tensors(pool), snap))


def is_zero(pool) -> bool:
    return not any(b.any() for b in pool_tensors(pool))


def entry_bytes(pool, entry: int) -> bytes:
    """One entry (a page; for Mamba one slot) in the pool's flat order, as bytes."""
    t = pool.get_data_page(entry * pool.page_size, flat=True).contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes()


def entry_indices(pool, entries: List[int]) -> torch.Tensor:
    """host_indices for whole entries of a pool, in its own index space."""
    ps = pool.page_size
    if not entries:
        return torch.empty(0, dtype=torch.int64)
    return torch.cat([torch.arange(e * ps, (e + 1) * ps, dtype=torch.int64) for e in entries])


@dataclass
class HybridPools:
    """One engine's host pools: KV anchor plus side pools, by SGLang pool name."""

    kv: object
    side: Dict[str, object] = field(default_factory=dict)

    def all(self) -> Dict[str, object]:
        return {"kv": self.kv, **self.side}


def make_hybrid_pools(
    kind: str,
    layout: str,
    pages: int,
    *,
    with_mamba: bool = True,
    with_swa: bool = True,
    with_draft: bool = True,
    mamba_slots: Optional[int] = None,
    swa_pages: Optional[int] = None,
    page_size: int = 4,
    mamba: Optional[dict] = None,
    swa: Optional[dict] = None,
    draft_kind: Optional[str] = None,
) -> HybridPools:
    """KV (MHA or MLA) of ``pages`` pages + Mamba + SWA + draft (same index space as KV). The
    SWA pool has the KV pool's kind, as SGLang's build_hybrid_swa_group builds it; the draft
    pool the KV's kind unless ``draft_kind`` (an MHA draft under an MLA target)."""
    kv = make_pool(kind, layout, pages, page_size=page_size)
    side: Dict[str, object] = {}
    if with_mamba:
        side["mamba"] = make_mamba_pool(layout, mamba_slots or pages, **(mamba or {}))
    if with_swa:
        side["swa"] = make_pool(kind, layout, swa_pages or pages, page_size=page_size, **{**swa_geometry(kind), **(swa or {})})
    if with_draft:
        side["draft"] = make_pool(draft_kind or kind, layout, pages, page_size=page_size, **DRAFT_GEOMETRY)
    return HybridPools(kv, side)


def make_group(pools: HybridPools, kv_device_pool=None, *, include=None):
    """SGLang's ``HostPoolGroup`` over the pools (KV the anchor), as the hybrid controller holds it."""
    from sglang.srt.mem_cache.hicache_storage import PoolName
    from sglang.srt.mem_cache.pool_host import HostPoolGroup, PoolEntry

    entries = [PoolEntry(name=PoolName.KV, host_pool=pools.kv, device_pool=kv_device_pool,
                         layer_mapper=lambda i: i, is_primary_index_anchor=True)]
    for name, pool in pools.side.items():
        if include is not None and name not in include:
            continue
        entries.append(PoolEntry(name=PoolName(name), host_pool=pool, device_pool=None, layer_mapper=lambda i: i))
    return HostPoolGroup(entries)


def register_like_the_controller(backend, pools: HybridPools, *, later: Tuple[str, ...] = ("draft",)):
    """SGLang's registration order (HybridCacheController.attach_storage_backend): the anchor via
    register_mem_pool_host, every pool incl. the anchor as "kv" via register_mem_host_pool_v2,
    one on_host_pools_registered(); the pools in ``later`` afterwards through v2 alone (as
    register_host_pool_entry does for the MTP draft pool)."""
    from sglang.srt.mem_cache.hicache_storage import PoolName

    backend.register_mem_pool_host(pools.kv)
    backend.register_mem_host_pool_v2(pools.kv, PoolName.KV)
    for name, pool in pools.side.items():
        if name not in later:
            backend.register_mem_host_pool_v2(pool, PoolName(name))
    backend.on_host_pools_registered()
    for name in later:
        if name in pools.side:
            backend.register_mem_host_pool_v2(pools.side[name], PoolName(name))


def dynamic_extra(port: int, **extra) -> dict:
    """The extra config SGLang's ``dynamic`` backend path needs to load our class."""
    return {
        "backend_name": "valkey",
        "module_path": "hicache_valkey.sglang",
        "class_name": "ValkeyHiCacheStorage",
        "interface_v1": 1,
        "host": "127.0.0.1",
        "port": port,
        **extra,
    }


def storage_config(model: str, port: int, *, tp_rank: int = 0, tp_size: int = 1, mla: bool = False,
                   layout: str = "page_first", **extra):
    from sglang.srt.mem_cache.hicache_storage import HiCacheStorageConfig

    return HiCacheStorageConfig(
        tp_rank=tp_rank, tp_size=tp_size, pp_rank=0, pp_size=1, attn_cp_rank=0, attn_cp_size=1,
        is_mla_model=mla, enable_storage_metrics=False, is_page_first_layout=layout == "page_first",
        model_name=model, extra_config=dynamic_extra(port, **extra),
    )


def hybrid_backend(port: int, model: str, pools: HybridPools, **cfg):
    """A backend made by SGLang's own factory (so the failure injector wraps it when its variables
    are set), with the pools registered in the controller's order."""
    from sglang.srt.mem_cache.storage.backend_factory import StorageBackendFactory

    config = storage_config(model, port, layout=pools.kv.layout, **cfg)
    backend = StorageBackendFactory.create_backend("dynamic", config, pools.kv)
    register_like_the_controller(backend, pools)
    return backend
