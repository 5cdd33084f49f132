"""HiCacheStorage v2 (hybrid models) against the real SGLang 0.5.23: its own host pools on CPU
(MHA/MLA KV, ``MambaPoolHost``, an SWA pool, the MTP draft pool, DeepSeek-V4's logical anchor and
paged pools), its own factory (and failure injector), and a real valkey-server.

The calls are shaped like SGLang's hybrid controller makes them (hybrid_cache_controller.py and
the unified cache components): KV through v1, side pools through v2; at query time placeholder
keys for the side pools and ``keys=None`` for KV-derived pools; a Mamba state under the key of a
node's last page, an SWA window under its pages' keys.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sglang", reason="SGLang is not installed (scripts/sglang-venv.sh makes a venv with it)")
torch = pytest.importorskip("torch", reason="torch is not installed")
try:
    from sglang.srt.mem_cache.hicache_storage import (
        HiCacheStorageFailureInjector,
        PoolHitPolicy,
        PoolName,
        PoolTransfer,
        PoolTransferResult,
    )
    from sglang.srt.mem_cache.memory_pool_host import DeepSeekV4PagedHostPool, LogicalHostPool
    from sglang.srt.mem_cache.pool_host.mamba import MambaPoolHost  # noqa: F401
    from sglang.srt.mem_cache.storage.backend_factory import StorageBackendFactory
except ImportError as e:  # pragma: no cover - depends on the environment
    pytest.skip(f"SGLang's hybrid HiCache modules cannot be imported: {e}", allow_module_level=True)

from sglang_hybrid import (
    HYBRID_LAYOUTS,
    HybridPools,
    entry_bytes,
    entry_indices,
    fill,
    hybrid_backend,
    is_zero,
    make_hybrid_pools,
    make_mamba_pool,
    register_like_the_controller,
    storage_config,
    zero,
)
from sglang_pools import make_pool, page_keys

pytestmark = pytest.mark.sglang

KV, MAMBA, SWA, DRAFT = PoolName.KV, PoolName.MAMBA, PoolName.SWA, PoolName.DRAFT
ALL, TRAILING = PoolHitPolicy.ALL_PAGES, PoolHitPolicy.TRAILING_PAGES
KINDS_LAYOUTS = [(k, l) for k in ("mha", "mla") for l in HYBRID_LAYOUTS]
ENGINE = Path(__file__).resolve().parent / "hybrid_engine_proc.py"


@pytest.fixture
def made():
    """Backends built by SGLang's factory with pools registered in the controller's order."""
    backends = []

    def make(port, model, pools, **cfg):
        b = hybrid_backend(port, model, pools, **cfg)
        backends.append(b)
        return b

    yield make
    for b in backends:
        b.close()


def query_transfers(swa_window=2, with_draft=True):
    """What the prefetch path passes to batch_exists_v2 (components' PREFETCH transfers)."""
    t = [
        PoolTransfer(MAMBA, keys=["__placeholder__"], hit_policy=TRAILING),
        PoolTransfer(SWA, keys=["__placeholder__"] * swa_window, hit_policy=TRAILING),
    ]
    if with_draft:
        t.append(PoolTransfer(DRAFT, keys=None, hit_policy=ALL, indices_from_pool=KV))
    return t


def entries_of(pool):
    return pool.size // pool.page_size


def untouched_are_zero(pool, touched):
    zero_entry = bytes(len(entry_bytes(pool, 0)))
    return all(entry_bytes(pool, e) == zero_entry for e in range(entries_of(pool)) if e not in touched)


# -- registration ----------------------------------------------------------------------------------


def test_registration_in_sglang_order(valkey, model, made):
    pools = make_hybrid_pools("mha", "page_first", 8)
    b = made(valkey.port, model, pools)  # the draft pool arrives after on_host_pools_registered
    assert b.mem_pool_host is pools.kv
    assert set(b.registered_pools) == {"kv", "mamba", "swa", "draft"}
    assert b.registered_pools["kv"] is pools.kv and b.registered_pools["draft"] is pools.side["draft"]
    fps = b.side_pool_formats()
    assert set(fps) == {"mamba", "swa", "draft"}
    assert len({*fps.values(), b.value_format}) == 4  # each pool its own format, none is KV's
    # a pool registered again with another geometry gets another format, the same geometry the same
    b.register_mem_host_pool_v2(make_mamba_pool("page_first", 8, temporal_shape=(4, 2, 8)), MAMBA)
    assert b.side_pool_formats()["mamba"] != fps["mamba"]
    b.register_mem_host_pool_v2(make_mamba_pool("page_first", 8), MAMBA)
    assert b.side_pool_formats()["mamba"] == fps["mamba"]
    # a backend that gets the KV pool only through v2 takes it as its anchor
    b2 = StorageBackendFactory.create_backend("dynamic", storage_config(model, valkey.port), None)
    try:
        b2.register_mem_host_pool_v2(pools.kv, KV)
        assert b2.mem_pool_host is pools.kv and b2.value_format == b.value_format
    finally:
        b2.close()


# -- round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,layout", KINDS_LAYOUTS)
def test_v2_round_trip_byte_for_byte(valkey, model, made, kind, layout, monkeypatch):
    n = 8
    w = make_hybrid_pools(kind, layout, n)
    for i, p in enumerate(w.all().values()):
        fill(p, 100 + i)
    bw = made(valkey.port, model, w)
    keys = page_keys(n, salt=f"rt-{kind}-{layout}")
    kv_w = [3, 1, 7, 0, 5, 2, 6, 4]
    mamba_w, swa_w = [5, 2], [6, 1]
    # KV through v1; a request of two nodes (pages 0-3 and 4-7): a Mamba state under each node's
    # last page, the 2-page SWA window of the request end, the draft pool on KV's indices
    assert bw.batch_set_v1(keys, entry_indices(w.kv, kv_w)) == [True] * n
    res = bw.batch_set_v2([
        PoolTransfer(MAMBA, host_indices=entry_indices(w.side["mamba"], mamba_w), keys=[keys[3], keys[7]], hit_policy=TRAILING),
        PoolTransfer(SWA, host_indices=entry_indices(w.side["swa"], swa_w), keys=keys[6:8], hit_policy=TRAILING),
        PoolTransfer(DRAFT, host_indices=entry_indices(w.kv, kv_w), keys=keys, indices_from_pool=KV),
    ])
    assert res == {MAMBA: [True, True], SWA: [True, True], DRAFT: [True] * n}

    # another engine, zeroed pools of the same geometry
    r = make_hybrid_pools(kind, layout, n)
    for p in r.all().values():
        zero(p)
    br = made(valkey.port, model, r)
    hit = br.batch_exists_v2(keys, query_transfers())
    assert hit.kv_hit_pages == n
    assert hit.restorable_prefix_pages == [8]  # SWA's window is whole only at 8 (4 lacks it)
    assert hit.extra_pool_hit_pages == {KV: n, MAMBA: 8, SWA: 8, DRAFT: 8}

    kv_r, mamba_r, swa_r = [6, 0, 2, 4, 1, 7, 3, 5], [0, 7], [3, 4]
    assert br.batch_get_v1(keys, entry_indices(r.kv, kv_r)) == [True] * n
    got = br.batch_get_v2([
        PoolTransfer(MAMBA, host_indices=entry_indices(r.side["mamba"], mamba_r), keys=[keys[3], keys[7]], hit_policy=TRAILING),
        PoolTransfer(SWA, host_indices=entry_indices(r.side["swa"], swa_r), keys=keys[6:8], hit_policy=TRAILING),
        PoolTransfer(DRAFT, host_indices=entry_indices(r.kv, kv_r), keys=keys, indices_from_pool=KV),
    ])
    assert got == {MAMBA: [True, True], SWA: [True, True], DRAFT: [True] * n}
    for name, src, dst in (("kv", kv_w, kv_r), ("mamba", mamba_w, mamba_r), ("swa", swa_w, swa_r), ("draft", kv_w, kv_r)):
        wp, rp = w.all()[name], r.all()[name]
        for s, d in zip(src, dst):
            assert entry_bytes(rp, d) == entry_bytes(wp, s), (name, s, d)
        assert untouched_are_zero(rp, set(dst)), name

    # a v2 transfer named "kv" is the v1 path: what it writes batch_exists(_v2) counts, and back
    keys2 = page_keys(n, salt=f"rt2-{kind}-{layout}")
    assert bw.batch_set_v2([PoolTransfer(KV, host_indices=entry_indices(w.kv, kv_w), keys=keys2)]) == {KV: [True] * n}
    assert br.batch_exists(keys2) == n
    assert br.batch_exists_v2(keys2, []).kv_hit_pages == n
    zero(r.kv)
    assert br.batch_get_v2([PoolTransfer(KV, host_indices=entry_indices(r.kv, kv_r), keys=keys2)]) == {KV: [True] * n}
    assert all(entry_bytes(r.kv, d) == entry_bytes(w.kv, s) for s, d in zip(kv_w, kv_r))


def test_copying_path_for_pools_without_buffer_metadata(valkey, model, made):
    """A Mamba pool with registered slot side states has no zero-copy metadata (SGLang raises
    NotImplementedError): its entries move through get_data_page / set_from_flat_data_page."""
    n = 4
    mk = lambda: HybridPools(make_pool("mha", "page_first", n), {"mamba": make_mamba_pool("page_first", n, extra_state_shapes=((3,),))})
    w, r = mk(), mk()
    with pytest.raises(NotImplementedError):
        w.side["mamba"].get_page_buffer_meta(torch.tensor([0]))
    fill(w.side["mamba"], 7)
    for p in r.all().values():
        zero(p)
    bw, br = made(valkey.port, model, w), made(valkey.port, model, r)
    fp = bw.side_pool_formats()["mamba"]
    assert fp != made(valkey.port, model, make_hybrid_pools("mha", "page_first", n)).side_pool_formats()["mamba"]
    keys = page_keys(n, salt="copy")
    assert bw.batch_set_v1(keys, entry_indices(w.kv, list(range(n)))) == [True] * n
    assert bw.batch_set_v2([PoolTransfer(MAMBA, host_indices=entry_indices(w.side["mamba"], [1, 3]), keys=[keys[1], keys[3]])]) == {MAMBA: [True, True]}
    res = br.batch_exists_v2(keys, [PoolTransfer(MAMBA, keys=["__placeholder__"], hit_policy=TRAILING)])
    assert (res.kv_hit_pages, res.restorable_prefix_pages) == (4, [2, 4])
    assert br.batch_get_v2([PoolTransfer(MAMBA, host_indices=entry_indices(r.side["mamba"], [2, 0]), keys=[keys[3], keys[1]])]) == {MAMBA: [True, True]}
    assert entry_bytes(r.side["mamba"], 2) == entry_bytes(w.side["mamba"], 3)
    assert entry_bytes(r.side["mamba"], 0) == entry_bytes(w.side["mamba"], 1)
    assert untouched_are_zero(r.side["mamba"], {0, 2})


# -- batch_exists_v2 -------------------------------------------------------------------------------


def write_presence(b, pools, keys, kv_present, present):
    """Stores KV pages where kv_present[i] and each side pool's entries where present[pool][i]."""
    kv_idx = [i for i, p in enumerate(kv_present) if p]
    if kv_idx:
        assert all(b.batch_set_v1([keys[i] for i in kv_idx], entry_indices(pools.kv, kv_idx)))
    transfers = []
    for name, flags in present.items():
        idx = [i for i, p in enumerate(flags) if p]
        if not idx:
            continue
        pool = pools.side[name]
        slots = [j % entries_of(pool) for j in range(len(idx))]
        hi = entry_indices(pool, slots) if name != "draft" else entry_indices(pools.kv, idx)
        transfers.append(PoolTransfer(PoolName(name), host_indices=hi, keys=[keys[i] for i in idx]))
    res = b.batch_set_v2(transfers)
    assert all(all(v) for v in res.values()), res


def expected_restorable(kv_present, pools):
    """The definition, page by page: KV's leading run; per pool (policy, window, presence)."""
    kv = next((i for i, p in enumerate(kv_present) if not p), len(kv_present))
    restorable = set(range(1, kv + 1))
    bounds = {}
    for name, (policy, window, flags) in pools.items():
        if policy == ALL:
            b = next((i for i in range(kv) if not flags[i]), kv)
            ok = set(range(1, b + 1))
        else:
            ok = {p for p in range(1, kv + 1) if all(flags[q] for q in range(max(0, p - window), p))}
            b = max(ok, default=0)
        bounds[name] = b
        restorable &= ok
    return kv, sorted(restorable), bounds


def test_exists_v2_gaps_and_holes(valkey, model, made):
    n = 9
    pools = make_hybrid_pools("mha", "page_first", n)
    b = made(valkey.port, model, pools)
    keys = page_keys(n, salt="holes")
    kv = [True] * 7 + [False, True]  # a gap at 7: KV hits are the leading 7, page 8 does not count
    present = {
        "mamba": [False, True, False, True, True, False, True, False, True],  # states at node ends 2, 4, 5, 7
        "swa": [True, True, False, True, True, True, False, False, True],     # windows [0,2), [3,6)
        "draft": [True] * 6 + [False] * 3,
    }
    write_presence(b, pools, keys, kv, present)
    res = b.batch_exists_v2(keys, query_transfers(swa_window=2))
    # mamba (w=1): {2, 4, 5, 7}; swa (w=2): {1, 2, 5, 6}; draft (all pages): {1..6}
    assert res.restorable_prefix_pages == [2, 5]  # an intersection with holes (3, 4 are not)
    assert res.kv_hit_pages == 5  # its maximum, not the smallest per-pool boundary (mamba 7, swa 6, draft 6)
    assert res.extra_pool_hit_pages == {KV: 7, MAMBA: 7, SWA: 6, DRAFT: 6}
    # the window is cut at the start of the queried span: with w=3, prefix 2 needs [0, 2) only
    res3 = b.batch_exists_v2(keys, [PoolTransfer(SWA, keys=["__placeholder__"] * 3, hit_policy=TRAILING)])
    assert res3.restorable_prefix_pages == [1, 2, 6] and res3.kv_hit_pages == 6
    # the same pools under ALL_PAGES: each restores up to its first missing entry
    res_all = b.batch_exists_v2(keys, [PoolTransfer(MAMBA, keys=None, hit_policy=ALL), PoolTransfer(SWA, keys=None, hit_policy=ALL)])
    assert res_all.kv_hit_pages == 0 and res_all.restorable_prefix_pages == [] and MAMBA not in res_all.extra_pool_hit_pages
    res_swa = b.batch_exists_v2(keys, [PoolTransfer(SWA, keys=None, hit_policy=ALL)])
    assert (res_swa.kv_hit_pages, res_swa.restorable_prefix_pages, res_swa.extra_pool_hit_pages) == (2, [1, 2], {KV: 7, SWA: 2})
    # only the count of the placeholder keys matters: nothing is looked up under them
    assert b.batch_set_v2([PoolTransfer(MAMBA, host_indices=entry_indices(pools.side["mamba"], [0]), keys=["__placeholder__"])])[MAMBA] == [True]
    res_m = b.batch_exists_v2(keys[:1], [PoolTransfer(MAMBA, keys=["__placeholder__"], hit_policy=TRAILING)])
    assert res_m.kv_hit_pages == 0 and res_m.restorable_prefix_pages == []
    # no side pools: KV's leading run; empty span: nothing
    assert b.batch_exists_v2(keys, None).kv_hit_pages == 7
    assert b.batch_exists_v2([], query_transfers()) == PoolTransferResult(0, {}, [])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_exists_v2_random_patterns_match_the_definition(valkey, model, made, seed):
    rng = random.Random(seed)
    n = 10
    pools = make_hybrid_pools("mha", "page_first", n)
    b = made(valkey.port, model, pools)
    for round_ in range(6):
        keys = page_keys(n, salt=f"rand-{seed}-{round_}")
        kv = [rng.random() < 0.9 for _ in range(n)]
        present = {name: [rng.random() < 0.7 for _ in range(n)] for name in ("mamba", "swa", "draft")}
        write_presence(b, pools, keys, kv, present)
        policies = {name: (rng.choice([ALL, TRAILING]), rng.randint(1, 4)) for name in present}
        transfers = [
            PoolTransfer(PoolName(name), keys=["__placeholder__"] * w if pol == TRAILING else None, hit_policy=pol)
            for name, (pol, w) in policies.items()
        ]
        res = b.batch_exists_v2(keys, transfers)
        kv_pages, restorable, bounds = expected_restorable(kv, {n_: (*policies[n_], present[n_]) for n_ in present})
        assert res.restorable_prefix_pages == restorable, (round_, kv, present, policies)
        assert res.kv_hit_pages == (restorable[-1] if restorable else 0)
        if kv_pages:
            want = {KV: kv_pages, **{PoolName(k): v for k, v in bounds.items() if v}}
            assert res.extra_pool_hit_pages == want


# -- ranks, models, formats ------------------------------------------------------------------------


def test_rank_and_model_isolation(valkey, model, made):
    n = 4
    keys = page_keys(n, salt="iso")
    ranks = []
    for rank in (0, 1):
        pools = make_hybrid_pools("mha", "page_first", n)
        for i, p in enumerate(pools.all().values()):
            fill(p, 10 * rank + i)
        b = made(valkey.port, model, pools, tp_rank=rank, tp_size=2)
        ranks.append((pools, b))
    (p0, b0), (p1, b1) = ranks
    write_presence(b0, p0, keys, [True] * n, {"mamba": [False, False, False, True], "swa": [False, False, True, True], "draft": [True] * n})
    # rank 1 sees none of rank 0's pages or side entries
    assert b1.batch_exists_v2(keys, query_transfers()).kv_hit_pages == 0
    zero(p1.side["mamba"])
    assert b1.batch_get_v2([PoolTransfer(MAMBA, host_indices=entry_indices(p1.side["mamba"], [0]), keys=[keys[3]])]) == {MAMBA: [False]}
    assert is_zero(p1.side["mamba"])
    # another model with the same keys sees nothing either
    other_pools = make_hybrid_pools("mha", "page_first", n)
    other = made(valkey.port, model + "-other", other_pools)
    assert other.batch_exists_v2(keys, query_transfers()).kv_hit_pages == 0
    write_presence(other, other_pools, keys, [True] * n,
                   {"mamba": [False, False, False, True], "swa": [False, False, True, True], "draft": [True] * n})
    # rank 0 hits; clear() removes this model's KV and side entries (all ranks) and nothing else
    assert b0.batch_exists_v2(keys, query_transfers()).kv_hit_pages == n
    assert b0.valkey_stats()["model_keys"] == n + 1 + 2 + n
    assert b0.clear() is True
    assert b0.valkey_stats()["model_keys"] == 0
    assert b0.batch_exists_v2(keys, query_transfers()).kv_hit_pages == 0
    assert other.batch_exists_v2(keys, query_transfers()).kv_hit_pages == n


def test_mla_hybrid_kv_shared_mamba_per_rank(valkey, model, made):
    """MLA KV and MLA-geometry side pools (the SWA pool of an MLA model) are written by the writer
    rank and read by all; Mamba state is TP-sharded, so every rank writes and reads its own; so is
    an MHA-geometry side pool (an MHA draft under an MLA target: its heads are split over ranks)."""
    n = 8
    keys = page_keys(n, salt="mla-hybrid")
    ranks = []
    for rank in (0, 1):
        pools = make_hybrid_pools("mla", "page_first", n, draft_kind="mha")
        for i, p in enumerate(pools.all().values()):
            fill(p, 50 + 10 * rank + i)
        ranks.append((pools, made(valkey.port, model, pools, tp_rank=rank, tp_size=2, mla=True)))
    (p0, b0), (p1, b1) = ranks
    assert b0.is_storage_writer and not b1.is_storage_writer
    idx = entry_indices(p0.kv, list(range(n)))
    mamba_only = [PoolTransfer(MAMBA, keys=["__placeholder__"], hit_policy=TRAILING)]

    def side_transfers(pools):
        return [
            PoolTransfer(MAMBA, host_indices=entry_indices(pools.side["mamba"], [2]), keys=[keys[7]], hit_policy=TRAILING),
            PoolTransfer(SWA, host_indices=entry_indices(pools.side["swa"], [0, 1]), keys=keys[6:8], hit_policy=TRAILING),
            PoolTransfer(DRAFT, host_indices=idx, keys=keys, indices_from_pool=KV),
        ]

    # the non-writer: KV and the shared SWA window are reported done without a write; its Mamba
    # state and its MHA draft are stored, under its own rank
    assert b1.batch_set_v1(keys, idx) == [True] * n
    assert b1.batch_set_v2(side_transfers(p1)) == {MAMBA: [True], SWA: [True, True], DRAFT: [True] * n}
    assert b1.batch_exists_v2(keys, mamba_only).kv_hit_pages == 0  # no KV yet (rank 0 writes it)
    assert b0.batch_set_v1(keys, idx) == [True] * n
    assert b1.batch_exists_v2(keys, mamba_only).kv_hit_pages == n
    assert b1.batch_exists_v2(keys, query_transfers()).kv_hit_pages == 0  # the SWA window is rank 0's to write
    # rank 0 has KV but neither its own Mamba state nor its draft yet: nothing restorable for it
    assert b0.batch_exists_v2(keys, mamba_only).restorable_prefix_pages == []
    assert b0.batch_exists_v2(keys, [PoolTransfer(DRAFT, keys=None)]).kv_hit_pages == 0
    assert b0.batch_set_v2(side_transfers(p0)) == {MAMBA: [True], SWA: [True, True], DRAFT: [True] * n}
    for b in (b0, b1):
        res = b.batch_exists_v2(keys, query_transfers())
        assert (res.kv_hit_pages, res.restorable_prefix_pages) == (n, [n])

    want_kv = [entry_bytes(p0.kv, e) for e in range(n)]
    want_swa = [entry_bytes(p0.side["swa"], 0), entry_bytes(p0.side["swa"], 1)]
    for pools, b in ranks:
        mine_mamba = entry_bytes(pools.side["mamba"], 2)
        mine_draft = [entry_bytes(pools.side["draft"], e) for e in range(n)]
        for p in pools.all().values():
            zero(p)
        ridx = entry_indices(pools.kv, list(reversed(range(n))))
        assert b.batch_get_v1(keys, ridx) == [True] * n
        got = b.batch_get_v2([
            PoolTransfer(MAMBA, host_indices=entry_indices(pools.side["mamba"], [5]), keys=[keys[7]]),
            PoolTransfer(SWA, host_indices=entry_indices(pools.side["swa"], [3, 2]), keys=keys[6:8]),
            PoolTransfer(DRAFT, host_indices=ridx, keys=keys, indices_from_pool=KV),
        ])
        assert got == {MAMBA: [True], SWA: [True, True], DRAFT: [True] * n}
        assert [entry_bytes(pools.kv, n - 1 - e) for e in range(n)] == want_kv  # rank 0's copy
        assert [entry_bytes(pools.side["swa"], 3), entry_bytes(pools.side["swa"], 2)] == want_swa  # rank 0's
        assert entry_bytes(pools.side["mamba"], 5) == mine_mamba  # its own
        assert [entry_bytes(pools.side["draft"], n - 1 - e) for e in range(n)] == mine_draft  # its own
    assert entry_bytes(p0.side["mamba"], 5) != entry_bytes(p1.side["mamba"], 5)
    assert entry_bytes(p0.side["draft"], 0) != entry_bytes(p1.side["draft"], 0)


@pytest.mark.parametrize(
    "pool,reader_kwargs",
    [
        ("mamba", {"mamba": {"temporal_shape": (4, 2, 8)}}),  # same bytes per state, other shape
        ("mamba", {"mamba": {"temporal_dtype": torch.int32}}),  # same size, other dtype
        ("mamba", {"mamba": {"layers": 1, "temporal_shape": (4, 4, 8), "conv_shapes": ((32, 3),)}}),  # same size
        ("swa", {"swa": {"heads": 2, "head_dim": 8}}),  # same bytes per page, other heads
        ("swa", {"swa": {"dtype": torch.float16}}),  # same size, other dtype
    ],
)
def test_side_pool_geometry_mismatch_is_a_miss(valkey, model, made, pool, reader_kwargs):
    n = 4
    w = make_hybrid_pools("mha", "page_first", n, with_draft=False)
    fill(w.side[pool], 3)
    bw = made(valkey.port, model, w)
    r = make_hybrid_pools("mha", "page_first", n, with_draft=False, **reader_kwargs)
    for p in r.all().values():
        zero(p)
    br = made(valkey.port, model, r)
    assert len(entry_bytes(r.side[pool], 0)) == len(entry_bytes(w.side[pool], 0))
    assert br.side_pool_formats()[pool] != bw.side_pool_formats()[pool]
    keys = page_keys(n, salt="geom")
    assert bw.batch_set_v1(keys, entry_indices(w.kv, list(range(n)))) == [True] * n
    wkeys = [keys[3]] if pool == "mamba" else keys[2:4]
    slots = list(range(len(wkeys)))
    assert bw.batch_set_v2([PoolTransfer(PoolName(pool), host_indices=entry_indices(w.side[pool], slots), keys=wkeys)])[PoolName(pool)] == [True] * len(wkeys)
    q = [PoolTransfer(PoolName(pool), keys=["__placeholder__"] * len(wkeys), hit_policy=TRAILING)]
    assert bw.batch_exists_v2(keys, q).kv_hit_pages == n
    res = br.batch_exists_v2(keys, q)
    assert res.kv_hit_pages == 0 and res.restorable_prefix_pages == []  # the KV pages match, the pool does not
    got = br.batch_get_v2([PoolTransfer(PoolName(pool), host_indices=entry_indices(r.side[pool], slots), keys=wkeys)])
    assert got == {PoolName(pool): [False] * len(wkeys)}
    assert is_zero(r.side[pool])


# -- failures are misses, never exceptions ---------------------------------------------------------


def test_mismatched_lengths_and_unknown_pools_are_all_false(valkey, model, made):
    n = 4
    pools = make_hybrid_pools("mha", "page_first", n)
    fill(pools.side["mamba"], 1)
    b = made(valkey.port, model, pools)
    keys = page_keys(n, salt="len")
    m, s = pools.side["mamba"], pools.side["swa"]
    bad = [
        PoolTransfer(MAMBA, host_indices=entry_indices(m, [0, 1]), keys=[keys[0]]),  # 2 slots, 1 key
        PoolTransfer(SWA, host_indices=torch.arange(5, dtype=torch.int64), keys=keys[:2]),  # 5 != 2 x 4
        PoolTransfer(DRAFT, host_indices=None, keys=keys),
        PoolTransfer(PoolName.INDEXER, host_indices=entry_indices(pools.kv, [0]), keys=keys[:1]),  # never registered
    ]
    for op in (b.batch_set_v2, b.batch_get_v2):
        assert op(bad) == {MAMBA: [False], SWA: [False, False], DRAFT: [False] * n, PoolName.INDEXER: [False]}
        assert op([PoolTransfer(KV, host_indices=torch.arange(3, dtype=torch.int64), keys=keys[:1])]) == {KV: [False]}
        assert op([PoolTransfer(MAMBA, host_indices=torch.empty(0, dtype=torch.int64), keys=[])]) == {MAMBA: []}
        assert op([]) == {}
    assert b.batch_set_v1(keys[:2], torch.arange(5, dtype=torch.int64)) == [False, False]
    assert b.batch_get_v1(keys[:2], torch.arange(5, dtype=torch.int64)) == [False, False]
    assert b.batch_exists(keys) == 0  # nothing above was written
    assert b.batch_set_v1(keys, entry_indices(pools.kv, list(range(n)))) == [True] * n
    # a pool nobody registered cannot restore anything
    assert b.batch_exists_v2(keys, [PoolTransfer(PoolName.INDEXER, keys=None)]) == PoolTransferResult(0, {KV: n}, [])


def test_server_down_v2_gives_failures_not_exceptions(valkey_factory, model, made):
    server = valkey_factory()
    n = 4
    pools = make_hybrid_pools("mha", "page_first", n)
    b = made(server.port, model, pools, timeout_ms=1000, connect_timeout_ms=500)
    keys = page_keys(n, salt="down")
    write_presence(b, pools, keys, [True] * n, {"mamba": [False] * 3 + [True], "swa": [True] * n, "draft": [True] * n})
    assert b.batch_exists_v2(keys, query_transfers()).kv_hit_pages == n
    server.stop()
    assert b.batch_exists_v2(keys, query_transfers()).kv_hit_pages == 0
    t = [PoolTransfer(MAMBA, host_indices=entry_indices(pools.side["mamba"], [0]), keys=[keys[3]])]
    assert b.batch_get_v2(t) == {MAMBA: [False]} and b.batch_set_v2(t) == {MAMBA: [False]}
    b.close()
    b.close()  # idempotent; and a closed backend still answers with failures
    assert b.batch_get_v2(t) == {MAMBA: [False]}
    assert b.batch_exists_v2(keys, query_transfers()).kv_hit_pages == 0


def test_under_sglangs_failure_injector(valkey, model, monkeypatch):
    """SGLANG_TEST_HICACHE_BACKEND_RANDOM_FAILURE / _RANDOM_DELAY: SGLang's factory wraps the
    backend in HiCacheStorageFailureInjector. No call may raise, and every reported hit must
    carry the writer's bytes."""
    monkeypatch.setenv("SGLANG_TEST_HICACHE_BACKEND_RANDOM_FAILURE", "0.3")
    monkeypatch.setenv("SGLANG_TEST_HICACHE_BACKEND_RANDOM_DELAY", "0.002")
    n = 4
    w, r = make_hybrid_pools("mha", "page_first", n), make_hybrid_pools("mha", "page_first", n)
    bw, br = hybrid_backend(valkey.port, model, w), hybrid_backend(valkey.port, model, r)
    try:
        assert isinstance(bw, HiCacheStorageFailureInjector) and isinstance(br, HiCacheStorageFailureInjector)
        hits = misses = 0
        for round_ in range(30):
            keys = page_keys(n, salt=f"inject-{round_}")
            for i, p in enumerate(w.all().values()):
                fill(p, 1000 * round_ + i)
            want = {
                "kv": [entry_bytes(w.kv, e) for e in range(n)],
                "mamba": [entry_bytes(w.side["mamba"], 1)],
                "swa": [entry_bytes(w.side["swa"], e) for e in (2, 3)],
                "draft": [entry_bytes(w.side["draft"], e) for e in range(n)],
            }
            idx = entry_indices(w.kv, list(range(n)))
            bw.batch_set_v1(keys, idx)
            bw.batch_set_v2([
                PoolTransfer(MAMBA, host_indices=entry_indices(w.side["mamba"], [1]), keys=[keys[3]], hit_policy=TRAILING),
                PoolTransfer(SWA, host_indices=entry_indices(w.side["swa"], [2, 3]), keys=keys[2:4], hit_policy=TRAILING),
                PoolTransfer(DRAFT, host_indices=idx, keys=keys, indices_from_pool=KV),
            ])
            res = br.batch_exists_v2(keys, query_transfers())
            assert isinstance(res, PoolTransferResult) and 0 <= res.kv_hit_pages <= n
            for p in r.all().values():
                zero(p)
            ridx = entry_indices(r.kv, list(reversed(range(n))))
            got = {"kv": br.batch_get_v1(keys, ridx)}
            got.update({str(k): v for k, v in br.batch_get_v2([
                PoolTransfer(MAMBA, host_indices=entry_indices(r.side["mamba"], [0]), keys=[keys[3]]),
                PoolTransfer(SWA, host_indices=entry_indices(r.side["swa"], [0, 1]), keys=keys[2:4]),
                PoolTransfer(DRAFT, host_indices=ridx, keys=keys, indices_from_pool=KV),
            ]).items()})
            dst = {"kv": list(reversed(range(n))), "mamba": [0], "swa": [0, 1], "draft": list(reversed(range(n)))}
            for name, flags in got.items():
                assert len(flags) == len(want[name])
                for i, ok in enumerate(flags):
                    if ok:
                        hits += 1
                        assert entry_bytes(r.all()[name], dst[name][i]) == want[name][i], (round_, name, i)
                    else:
                        misses += 1
                        assert set(entry_bytes(r.all()[name], dst[name][i])) <= {0}
        assert hits > 0 and misses > 0  # both the backend's answers and injected failures were seen
    finally:
        bw.close()
        br.close()


# -- DeepSeek-V4: a logical KV anchor, the bytes in KV-derived paged pools -------------------------


def test_logical_anchor_with_deepseek_v4_paged_pools(valkey, model):
    n, ps = 4, 4

    def engine():
        anchor = LogicalHostPool(n * ps, ps, layout="page_first")
        c4 = DeepSeekV4PagedHostPool(
            "deepseek_v4_c4", [torch.zeros(n, 96, dtype=torch.uint8) for _ in range(2)], 96, n, ps,
            layout="page_first", device="cpu", pin_memory=False,
        )
        c4.kv_buffer.zero_()
        pools = HybridPools(anchor, {"deepseek_v4_c4": c4})
        b = StorageBackendFactory.create_backend("dynamic", storage_config(model, valkey.port, mla=True), anchor)
        register_like_the_controller(b, pools, later=())
        return pools, b

    (pw, bw), (pr, br) = engine(), engine()
    try:
        keys = page_keys(n, salt="dsv4")
        c4 = PoolName.DEEPSEEK_V4_C4
        pw.side["deepseek_v4_c4"].kv_buffer.copy_(torch.randint(0, 256, pw.side["deepseek_v4_c4"].kv_buffer.shape, dtype=torch.uint8))
        idx = torch.arange(n * ps, dtype=torch.int64)
        q = [PoolTransfer(c4, keys=None, indices_from_pool=KV)]
        assert bw.batch_exists_v2(keys, q).kv_hit_pages == 0  # nothing stored yet
        assert bw.batch_exists_v2(keys, []).kv_hit_pages == 0  # no data pool to ask: no hit
        assert bw.batch_set_v1(keys, idx) == [True] * n  # the anchor has no bytes to write
        assert bw.batch_set_v2([PoolTransfer(c4, host_indices=idx[: 3 * ps], keys=keys[:3], indices_from_pool=KV)]) == {c4: [True] * 3}
        res = br.batch_exists_v2(keys, q)
        assert (res.kv_hit_pages, res.restorable_prefix_pages) == (3, [1, 2, 3])
        assert br.batch_get_v1(keys[:3], idx[: 3 * ps]) == [True] * 3
        rev = torch.cat([torch.arange(p * ps, (p + 1) * ps) for p in (3, 2, 1)])
        assert br.batch_get_v2([PoolTransfer(c4, host_indices=rev, keys=keys[:3])]) == {c4: [True] * 3}
        for i, p in enumerate((3, 2, 1)):
            assert torch.equal(pr.side["deepseek_v4_c4"].kv_buffer[p], pw.side["deepseek_v4_c4"].kv_buffer[i])
        assert not pr.side["deepseek_v4_c4"].kv_buffer[0].any()
    finally:
        bw.close()
        br.close()


# -- two engine processes --------------------------------------------------------------------------


def run_engine(*args) -> dict:
    out = subprocess.run([sys.executable, str(ENGINE), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind,layout", [("mha", "page_first_direct"), ("mla", "page_first")])
def test_two_engine_processes_share_v2_pages(valkey, model, kind, layout):
    w = run_engine("write", valkey.port, model, kind, layout, 4321)
    assert w["kv"] == [True] * 8 and all(all(v) for v in w["side"].values()), w
    r = run_engine("read", valkey.port, model, kind, layout, 4321)
    assert r["formats"] == w["formats"] and r["value_format"] == w["value_format"]
    assert r["kv_hit_pages"] == 8 and r["restorable"] == [4, 8]
    assert r["kv"] == [True] * 8 and all(all(v) for v in r["side"].values()), r
    assert all(all(v) for v in r["equal"].values()), r["equal"]  # byte for byte, regenerated from the seed
    assert all(r["untouched_zero"].values())
