"""One "engine" of a hybrid model for the v2 sharing test: its own process, its own real SGLang host
pools (KV + Mamba + SWA + draft) and backend instance. Prints one JSON line.

usage: hybrid_engine_proc.py write|read PORT MODEL KIND LAYOUT SEED

The writer stores a request of two nodes (pages 0-3 and 4-7): KV through v1; per node a Mamba
state under its last page's key and its 2-page SWA window; the draft pool on KV's indices. The
reader queries like SGLang's prefetch (placeholder keys), then loads everything into other host
entries of zeroed pools and compares with the writer's pools regenerated from the seed.
"""

import json
import sys

PAGES = 8


def main() -> None:
    role, port, model, kind, layout, seed = sys.argv[1:7]
    port, seed = int(port), int(seed)
    from sglang.srt.mem_cache.hicache_storage import PoolHitPolicy, PoolName, PoolTransfer

    from sglang_hybrid import entry_bytes, entry_indices, fill, hybrid_backend, make_hybrid_pools, zero
    from sglang_pools import page_keys

    trailing = PoolHitPolicy.TRAILING_PAGES
    keys = page_keys(PAGES, salt=model)

    def seeded():
        pools = make_hybrid_pools(kind, layout, PAGES)
        for i, p in enumerate(pools.all().values()):
            fill(p, seed + i)
        return pools

    # (pool, entries written from, entries read into, keys)
    plan = {
        "kv": (list(range(PAGES)), list(reversed(range(PAGES))), keys),
        "mamba": ([2, 5], [7, 0], [keys[3], keys[7]]),
        "swa": ([0, 1, 4, 5], [7, 6, 3, 2], keys[2:4] + keys[6:8]),
        "draft": (list(range(PAGES)), list(reversed(range(PAGES))), keys),
    }

    def transfers(pools, which):
        out = []
        for name in ("mamba", "swa", "draft"):
            entries = plan[name][which]
            idx_pool = pools.kv if name == "draft" else pools.side[name]  # draft: KV's indices
            out.append(PoolTransfer(PoolName(name), host_indices=entry_indices(idx_pool, entries), keys=plan[name][2],
                                    hit_policy=PoolHitPolicy.ALL_PAGES if name == "draft" else trailing,
                                    indices_from_pool=PoolName.KV if name == "draft" else None))
        return out

    if role == "write":
        pools = seeded()
        backend = hybrid_backend(port, model, pools)
        kv = backend.batch_set_v1(keys, entry_indices(pools.kv, plan["kv"][0]))
        side = backend.batch_set_v2(transfers(pools, 0))
        print(json.dumps({"kv": kv, "side": {str(k): v for k, v in side.items()},
                          "formats": backend.side_pool_formats(), "value_format": backend.value_format}))
    else:
        pools = make_hybrid_pools(kind, layout, PAGES)
        for p in pools.all().values():
            zero(p)
        backend = hybrid_backend(port, model, pools)
        hit = backend.batch_exists_v2(keys, [
            PoolTransfer(PoolName.MAMBA, keys=["__placeholder__"], hit_policy=trailing),
            PoolTransfer(PoolName.SWA, keys=["__placeholder__"] * 2, hit_policy=trailing),
            PoolTransfer(PoolName.DRAFT, keys=None, indices_from_pool=PoolName.KV),
        ])
        kv = backend.batch_get_v1(keys, entry_indices(pools.kv, plan["kv"][1]))
        side = backend.batch_get_v2(transfers(pools, 1))
        want = seeded()
        equal, untouched = {}, {}
        for name, (src, dst, _) in plan.items():
            rp, wp = pools.all()[name], want.all()[name]
            equal[name] = [entry_bytes(rp, d) == entry_bytes(wp, s) for s, d in zip(src, dst)]
            untouched[name] = all(
                entry_bytes(rp, e) == bytes(len(entry_bytes(rp, 0)))
                for e in range(rp.size // rp.page_size) if e not in dst
            )
        print(json.dumps({"kv_hit_pages": hit.kv_hit_pages, "restorable": hit.restorable_prefix_pages,
                          "kv": kv, "side": {str(k): v for k, v in side.items()}, "equal": equal,
                          "untouched_zero": untouched, "formats": backend.side_pool_formats(),
                          "value_format": backend.value_format}))
    backend.close()


if __name__ == "__main__":
    main()
