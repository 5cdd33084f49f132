"""One "engine" for the sharing test: its own process, its own real SGLang host pool and backend
instance. Prints one JSON line.

usage: engine_proc.py write|read PORT MODEL KIND LAYOUT PAGES SEED
"""

import json
import sys

import torch


def main() -> None:
    role, port, model, kind, layout, pages, seed = sys.argv[1:8]
    port, pages, seed = int(port), int(pages), int(seed)
    from sglang.srt.mem_cache.hicache_storage import HiCacheStorageConfig
    from sglang.srt.mem_cache.storage.backend_factory import StorageBackendFactory
    from sglang_pools import fill_random, make_pool, page_bytes_of, page_indices, page_keys

    pool = make_pool(kind, layout, pages)
    config = HiCacheStorageConfig(
        tp_rank=0, tp_size=1, pp_rank=0, pp_size=1, attn_cp_rank=0, attn_cp_size=1,
        is_mla_model=kind == "mla", enable_storage_metrics=False,
        is_page_first_layout=layout == "page_first", model_name=model,
        extra_config={"backend_name": "valkey", "module_path": "hicache_valkey.sglang",
                      "class_name": "ValkeyHiCacheStorage", "interface_v1": 1,
                      "host": "127.0.0.1", "port": port},
    )
    backend = StorageBackendFactory.create_backend("dynamic", config, pool)
    backend.register_mem_pool_host(pool)
    keys = page_keys(pages, salt=model)
    if role == "write":
        fill_random(pool, seed)
        ok = backend.batch_set_v1(keys, page_indices(pool, list(range(pages))))
        print(json.dumps({"stored": ok, "value_format": backend.value_format}))
    else:
        order = list(reversed(range(pages)))  # other slots than the writer's
        exists = backend.batch_exists(keys)
        hits = backend.batch_get_v1(keys, page_indices(pool, order))
        expected = make_pool(kind, layout, pages)
        fill_random(expected, seed)  # the writer's bytes, regenerated from its seed
        equal = [page_bytes_of(pool, order[i]) == page_bytes_of(expected, i) for i in range(pages)]
        print(json.dumps({"exists": exists, "hits": hits, "equal": equal, "value_format": backend.value_format}))
    backend.close()


if __name__ == "__main__":
    main()
