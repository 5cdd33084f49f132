"""The stored byte format of an SGLang host pool's pages, and its 64-bit fingerprint.

Every value the backend writes carries the fingerprint (the library's ``value_format``); a value
written with another fingerprint is never a hit. The fingerprint hashes everything that decides
the bytes of a page: pool class, MHA vs MLA, layout, dtype, page size, layer count, head geometry
(head_num/head_dim/v_head_dim) or kv_cache_dim, the pool's own storage_format_tag, and the sizes
of the buffers ``get_page_buffer_meta`` returns per page. So two deployments of one model name
with different layouts or dtypes never read each other's pages.

Stored bytes are the page's buffers from ``get_page_buffer_meta`` concatenated in order (the v1,
zero-copy form). The v0 path (``get_data_page(flat=True)`` / ``set_from_flat_data_page``) stores
the very same bytes: for the pools whose flat page is ordered differently (MHA ``layer_first``:
flat is all K layers then all V layers, the buffers are K0, V0, K1, V1, ...) the v0 path scatters
and gathers the flat page in the buffers' order, so v0 and v1 deployments share pages. For pool
classes this module does not know, the fingerprint also names the interface (v0 or v1) in use.

Pure Python over the pool object: usable and testable without SGLang.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

SCHEMA = "hicache-valkey/sglang-page/1"

# (pool class, layout) -> how a flat v0 page maps onto the per-page buffers of v1.
#   "identity": the flat page is the buffers concatenated.
#   "mha_layer_first": flat (2, L, ps, H, D); buffers K_l0, V_l0, K_l1, V_l1, ...
_KNOWN: Dict[Tuple[str, str], str] = {
    ("MHATokenToKVPoolHost", "layer_first"): "mha_layer_first",
    ("MHATokenToKVPoolHost", "page_first"): "identity",
    ("MHATokenToKVPoolHost", "page_first_direct"): "identity",
    ("MHATokenToKVPoolHost", "page_head"): "identity",
    ("MLATokenToKVPoolHost", "layer_first"): "identity",
    ("MLATokenToKVPoolHost", "page_first"): "identity",
    ("MLATokenToKVPoolHost", "page_first_direct"): "identity",
}

_GEOMETRY_ATTRS = (
    "head_num",
    "head_dim",
    "v_head_dim",
    "kv_cache_dim",
    "kv_lora_rank",
    "qk_rope_head_dim",
    "head_group_num",
    "storage_format_tag",
    "dcp_size",
)


@dataclass(frozen=True)
class PageFormat:
    """What the backend needs to know about a registered pool's pages."""

    description: Dict[str, Any]
    fingerprint: int
    #: Sizes of one page's buffers as get_page_buffer_meta returns them (empty if unavailable).
    segment_sizes: Tuple[int, ...]
    #: Total bytes of one stored page.
    page_bytes: int
    #: "identity", "mha_layer_first" or None (unknown pool: v0 stores the flat page as is).
    flat_mapping: Optional[str]
    #: Byte offset in a flat v0 page of each buffer of the v1 order (None: one segment).
    flat_offsets: Optional[np.ndarray] = field(default=None, compare=False)

    @property
    def segments_per_page(self) -> int:
        return len(self.segment_sizes)


def _plain(v: Any) -> Any:
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    return str(v)


def fingerprint_of(description: Dict[str, Any]) -> int:
    """64-bit, never 0 (0 is "no format" to the library)."""
    blob = json.dumps(description, sort_keys=True, separators=(",", ":")).encode()
    fp = int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "little")
    return fp or 1


def page_meta_of_first_page(pool: Any) -> Tuple[List[int], List[int]]:
    """get_page_buffer_meta for the page at slot 0 (pointers are not used, only sizes)."""
    import torch

    page = int(getattr(pool, "logical_page_size", None) or pool.page_size)
    ptrs, sizes = pool.get_page_buffer_meta(torch.zeros(page, dtype=torch.int64))
    return list(ptrs), [int(s) for s in sizes]


def describe_pool(pool: Any, interface_v1: bool = True) -> PageFormat:
    """The :class:`PageFormat` of ``pool`` (an SGLang HostKVCache)."""
    cls = type(pool).__name__
    layout = str(getattr(pool, "layout", "?"))
    dtype = getattr(pool, "dtype", None)
    d: Dict[str, Any] = {
        "schema": SCHEMA,
        "pool": cls,
        "kind": "mla" if hasattr(pool, "kv_cache_dim") else "mha",
        "layout": layout,
        "dtype": str(dtype),
        "itemsize": int(getattr(dtype, "itemsize", 0) or 0),
        "page_size": int(pool.page_size),
        "layer_num": int(getattr(pool, "layer_num", 0)),
    }
    for attr in _GEOMETRY_ATTRS:
        if hasattr(pool, attr):
            d[attr] = _plain(getattr(pool, attr))
    try:
        _, sizes = page_meta_of_first_page(pool)
    except Exception as e:  # a pool without zero-copy metadata: v0 only
        sizes = []
        d["meta_error"] = type(e).__name__
    d["segments"] = sizes
    mapping = _KNOWN.get((cls, layout))
    offsets = None
    if mapping == "mha_layer_first":
        L = d["layer_num"]
        chunk = d["page_size"] * d.get("head_num", 0) * d.get("head_dim", 0) * d["itemsize"]
        if len(sizes) == 2 * L and all(s == chunk for s in sizes) and chunk > 0:
            j = np.arange(2 * L, dtype=np.uint64)
            # segment j is layer j // 2 of K (j even) or V (j odd); flat is (2, L, ps, H, D)
            offsets = ((j % 2) * L + j // 2) * np.uint64(chunk)
        else:
            mapping = None
    if mapping is None:
        # Unknown pool: v0 flat pages and v1 buffers may order bytes differently, so the two
        # interfaces must not share values.
        d["byte_order"] = "v1-buffers" if interface_v1 else "v0-flat-page"
    else:
        d["byte_order"] = "buffers"
    page_bytes = int(sum(sizes))
    if not sizes:
        ps, L, item = d["page_size"], d["layer_num"], d["itemsize"]
        if d["kind"] == "mla":
            page_bytes = L * ps * int(d.get("kv_cache_dim", 0)) * item
        else:
            page_bytes = 2 * L * ps * int(d.get("head_num", 0)) * int(d.get("head_dim", 0)) * item
    return PageFormat(
        description=d,
        fingerprint=fingerprint_of(d),
        segment_sizes=tuple(sizes),
        page_bytes=page_bytes,
        flat_mapping=mapping,
        flat_offsets=offsets,
    )


#: Format used before a pool is registered (v0 calls with raw tensors).
UNREGISTERED = fingerprint_of({"schema": SCHEMA, "pool": None})


# -- side pools of hybrid models (v2) -------------------------------------------------------------

SIDE_SCHEMA = "hicache-valkey/sglang-side-pool/1"

#: Attributes that decide the bytes of one entry of a side pool (those the pool has). Covers the
#: KV-like pools (SWA, draft: head/layer geometry), Mamba state pools (state shapes and dtypes),
#: and the indexer / DeepSeek-V4 pools (their strides and dtypes).
_SIDE_ATTRS = (
    "dtype",
    "layer_num",
    "target_layer_num",
    "head_num",
    "head_dim",
    "v_head_dim",
    "kv_cache_dim",
    "kv_lora_rank",
    "qk_rope_head_dim",
    "head_group_num",
    "num_mamba_layers",
    "temporal_state_shape",
    "temporal_dtype",
    "conv_state_shapes",
    "conv_dtype",
    "index_head_dim",
    "indexer_dtype",
    "indexer_page_stride_size",
    "size_per_token",
    "storage_format_tag",
    "stores_page_envelope",
    "dcp_size",
)


@dataclass(frozen=True)
class SidePoolFormat:
    """What the backend needs to know about one side pool (``register_mem_host_pool_v2``).

    An *entry* is what one key stores: one page of the pool (``page_size`` slots; a Mamba pool has
    page_size 1, so an entry is one request state).
    """

    description: Dict[str, Any]
    fingerprint: int
    page_size: int
    #: Sizes of one entry's buffers from get_page_buffer_meta, in order (empty: no zero-copy).
    segment_sizes: Tuple[int, ...]
    #: Bytes of one stored entry.
    entry_bytes: int

    @property
    def zero_copy(self) -> bool:
        return bool(self.segment_sizes)

    @property
    def segments_per_entry(self) -> int:
        return len(self.segment_sizes)


def _slot_state_signature(pool: Any) -> Optional[List[str]]:
    bufs = getattr(pool, "slot_state_buffers", None)
    if not bufs:
        return None
    return [f"{tuple(b.shape[1:])}:{b.dtype}" for b in bufs]


def describe_side_pool(pool: Any, name: str) -> SidePoolFormat:
    """The :class:`SidePoolFormat` of a hybrid model's side pool (any SGLang host pool class).

    Entries move zero-copy through ``get_page_buffer_meta`` when the pool provides it; otherwise
    (e.g. a Mamba pool with registered side states) through ``get_data_page`` /
    ``set_from_flat_data_page``. Which one is part of the fingerprint, so the two byte orders never
    meet.
    """
    import torch

    page_size = int(getattr(pool, "page_size", 1) or 1)
    d: Dict[str, Any] = {
        "schema": SIDE_SCHEMA,
        "role": str(getattr(name, "value", name)),
        "pool": type(pool).__name__,
        "layout": str(getattr(pool, "layout", "?")),
        "page_size": page_size,
    }
    for attr in _SIDE_ATTRS:
        if hasattr(pool, attr):
            try:
                d[attr] = _plain(getattr(pool, attr))
            except Exception:  # a property that needs state this pool lacks
                continue
    slots = _slot_state_signature(pool)
    if slots:
        d["slot_states"] = slots
    sizes: List[int] = []
    try:
        _, raw = pool.get_page_buffer_meta(torch.arange(page_size, dtype=torch.int64))
        sizes = [int(s) for s in raw]
        if not sizes or any(s <= 0 for s in sizes):
            sizes = []
    except Exception as e:  # no zero-copy metadata: whole-entry copies
        d["meta_error"] = type(e).__name__
        sizes = []
    d["segments"] = sizes
    if sizes:
        d["byte_order"] = "buffers"
        entry_bytes = sum(sizes)
    else:
        d["byte_order"] = "flat-data-page"
        try:
            page = pool.get_dummy_flat_data_page()
            entry_bytes = int(page.numel()) * int(page.element_size())
        except Exception as e:
            d["flat_error"] = type(e).__name__
            entry_bytes = 0
    d["entry_bytes"] = entry_bytes
    return SidePoolFormat(
        description=d,
        fingerprint=fingerprint_of(d),
        page_size=page_size,
        segment_sizes=tuple(sizes),
        entry_bytes=entry_bytes,
    )
