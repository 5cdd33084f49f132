"""Real SGLang host KV pools on CPU, for the tests, the sharing subprocesses and the benchmark.

The host pools are SGLang's own ``MHATokenToKVPoolHost`` and ``MLATokenToKVPoolHost``. Their
constructors read shapes and dtype from a *device* pool's buffer info; that device pool is SGLang's
real ``MHATokenToKVPool`` / ``MLATokenToKVPool`` too, built with ``device="cpu"`` (no CUDA needed),
sized to one page since only its geometry is read. ``pin_memory=False`` (pinning needs a driver).
"""

from __future__ import annotations

import hashlib
from typing import List

import torch

LAYOUTS = ("layer_first", "page_first", "page_first_direct")


def make_pool(
    kind: str,
    layout: str,
    pages: int,
    *,
    page_size: int = 4,
    layers: int = 3,
    heads: int = 2,
    head_dim: int = 8,
    kv_lora_rank: int = 16,
    qk_rope_head_dim: int = 8,
    dtype: torch.dtype = torch.bfloat16,
):
    """A host pool of exactly ``pages`` pages (no padding page)."""
    from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool, MLATokenToKVPool
    from sglang.srt.mem_cache.pool_host.mha import MHATokenToKVPoolHost
    from sglang.srt.mem_cache.pool_host.mla import MLATokenToKVPoolHost

    common = dict(
        host_to_device_ratio=1.0,
        host_size=0,
        page_size=page_size,
        layout=layout,
        pin_memory=False,
        device="cpu",
        start_layer=0,
        end_layer=layers,
        host_token_capacity=pages * page_size,
    )
    if kind == "mha":
        dev = MHATokenToKVPool(
            page_size, page_size, dtype, head_num=heads, head_dim=head_dim, layer_num=layers,
            device="cpu", enable_memory_saver=False, start_layer=0, end_layer=layers,
        )
        return MHATokenToKVPoolHost(
            dev.get_device_pool_infos()[0].buffer_info, device_capacity_tokens=dev.size, **common
        )
    if kind == "mla":
        dev = MLATokenToKVPool(
            page_size, page_size, dtype, kv_lora_rank=kv_lora_rank, qk_rope_head_dim=qk_rope_head_dim,
            layer_num=layers, device="cpu", enable_memory_saver=False, start_layer=0, end_layer=layers,
        )
        return MLATokenToKVPoolHost(
            dev.get_device_pool_infos()[0].buffer_info, device_capacity_tokens=dev.size,
            target_layer_num=layers, override_kv_cache_dim=dev.kv_cache_dim, **common,
        )
    raise ValueError(kind)


def raw_bytes(pool) -> torch.Tensor:
    """The whole pool as a flat uint8 view."""
    return pool.kv_buffer.view(-1).view(torch.uint8)


def fill_random(pool, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    b = raw_bytes(pool)
    b.copy_(torch.randint(0, 256, (b.numel(),), dtype=torch.uint8, generator=g))


def page_keys(n: int, salt: str = "") -> List[str]:
    """SGLang-like page keys: 64-hex SHA-256, chained from the start of a sequence."""
    keys, prev = [], salt.encode()
    for i in range(n):
        prev = hashlib.sha256(prev + i.to_bytes(4, "little")).digest()
        keys.append(prev.hex())
    return keys


def page_indices(pool, page_order: List[int]) -> torch.Tensor:
    """host_indices as the controller passes them: page_size slots per page, pages in order."""
    ps = pool.page_size
    return torch.cat([torch.arange(p * ps, (p + 1) * ps, dtype=torch.int64) for p in page_order])


def page_bytes_of(pool, page: int) -> bytes:
    """The bytes of one page in the flat v0 order (a copy, for comparisons)."""
    return pool.get_data_page(page * pool.page_size, flat=True).contiguous().view(torch.uint8).numpy().tobytes()
