"""ValkeyHiCacheStorage against the real SGLang 0.5.23 package: SGLang's own factory, config and
host pools (MHATokenToKVPoolHost / MLATokenToKVPoolHost on CPU), a real valkey-server."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("sglang", reason="SGLang is not installed (scripts/sglang-venv.sh makes a venv with it)")
torch = pytest.importorskip("torch", reason="torch is not installed")
try:
    from sglang.srt.mem_cache.hicache_storage import HiCacheStorage, HiCacheStorageConfig
    from sglang.srt.mem_cache.pool_host.mha import MHATokenToKVPoolHost  # noqa: F401 (needs the kernels' python deps)
    from sglang.srt.mem_cache.storage.backend_factory import StorageBackendFactory
except ImportError as e:  # pragma: no cover - depends on the environment
    pytest.skip(f"SGLang's HiCache modules cannot be imported: {e}", allow_module_level=True)

import hicache_valkey.sglang as hvs
from hicache_valkey.sglang.page_format import describe_pool
from sglang_pools import LAYOUTS, fill_random, make_pool, page_bytes_of, page_indices, page_keys, raw_bytes

pytestmark = pytest.mark.sglang

KINDS_LAYOUTS = [(k, l) for k in ("mha", "mla") for l in LAYOUTS]


def dynamic_extra(server, **extra):
    return {
        "backend_name": "valkey",
        "module_path": "hicache_valkey.sglang",
        "class_name": "ValkeyHiCacheStorage",
        "interface_v1": 1,
        "host": server.host,
        "port": server.port,
        **extra,
    }


def storage_config(model, extra_config, *, tp_rank=0, tp_size=1, mla=False, metrics=False, layout="page_first"):
    return HiCacheStorageConfig(
        tp_rank=tp_rank, tp_size=tp_size, pp_rank=0, pp_size=1, attn_cp_rank=0, attn_cp_size=1,
        is_mla_model=mla, enable_storage_metrics=metrics, is_page_first_layout=layout == "page_first",
        model_name=model, extra_config=extra_config,
    )


@pytest.fixture
def backends():
    """Creates backends the way SGLang's cache controller does, and closes them afterwards."""
    made = []

    def make(server, model, pool=None, *, extra=None, **cfg):
        layout = pool.layout if pool is not None else "page_first"
        config = storage_config(model, dynamic_extra(server, **(extra or {})), layout=layout, **cfg)
        backend = StorageBackendFactory.create_backend("dynamic", config, pool)
        if pool is not None:
            backend.register_mem_pool_host(pool)
        made.append(backend)
        return backend

    yield make
    for b in made:
        b.close()


def snapshot_pages(pool, n):
    return [page_bytes_of(pool, p) for p in range(n)]


# -- construction --------------------------------------------------------------------------------


def test_sglang_factory_builds_the_backend(valkey, model, backends):
    pool = make_pool("mha", "page_first", 4)
    b = backends(valkey, model, pool)
    assert isinstance(b, hvs.ValkeyHiCacheStorage) and isinstance(b, HiCacheStorage)
    assert b.mem_pool_host is pool
    assert b.value_format == describe_pool(pool).fingerprint != 0
    # what a user tries first does not work in SGLang itself: hence the dynamic path
    with pytest.raises(ValueError, match="valkey"):
        StorageBackendFactory.create_backend("valkey", storage_config(model, {}), None)


def test_create_backend_helper_and_settings_precedence(valkey, model, monkeypatch):
    pool = make_pool("mha", "page_first", 2)
    # kwargs reach the constructor through the factory's dynamic path
    b = hvs.create_backend(storage_config(model, None), pool, host="127.0.0.1", port=valkey.port)
    assert isinstance(b, hvs.ValkeyHiCacheStorage) and b.mem_pool_host is pool
    assert b.storage_config.extra_config["module_path"] == "hicache_valkey.sglang"
    b.close()
    # extra_config wins over kwargs (the kwargs port is wrong here)
    b = hvs.create_backend(storage_config(model, {"host": "127.0.0.1", "port": valkey.port}), None, port=1)
    assert b.batch_exists(["x"]) == 0
    b.close()
    # the environment under both; the constructor fails fast on an unreachable server
    monkeypatch.setenv("VALKEY_HOST", "127.0.0.1")
    monkeypatch.setenv("VALKEY_PORT", str(valkey.port))
    b = hvs.create_backend(None, None, model_name=model)
    assert b.model_name == model and b.batch_exists(["x"]) == 0
    b.close()
    import hicache_valkey as hv

    with pytest.raises(hv.ValkeyConnectionError):
        hvs.create_backend(storage_config(model, {"port": 1, "connect_timeout_ms": 500}))
    with pytest.raises(hv.InvalidConfigError):
        hvs.create_backend(storage_config(model, {"port": "six"}))


# -- v1 zero-copy --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,layout", KINDS_LAYOUTS)
def test_v1_round_trip_byte_for_byte(valkey, model, backends, kind, layout):
    n = 8
    pool = make_pool(kind, layout, n)
    b = backends(valkey, model, pool)
    per_page = len(pool.get_page_buffer_meta(page_indices(pool, [0]))[0])
    expected_per_page = {("mha", "layer_first"): 6, ("mla", "layer_first"): 3}.get((kind, layout), 2 if kind == "mha" else 1)
    assert per_page == expected_per_page  # 2L, L, 2 or 1 buffers per page

    fill_random(pool, seed=11)
    before_raw = raw_bytes(pool).clone()
    before = snapshot_pages(pool, n)
    keys = page_keys(n, salt=f"{kind}-{layout}")
    order_w = [3, 1, 7, 0, 5, 2, 6, 4]
    assert b.batch_set_v1(keys, page_indices(pool, order_w)) == [True] * n

    raw_bytes(pool).zero_()
    assert b.batch_get_v1(keys, page_indices(pool, order_w)) == [True] * n
    assert torch.equal(raw_bytes(pool), before_raw)  # the whole pool, byte for byte

    raw_bytes(pool).zero_()
    order_r = [6, 0, 2, 4, 1, 7, 3, 5]  # other slots than written from, as after an eviction
    assert b.batch_get_v1(keys, page_indices(pool, order_r)) == [True] * n
    for i in range(n):
        assert page_bytes_of(pool, order_r[i]) == before[order_w[i]]

    # a partial hit: the missing key fails alone, its page is not written
    raw_bytes(pool).zero_()
    mixed = [keys[0], "f" * 64, keys[2]]
    assert b.batch_get_v1(mixed, page_indices(pool, [0, 1, 2])) == [True, False, True]
    assert page_bytes_of(pool, 1) == bytes(len(before[0]))


@pytest.mark.parametrize("kind,layout", KINDS_LAYOUTS)
def test_v0_path_as_the_controller_uses_it(valkey, model, backends, kind, layout):
    n = 5
    pool = make_pool(kind, layout, n)
    b = backends(valkey, model, pool, extra={"interface_v1": 0})
    ps = pool.page_size
    fill_random(pool, seed=12)
    before_raw = raw_bytes(pool).clone()
    keys = page_keys(n, salt=f"v0-{kind}-{layout}")
    idx = page_indices(pool, list(range(n)))

    # _generic_page_set: one flat data page per key
    data = [pool.get_data_page(idx[i * ps]) for i in range(n)]
    assert b.batch_set(keys, data) is True
    assert b.batch_exists(keys) == n

    # _generic_page_get: dummy flat pages, then set_from_flat_data_page
    raw_bytes(pool).zero_()
    dummies = [pool.get_dummy_flat_data_page() for _ in keys]
    got = b.batch_get(keys, dummies)
    assert all(g is d for g, d in zip(got, dummies))
    for i in range(n):
        pool.set_from_flat_data_page(idx[i * ps], got[i])
    assert torch.equal(raw_bytes(pool), before_raw)

    # single-key forms, and batch_get allocating its own pages from the registered pool
    assert b.exists(keys[0]) and not b.exists("0" * 64)
    assert b.get("0" * 64, pool.get_dummy_flat_data_page()) is None
    t = b.get(keys[1])
    assert t is not None and t.view(torch.uint8).numpy().tobytes() == page_bytes_of(pool, 1)
    assert b.set("a" * 64, pool.get_data_page(idx[0]))

    # v0 and v1 store the same bytes: what one wrote the other reads
    raw_bytes(pool).zero_()
    assert b.batch_get_v1(keys, idx) == [True] * n
    assert torch.equal(raw_bytes(pool), before_raw)
    keys1 = page_keys(n, salt=f"v1-{kind}-{layout}")
    assert b.batch_set_v1(keys1, idx) == [True] * n
    raw_bytes(pool).zero_()
    for i, page in enumerate(b.batch_get(keys1, [pool.get_dummy_flat_data_page() for _ in keys1])):
        pool.set_from_flat_data_page(idx[i * ps], page)
    assert torch.equal(raw_bytes(pool), before_raw)


def test_v0_non_contiguous_targets(valkey, model, backends):
    pool = make_pool("mha", "page_first", 2)
    b = backends(valkey, model, pool)
    fill_random(pool, seed=13)
    page = pool.get_data_page(0, flat=False)  # a strided view into the pool
    assert not page.is_contiguous()
    assert b.set("n" * 64, page)
    target = torch.zeros(page.shape[::-1], dtype=page.dtype).permute(*reversed(range(page.dim())))
    assert not target.is_contiguous()
    assert b.get("n" * 64, target) is target
    assert torch.equal(target.view(torch.int16), page.view(torch.int16))


# -- existence, ranks, writers -------------------------------------------------------------------


def test_batch_exists_leading_count_with_a_gap(valkey, model, backends):
    n = 6
    pool = make_pool("mha", "page_first", n)
    b = backends(valkey, model, pool)
    keys = page_keys(n)
    written = [0, 1, 3, 4]
    assert all(b.batch_set_v1([keys[i] for i in written], page_indices(pool, written)))
    assert b.batch_exists(keys) == 2
    assert b.batch_exists(keys[3:5]) == 2
    assert b.batch_exists(keys[2:]) == 0
    assert b.batch_exists([]) == 0
    assert b.exists(keys[4]) and not b.exists(keys[2])
    long_chain = keys[:2] + page_keys(3000, salt="long")
    assert b.batch_exists(long_chain) == 2  # any number of keys, one pipelined call


def test_two_tp_ranks_are_isolated(valkey, model, backends):
    n = 4
    p0, p1 = make_pool("mha", "page_first", n), make_pool("mha", "page_first", n)
    r0 = backends(valkey, model, p0, tp_rank=0, tp_size=2)
    r1 = backends(valkey, model, p1, tp_rank=1, tp_size=2)
    keys = page_keys(n)
    idx = page_indices(p0, list(range(n)))
    fill_random(p0, seed=1)
    fill_random(p1, seed=2)
    want0, want1 = raw_bytes(p0).clone(), raw_bytes(p1).clone()
    assert all(r0.batch_set_v1(keys, idx))
    assert r1.batch_exists(keys) == 0
    raw_bytes(p1).zero_()
    assert r1.batch_get_v1(keys, idx) == [False] * n
    assert not raw_bytes(p1).any()
    raw_bytes(p1).copy_(want1)
    assert all(r1.batch_set_v1(keys, idx))  # the same keys, its own shard
    raw_bytes(p0).zero_()
    raw_bytes(p1).zero_()
    assert all(r0.batch_get_v1(keys, idx)) and all(r1.batch_get_v1(keys, idx))
    assert torch.equal(raw_bytes(p0), want0) and torch.equal(raw_bytes(p1), want1)


def test_mla_non_writer_rank_skips_writes_but_reads(valkey, model, backends):
    n = 4
    p0, p1 = make_pool("mla", "page_first", n), make_pool("mla", "page_first", n)
    writer = backends(valkey, model, p0, tp_rank=0, tp_size=2, mla=True)
    reader = backends(valkey, model, p1, tp_rank=1, tp_size=2, mla=True)
    assert writer.is_storage_writer and not reader.is_storage_writer
    keys = page_keys(n)
    idx = page_indices(p0, list(range(n)))
    fill_random(p1, seed=3)
    # like SGLang's controller (backup_skip), a non-writer's backup counts as done...
    assert reader.batch_set_v1(keys, idx) == [True] * n
    assert reader.batch_set(keys[:1], [p1.get_data_page(0)]) is True
    # ...but writes nothing
    assert writer.batch_exists(keys) == 0
    fill_random(p0, seed=4)
    want = raw_bytes(p0).clone()
    assert all(writer.batch_set_v1(keys, idx))
    raw_bytes(p1).zero_()
    assert reader.batch_exists(keys) == n
    assert reader.batch_get_v1(keys, idx) == [True] * n  # MLA: one shared copy
    assert torch.equal(raw_bytes(p1), want)


@pytest.mark.parametrize(
    "reader_kind,reader_layout,reader_geometry",
    [
        ("mha", "page_first_direct", {}),  # same bytes per page, other order
        ("mha", "layer_first", {}),
        ("mha", "page_first", {"dtype": torch.float16}),  # same size, other dtype
        ("mha", "page_first", {"heads": 4, "head_dim": 4}),  # same size, other geometry
        ("mha", "page_first", {"layers": 4}),  # other size
        ("mla", "page_first", {"kv_lora_rank": 24, "qk_rope_head_dim": 8}),  # MLA, 32 = 2*2*8
    ],
)
def test_layout_mismatch_gives_misses_never_wrong_data(valkey, model, backends, reader_kind, reader_layout, reader_geometry):
    n = 4
    wpool = make_pool("mha", "page_first", n)
    writer = backends(valkey, model, wpool)
    fill_random(wpool, seed=5)
    keys = page_keys(n)
    idx = page_indices(wpool, list(range(n)))
    assert all(writer.batch_set_v1(keys, idx))

    rpool = make_pool(reader_kind, reader_layout, n, **reader_geometry)
    # MLA keys have no tp part, so the MLA reader is given the MHA namespace to collide on purpose
    reader = backends(valkey, model, rpool)
    assert reader.value_format != writer.value_format
    assert reader.batch_get_v1(keys, idx) == [False] * n
    assert not raw_bytes(rpool).any()  # nothing written into the reader's pool
    if reader_kind == "mha":
        got = reader.batch_get(keys, [rpool.get_dummy_flat_data_page() for _ in keys])
        assert got == [None] * n


# -- concurrency ---------------------------------------------------------------------------------


def test_three_threads_exists_get_set_overlap(valkey, model, backends):
    """SGLang's pattern: prefetch_thread calls batch_exists, prefetch_io_aux_thread the gets,
    backup_thread the sets, all at once on one backend."""
    per = 16
    pool = make_pool("mha", "page_first", 3 * per, layers=4, heads=4, head_dim=32, page_size=16)
    b = backends(valkey, model, pool)
    fill_random(pool, seed=6)
    keys_a = page_keys(per, salt="A")  # pre-stored; read by the get thread into pages [per, 2per)
    keys_b = page_keys(per, salt="B")  # written by the set thread from pages [2per, 3per)
    src_a = list(range(per))
    assert all(b.batch_set_v1(keys_a, page_indices(pool, src_a)))
    want_a = [page_bytes_of(pool, p) for p in src_a]
    dst_a = list(range(per, 2 * per))
    src_b = list(range(2 * per, 3 * per))
    rounds = 25
    start = threading.Barrier(3)
    errors = []

    def guard(fn):
        def run():
            try:
                start.wait(timeout=30)
                fn()
            except Exception as e:  # reported below
                errors.append(e)
        return run

    def exists_loop():
        for _ in range(rounds):
            assert b.batch_exists(keys_a) == per

    def get_loop():
        for _ in range(rounds):
            assert b.batch_get_v1(keys_a, page_indices(pool, dst_a)) == [True] * per
            for i, p in enumerate(dst_a):
                assert page_bytes_of(pool, p) == want_a[i]

    def set_loop():
        for _ in range(rounds):
            assert b.batch_set_v1(keys_b, page_indices(pool, src_b)) == [True] * per

    threads = [threading.Thread(target=guard(f)) for f in (exists_loop, get_loop, set_loop)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors
    assert b.batch_exists(keys_b) == per
    assert time.monotonic() - t0 < 120


# -- metrics and housekeeping --------------------------------------------------------------------


def test_get_stats_and_valkey_stats(valkey, model, backends):
    from sglang.srt.observability.metrics_collector import StorageMetrics

    n = 4
    pool = make_pool("mha", "page_first", n)
    b = backends(valkey, model, pool, metrics=True)
    keys = page_keys(n)
    idx = page_indices(pool, list(range(n)))
    assert all(b.batch_set_v1(keys, idx))
    assert all(b.batch_get_v1(keys, idx))
    b.batch_get_v1(page_keys(2, salt="miss"), page_indices(pool, [0, 1]))
    m = b.get_stats()
    assert isinstance(m, StorageMetrics)
    assert m.backup_pgs == [n] and m.prefetch_pgs == [n]
    assert len(m.backup_bandwidth) == 1 and m.backup_bandwidth[0] > 0
    assert len(m.prefetch_bandwidth) == 1 and m.prefetch_bandwidth[0] > 0
    m2 = b.get_stats()  # since the last call: nothing
    assert m2.backup_pgs == [] and m2.prefetch_pgs == []

    s = b.valkey_stats()
    assert s["model_keys"] == n
    assert s["used_memory_bytes"] > 0 and s["used_memory_human"]
    assert s["connected_clients"] >= 1
    assert s["get_hits"] == n and s["get_misses"] == 2
    assert 0 < s["get_hit_ratio"] < 1 and 0 <= s["keyspace_hit_ratio"] <= 1
    assert s["value_format"] == b.value_format


def test_clear_removes_only_this_model(valkey, model, backends):
    pool = make_pool("mha", "page_first", 2)
    mine = backends(valkey, model, pool)
    other = backends(valkey, model + "-other", pool)
    keys = page_keys(2)
    idx = page_indices(pool, [0, 1])
    assert all(mine.batch_set_v1(keys, idx)) and all(other.batch_set_v1(keys, idx))
    assert mine.clear() is True
    assert mine.batch_exists(keys) == 0 and other.batch_exists(keys) == 2


def test_server_down_gives_failures_not_exceptions(valkey_factory, model, backends):
    server = valkey_factory()
    pool = make_pool("mha", "page_first", 2)
    b = backends(server, model, pool, extra={"timeout_ms": 1000, "connect_timeout_ms": 500})
    keys = page_keys(2)
    idx = page_indices(pool, [0, 1])
    assert all(b.batch_set_v1(keys, idx))
    server.stop()
    assert b.batch_get_v1(keys, idx) == [False, False]
    assert b.batch_set_v1(keys, idx) == [False, False]
    assert b.batch_exists(keys) == 0
    assert b.batch_get(keys, [pool.get_dummy_flat_data_page() for _ in keys]) == [None, None]
    assert b.batch_set(keys, [pool.get_data_page(0), pool.get_data_page(pool.page_size)]) is False
    assert b.clear() is False


def test_fingerprint_covers_the_page_format():
    # 8 pages: SGLang 0.5.23's MLA page_first_direct host pool indexes its page axis by layer
    # when building transfer views, so it needs at least as many pages as layers.
    fps = {}
    for kind in ("mha", "mla"):
        for layout in LAYOUTS:
            fps[(kind, layout)] = describe_pool(make_pool(kind, layout, 8)).fingerprint
    fps["fp16"] = describe_pool(make_pool("mha", "page_first", 8, dtype=torch.float16)).fingerprint
    fps["ps8"] = describe_pool(make_pool("mha", "page_first", 8, page_size=8)).fingerprint
    fps["L4"] = describe_pool(make_pool("mha", "page_first", 8, layers=4)).fingerprint
    fps["H4"] = describe_pool(make_pool("mha", "page_first", 8, heads=4, head_dim=4)).fingerprint
    fps["mla-C"] = describe_pool(make_pool("mla", "page_first", 8, kv_lora_rank=24)).fingerprint
    assert len(set(fps.values())) == len(fps)
    again = describe_pool(make_pool("mha", "page_first", 9)).fingerprint  # pool size is not format
    assert again == fps[("mha", "page_first")]


def test_skip_existing_is_on_by_default_in_the_backend(monkeypatch):
    from hicache_valkey.sglang.backend import resolve_settings

    monkeypatch.delenv("HICACHE_VALKEY_SKIP_EXISTING", raising=False)
    assert resolve_settings({}, {})["skip_existing"] is True
    assert resolve_settings({"skip_existing": False}, {})["skip_existing"] is False
    # The environment decides when extra_config does not.
    monkeypatch.setenv("HICACHE_VALKEY_SKIP_EXISTING", "0")
    assert "skip_existing" not in resolve_settings({}, {})
