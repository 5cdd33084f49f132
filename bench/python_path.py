#!/usr/bin/env python3
"""The Python path of `hicache-valkey bench`'s steady-state table: the same figure as the C path
(BATCHES batches of PAGES pages of PAGE_BYTES bytes, keys never written before, written one batch
after another and then read back) through the Python package:

* rows:   ``ValkeyStore.batch_set / batch_get`` with one numpy row per page;
* flat:   ``ValkeyStore.batch_set_segments / batch_get_segments`` with flat pointer arrays;
* sglang: the SGLang backend's v1 path (``batch_set_v1 / batch_get_v1`` on a real SGLang MHA host
  pool, bf16, 8 KV heads of 128), when SGLang imports (skipped with --no-sglang).

Prints one JSON line: rows_set_GBps, rows_get_GBps, flat_set_GBps, flat_get_GBps,
sglang_v1_set_GBps, sglang_v1_get_GBps (GB/s = 1e9 bytes of page payload per second, over all
the batches of each figure), hits / pages (pages found on read back: the steady-state server may
have evicted some), notes. The library is $HICACHE_VALKEY_LIB, else the package's own copy.

usage: python_path.py --port P [--host H] --page-bytes N --pages N --batches N [--epoch E]
       [--no-sglang]
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python_ctypes"))
sys.path.insert(0, str(HERE.parent / "python_ctypes" / "tests"))

import hicache_valkey as hv  # noqa: E402
from hicache_valkey import Outcome  # noqa: E402


def timed(fn):
    t0 = time.perf_counter_ns()
    r = fn()
    return (time.perf_counter_ns() - t0) / 1e9, r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--page-bytes", type=int, required=True)
    ap.add_argument("--pages", type=int, default=128)
    ap.add_argument("--batches", type=int, default=1)
    ap.add_argument("--epoch", type=int, default=0)
    ap.add_argument("--no-sglang", action="store_true")
    a = ap.parse_args()
    n, size, nb = a.pages, a.page_bytes, a.batches
    nonce = f"{time.time_ns():x}-{a.epoch}"
    total = n * size * nb
    res = {"hits": 0, "pages": 0, "notes": []}
    store = hv.ValkeyStore(host=a.host, port=a.port, model_name="hicache-bench-python", timeout_ms=30000)
    rng = np.random.default_rng(size)
    src = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    dst = np.zeros_like(src)

    def keys(kind, b):
        return [f"{kind}-{nonce}-{b}-{i:05d}" for i in range(n)]

    def count(outcomes):
        oc = [int(o) for o in outcomes]
        if any(o not in (Outcome.OK, Outcome.MISS) for o in oc):
            sys.exit(f"python_path: a key failed: {[o for o in oc if o not in (0, 1)][:3]}")
        res["hits"] += sum(o == Outcome.OK for o in oc)
        res["pages"] += len(oc)

    def rows():
        """One numpy row per page."""
        rows_src, rows_dst = list(src), list(dst)
        t_set = t_get = 0.0
        for b in range(nb):
            s, r = timed(lambda: store.batch_set(keys("rows", b), rows_src))
            if not r.all_ok:
                sys.exit(f"python_path: batch_set failed: {r.error}")
            t_set += s
        for b in range(nb):
            s, r = timed(lambda: store.batch_get(keys("rows", b), rows_dst))
            t_get += s
            count(r)
        res["rows_set_GBps"], res["rows_get_GBps"] = round(total / t_set / 1e9, 3), round(total / t_get / 1e9, 3)

    def flat():
        """Flat pointer arrays."""
        sp = (src.ctypes.data + np.arange(n, dtype=np.uint64) * size).astype(np.uint64)
        dp = (dst.ctypes.data + np.arange(n, dtype=np.uint64) * size).astype(np.uint64)
        sizes = np.full(n, size, dtype=np.uint64)
        t_set = t_get = 0.0
        for b in range(nb):
            s, out = timed(lambda: store.batch_set_segments(keys("flat", b), sp, sizes, 1))
            if np.any(out):
                sys.exit("python_path: batch_set_segments failed")
            t_set += s
        for b in range(nb):
            s, out = timed(lambda: store.batch_get_segments(keys("flat", b), dp, sizes, 1))
            t_get += s
            count(out)
        res["flat_set_GBps"], res["flat_get_GBps"] = round(total / t_set / 1e9, 3), round(total / t_get / 1e9, 3)

    # The first calls of a process run on new connections (as the C figure's do, a handle per
    # repetition); which form goes first alternates with the epoch, so over the bench's
    # repetitions neither always pays for it (at 4 MiB a figure is one 512 MiB call).
    for form in (rows, flat) if a.epoch % 2 else (flat, rows):
        form()
    store.close()

    if not a.no_sglang:
        try:
            sglang_path(a, nonce, res)
        except ImportError as e:
            res["notes"].append(f"SGLang v1 path skipped: {e}")
    print(json.dumps(res))


def sglang_path(a, nonce, res) -> None:
    import torch
    from sglang.srt.mem_cache.hicache_storage import HiCacheStorageConfig
    from sglang.srt.mem_cache.storage.backend_factory import StorageBackendFactory
    from sglang_pools import fill_random, make_pool, page_indices

    # MHA, 8 KV heads of 128, bf16: 4 KiB per token and layer (K and V).
    per = a.page_bytes // 4096
    if per < 1 or a.page_bytes % 4096:
        res["notes"].append("SGLang v1 path: page size not a multiple of 4 KiB")
        return
    page_size = min(64, per)
    layers = per // page_size
    n = a.pages
    pool = make_pool("mha", "page_first", n, page_size=page_size, layers=layers, heads=8, head_dim=128, dtype=torch.bfloat16)
    fill_random(pool, seed=7)
    idx = page_indices(pool, list(range(n)))
    cfg = HiCacheStorageConfig(
        tp_rank=0, tp_size=1, pp_rank=0, pp_size=1, attn_cp_rank=0, attn_cp_size=1, is_mla_model=False,
        enable_storage_metrics=False, is_page_first_layout=True, model_name="hicache-bench-sglang",
        extra_config={"backend_name": "valkey", "module_path": "hicache_valkey.sglang", "class_name": "ValkeyHiCacheStorage",
                      "interface_v1": 1, "host": a.host, "port": a.port},
    )
    backend = StorageBackendFactory.create_backend("dynamic", cfg, pool)
    backend.register_mem_pool_host(pool)
    total = n * a.page_bytes * a.batches
    keys = lambda b: [f"{nonce}-sgl-{b}-{i:05d}".ljust(64, "0") for i in range(n)]  # noqa: E731
    t_set = t_get = 0.0
    for b in range(a.batches):
        s, r = timed(lambda: backend.batch_set_v1(keys(b), idx))
        if not all(r):
            sys.exit("python_path: batch_set_v1 failed")
        t_set += s
    for b in range(a.batches):
        s, r = timed(lambda: backend.batch_get_v1(keys(b), idx))
        t_get += s
    res["sglang_v1_set_GBps"], res["sglang_v1_get_GBps"] = round(total / t_set / 1e9, 3), round(total / t_get / 1e9, 3)


if __name__ == "__main__":
    main()
