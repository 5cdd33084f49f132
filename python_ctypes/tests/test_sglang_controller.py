"""SGLang 0.5.23's own cache controllers driving our backend on CPU, with a real valkey-server.

``HiCacheController`` (dense MHA/MLA) and ``HybridCacheController`` (hybrid models) are constructed
for real over SGLang's real host pools, attach our backend through SGLang's ``dynamic`` path
(``attach_storage_backend``: factory, register_mem_pool_host, register_mem_host_pool_v2 for every
pool, on_host_pools_registered), and run their storage threads. The tests call the controllers'
page functions (``_page_set_zero_copy``, ``_generic_page_set``, ``_page_get_zero_copy``,
``_generic_page_get``), the prefetch page counting (``_storage_hit_query``) and the threaded
backup and prefetch paths (``write_storage`` -> ``_page_backup``; ``prefetch`` -> hit query ->
``_page_transfer`` incl. the v2 side pools), and compare the bytes that land in the host pools.
"""

from __future__ import annotations

import logging

import pytest

pytest.importorskip("sglang", reason="SGLang is not installed (scripts/sglang-venv.sh makes a venv with it)")
torch = pytest.importorskip("torch", reason="torch is not installed")
try:
    from sglang.srt.managers.cache_controller import PrefetchOperation as DensePrefetchOperation
    from sglang.srt.mem_cache.hicache_storage import STORAGE_BATCH_SIZE, HiCacheStorageFailureInjector, PoolHitPolicy, PoolName, PoolTransfer
    from sglang.srt.mem_cache.hybrid_cache.hybrid_cache_controller import HybridCacheController  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    pytest.skip(f"SGLang's cache controllers cannot be imported: {e}", allow_module_level=True)

import hicache_valkey.sglang as hvs
from sglang_controllers import (
    backup,
    dense_controller,
    dense_prefetch,
    hybrid_controller,
    hybrid_prefetch,
    make_kv_pair,
    page_hashes,
    stop,
    use_python_page_hash,
)
from sglang_hybrid import DRAFT_GEOMETRY, HybridPools, entry_bytes, entry_indices, fill, make_mamba_pool, swa_geometry, zero
from sglang_pools import make_pool

pytestmark = pytest.mark.sglang

PS = 4
KV, MAMBA, SWA, DRAFT = PoolName.KV, PoolName.MAMBA, PoolName.SWA, PoolName.DRAFT
TRAILING = PoolHitPolicy.TRAILING_PAGES


@pytest.fixture(autouse=True)
def _page_hash(monkeypatch):
    use_python_page_hash(monkeypatch)


@pytest.fixture
def controllers():
    made = []

    def keep(ctrl):
        made.append(ctrl)
        return ctrl

    yield keep
    for c in made:
        stop(c)


class Records(logging.Handler):
    """Collects the records of SGLang's controller/storage loggers and ours (any thread)."""

    NAMES = ("sglang.srt.managers.cache_controller", "sglang.srt.mem_cache.hybrid_cache.hybrid_cache_controller",
             "sglang.srt.mem_cache.hicache_storage", "hicache_valkey")

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def __enter__(self):
        self._levels = []
        for n in self.NAMES:
            lg = logging.getLogger(n)
            self._levels.append(lg.level)
            lg.setLevel(logging.DEBUG)
            lg.addHandler(self)
        return self

    def __exit__(self, *exc):
        for n, level in zip(self.NAMES, self._levels):
            lg = logging.getLogger(n)
            lg.removeHandler(self)
            lg.setLevel(level)

    def exceptions(self):
        return [r for r in self.records if r.exc_info]


def tokens_for(pages, start=1000):
    return list(range(start, start + pages * PS))


def kv_pages_bytes(pool, host_indices, pages):
    return [entry_bytes(pool, int(host_indices[p * PS]) // PS) for p in range(pages)]


# -- HiCacheController (dense) ---------------------------------------------------------------------


@pytest.mark.parametrize("interface_v1", [True, False], ids=["v1", "v0"])
def test_dense_controller_page_functions_and_hit_counting(valkey, model, controllers, interface_v1):
    pages = STORAGE_BATCH_SIZE + 8  # the hit query counts in batches of 128
    dev, alloc, host = make_kv_pair("mha", "page_first", pages, layers=2)
    ctrl = controllers(dense_controller(alloc, host, valkey.port, model, interface_v1=interface_v1))
    assert isinstance(ctrl.storage_backend, hvs.ValkeyHiCacheStorage)
    assert ctrl.storage_backend.mem_pool_host is host
    want_get = ctrl._page_get_zero_copy if interface_v1 else ctrl._generic_page_get
    assert ctrl.page_get_func == want_get
    set_fn = ctrl._page_set_zero_copy if interface_v1 else ctrl._generic_page_set

    fill(host, 21)
    tokens = tokens_for(pages)
    hashes = page_hashes(tokens, PS)
    assert len(hashes) == pages and len(set(hashes)) == pages
    want = [entry_bytes(host, p) for p in range(pages)]
    idx = entry_indices(host, list(range(pages)))
    stored = pages - 4  # pages [0, 132) stored, [132, 136) not
    for i in range(0, stored, STORAGE_BATCH_SIZE):
        batch = hashes[i:min(i + STORAGE_BATCH_SIZE, stored)]
        assert set_fn(batch, idx[i * PS:(i + len(batch)) * PS]) is True

    # prefetch page counting: chunked exists across the 128-page batches, stops at the first miss
    op = DensePrefetchOperation("count", tokens)
    hit_hashes, hit_tokens = ctrl._storage_hit_query(op)
    assert hit_tokens == stored * PS and hit_hashes == hashes[:stored]

    # gets into other host pages of a zeroed pool; the count is the leading run of hits
    zero(host)
    dst = list(reversed(range(8)))
    got = ctrl.page_get_func(op, hashes[:8], entry_indices(host, dst))
    assert got == 8
    assert [entry_bytes(host, d) for d in dst] == want[:8]
    zero(host)
    assert ctrl.page_get_func(op, hashes[stored - 2:stored + 2], entry_indices(host, [0, 1, 2, 3])) == 2
    assert entry_bytes(host, 0) == want[stored - 2] and entry_bytes(host, 1) == want[stored - 1]
    assert not any(entry_bytes(host, p) != bytes(len(want[0])) for p in (2, 3))


@pytest.mark.parametrize(
    "kind,layout,interface_v1",
    [("mha", "page_first", True), ("mha", "layer_first", False), ("mla", "page_first_direct", True), ("mha", "page_first_direct", False)],
)
def test_dense_controller_threads_backup_then_prefetch(valkey, model, controllers, kind, layout, interface_v1):
    pages = STORAGE_BATCH_SIZE + 6  # two backup / transfer batches
    dev_w, alloc_w, host_w = make_kv_pair(kind, layout, pages, layers=2)
    dev_r, alloc_r, host_r = make_kv_pair(kind, layout, pages + 3, layers=2)
    writer = controllers(dense_controller(alloc_w, host_w, valkey.port, model, interface_v1=interface_v1))
    reader = controllers(dense_controller(alloc_r, host_r, valkey.port, model, interface_v1=interface_v1))
    fill(host_w, 5)
    zero(host_r)
    tokens = tokens_for(pages, start=7)
    hashes = page_hashes(tokens, PS)
    idx = writer.mem_pool_host.alloc(pages * PS)
    op = backup(writer, idx, tokens, hashes)
    assert op.completed_tokens == pages * PS
    want = kv_pages_bytes(host_w, idx, pages)

    reader.mem_pool_host.alloc(3 * PS)  # so the prefetch lands on other host pages
    res = dense_prefetch(reader, "r", tokens)
    assert res.hit_tokens == pages * PS and res.completed_tokens == pages * PS
    assert int(res.host_indices[0]) != int(idx[0])
    assert kv_pages_bytes(host_r, res.host_indices, pages) == want
    # a request that shares the first 5 pages only: the hit stops there
    reader.mem_pool_host.free(res.host_indices)
    other = tokens[:5 * PS] + tokens_for(3, start=90000)
    res2 = dense_prefetch(reader, "r2", other)
    assert res2.hit_tokens == 5 * PS


# -- HybridCacheController -------------------------------------------------------------------------


def hybrid_engine(kind, layout, pages, *, with_draft=True):
    dev, alloc, kv = make_kv_pair(kind, layout, pages)
    side = {
        "mamba": make_mamba_pool(layout, pages),
        "swa": make_pool(kind, layout, pages, page_size=PS, **swa_geometry(kind)),
    }
    if with_draft:
        side["draft"] = make_pool(kind, layout, pages, page_size=PS, **DRAFT_GEOMETRY)
    return dev, alloc, HybridPools(kv, side)


def node_backup_transfers(pools, hashes, a, b, node, *, mamba=True, swa=True, draft=True):
    """What write_backup_storage builds for a node of pages [a, b): the Mamba state of its end
    under its last page's key (one slot), its 2-page SWA window under its last pages' keys, and
    the KV-derived draft pool (host indices and keys resolved by the controller)."""
    t = []
    if mamba:
        t.append(PoolTransfer(MAMBA, host_indices=torch.tensor([node], dtype=torch.int64), keys=[hashes[b - 1]], hit_policy=TRAILING))
    if swa:
        t.append(PoolTransfer(SWA, host_indices=entry_indices(pools.side["swa"], [2 * node, 2 * node + 1]), keys=hashes[b - 2:b], hit_policy=TRAILING))
    if draft and "draft" in pools.side:
        t.append(PoolTransfer(DRAFT, keys=hashes[a:b], indices_from_pool=KV))
    return t


def prefetch_query(pools):
    """The PREFETCH transfers of the Mamba and SWA components and the draft sidecar."""
    t = [PoolTransfer(MAMBA, keys=["__placeholder__"], hit_policy=TRAILING),
         PoolTransfer(SWA, keys=["__placeholder__"] * 2, hit_policy=TRAILING)]
    if "draft" in pools.side:
        t.append(PoolTransfer(DRAFT, keys=None, indices_from_pool=KV))
    return t


def write_two_nodes(ctrl, pools, tokens, hashes, *, node2=None):
    """Backs up a request of two nodes (pages 0-3, 4-7) through write_storage."""
    kv_idx = torch.arange(8 * PS, dtype=torch.int64)
    ops = []
    for node, (a, b) in enumerate([(0, 4), (4, 8)]):
        flags = (node2 or {}) if node == 1 else {}
        ops.append(backup(ctrl, kv_idx[a * PS:b * PS], tokens[a * PS:b * PS], hashes[a:b],
                          extra_pools=node_backup_transfers(pools, hashes, a, b, node, **flags)))
    return ops


def transfer_of(operation, name):
    return next(t for t in operation.pool_transfers if t.name == name)


@pytest.mark.parametrize(
    "kind,layout,interface_v1",
    [("mha", "page_first", True), ("mha", "page_first_direct", True), ("mla", "page_first", True),
     ("mla", "page_first_direct", True), ("mha", "page_first", False)],
)
def test_hybrid_controller_backup_and_prefetch(valkey, model, controllers, kind, layout, interface_v1):
    n = 8
    dev_w, alloc_w, w = hybrid_engine(kind, layout, n)
    dev_r, alloc_r, r = hybrid_engine(kind, layout, n + 2)
    for i, p in enumerate(w.all().values()):
        fill(p, 300 + i)
    for p in r.all().values():
        zero(p)
    cw = controllers(hybrid_controller(alloc_w, dev_w, w, valkey.port, model, interface_v1=interface_v1))
    cr = controllers(hybrid_controller(alloc_r, dev_r, r, valkey.port, model, interface_v1=interface_v1))
    backend = cw.storage_backend
    assert set(backend.registered_pools) == {"kv", "mamba", "swa", "draft"}  # draft via register_host_pool_entry
    tokens = tokens_for(n)
    hashes = page_hashes(tokens, PS)
    for op in write_two_nodes(cw, w, tokens, hashes):
        assert op.completed_tokens == 4 * PS
        assert op.pool_storage_result.extra_pool_hit_pages == {MAMBA: 1, SWA: 2, DRAFT: 4}

    cr.mem_pool_host.alloc(2 * PS)  # other host pages than the writer's
    cr.mem_pool_host.get_pool(SWA).alloc(3 * PS)
    res = hybrid_prefetch(cr, "req", tokens, prefetch_query(r))
    assert res.operation.pool_storage_result.restorable_prefix_pages == [4, 8]
    assert res.hit_tokens == n * PS and res.completed_tokens == n * PS
    assert res.pool_hits["mamba"] == 1 and res.pool_hits["swa"] == 2
    kv_idx = torch.arange(n * PS, dtype=torch.int64)
    assert kv_pages_bytes(r.kv, res.host_indices, n) == kv_pages_bytes(w.kv, kv_idx, n)
    assert kv_pages_bytes(r.side["draft"], res.host_indices, n) == kv_pages_bytes(w.side["draft"], kv_idx, n)
    m = transfer_of(res.operation, MAMBA)
    assert m.keys == [hashes[7]] and m.host_indices.numel() == 1
    assert entry_bytes(r.side["mamba"], int(m.host_indices[0])) == entry_bytes(w.side["mamba"], 1)  # node 2's state
    s = transfer_of(res.operation, SWA)
    assert s.keys == hashes[6:8]
    got_swa = [entry_bytes(r.side["swa"], int(s.host_indices[i * PS]) // PS) for i in range(2)]
    assert got_swa == [entry_bytes(w.side["swa"], 2), entry_bytes(w.side["swa"], 3)]


@pytest.mark.parametrize("missing", ["mamba", "swa"])
def test_hybrid_controller_prefetch_stops_at_a_restorable_prefix(valkey, model, controllers, missing):
    """Node 2 is backed up without its Mamba state (or SWA window): prefix 8 is not restorable,
    4 is (a TRAILING pool's hole); the controller re-aligns the side-pool keys to the hit."""
    n = 8
    dev_w, alloc_w, w = hybrid_engine("mha", "page_first", n, with_draft=False)
    dev_r, alloc_r, r = hybrid_engine("mha", "page_first", n, with_draft=False)
    for i, p in enumerate(w.all().values()):
        fill(p, 400 + i)
    for p in r.all().values():
        zero(p)
    cw = controllers(hybrid_controller(alloc_w, dev_w, w, valkey.port, model))
    cr = controllers(hybrid_controller(alloc_r, dev_r, r, valkey.port, model))
    tokens = tokens_for(n, start=50)
    hashes = page_hashes(tokens, PS)
    write_two_nodes(cw, w, tokens, hashes, node2={missing: False})
    res = hybrid_prefetch(cr, "req", tokens, prefetch_query(r))
    assert res.operation.pool_storage_result.restorable_prefix_pages == [4]
    assert res.hit_tokens == 4 * PS and res.completed_tokens == 4 * PS
    assert res.pool_hits["mamba"] == 1 and res.pool_hits["swa"] == 2
    m, s = transfer_of(res.operation, MAMBA), transfer_of(res.operation, SWA)
    assert m.keys == [hashes[3]] and s.keys == hashes[2:4]
    assert entry_bytes(r.side["mamba"], int(m.host_indices[0])) == entry_bytes(w.side["mamba"], 0)  # node 1's state
    assert [entry_bytes(r.side["swa"], int(s.host_indices[i * PS]) // PS) for i in range(2)] == \
        [entry_bytes(w.side["swa"], 0), entry_bytes(w.side["swa"], 1)]
    assert kv_pages_bytes(r.kv, res.host_indices, 4) == kv_pages_bytes(w.kv, torch.arange(4 * PS), 4)


def test_hybrid_controller_mla_ranks_share_kv_not_mamba(valkey, model, controllers):
    """MLA KV replicated over 2 TP ranks: rank 1's controller skips the KV and draft backups
    (backup_skip) but backs its own Mamba state up (should_backup); each rank's prefetch loads
    rank 0's KV and draft and its own Mamba state."""
    n = 8
    engines = {}
    for role in ("w0", "w1", "r0", "r1"):
        dev, alloc, pools = hybrid_engine("mla", "page_first", n)
        rank = int(role[1])
        if role[0] == "w":
            for i, p in enumerate(pools.all().values()):
                fill(p, 500 + 10 * rank + i)
        else:
            for p in pools.all().values():
                zero(p)
        ctrl = controllers(hybrid_controller(alloc, dev, pools, valkey.port, model, tp_rank=rank, tp_size=2))
        engines[role] = (ctrl, pools)
    c_w0, w0 = engines["w0"]
    c_w1, w1 = engines["w1"]
    assert c_w0.storage_config.is_mla_model and not c_w0.backup_skip and c_w1.backup_skip
    tokens = tokens_for(n, start=3)
    hashes = page_hashes(tokens, PS)
    for op in write_two_nodes(c_w1, w1, tokens, hashes):
        # only the Mamba transfer reached the backend; SGLang counts the node done when it succeeded
        assert op.completed_tokens == 4 * PS
        assert op.pool_storage_result.extra_pool_hit_pages == {MAMBA: 1}
    c_r1, r1 = engines["r1"]
    assert hybrid_prefetch(c_r1, "early", tokens, prefetch_query(r1)).hit_tokens == 0  # no KV yet
    for op in write_two_nodes(c_w0, w0, tokens, hashes):
        assert op.completed_tokens == 4 * PS
    kv_idx = torch.arange(n * PS, dtype=torch.int64)
    for rank in (0, 1):
        ctrl, pools = engines[f"r{rank}"]
        writer = engines[f"w{rank}"][1]
        res = hybrid_prefetch(ctrl, f"req{rank}", tokens, prefetch_query(pools))
        assert res.hit_tokens == n * PS and res.completed_tokens == n * PS, rank
        assert kv_pages_bytes(pools.kv, res.host_indices, n) == kv_pages_bytes(w0.kv, kv_idx, n)
        assert kv_pages_bytes(pools.side["draft"], res.host_indices, n) == kv_pages_bytes(w0.side["draft"], kv_idx, n)
        m = transfer_of(res.operation, MAMBA)
        assert entry_bytes(pools.side["mamba"], int(m.host_indices[0])) == entry_bytes(writer.side["mamba"], 1)
    assert entry_bytes(w0.side["mamba"], 1) != entry_bytes(w1.side["mamba"], 1)


def test_hybrid_controller_under_sglangs_failure_injector(valkey, model, controllers, monkeypatch):
    monkeypatch.setenv("SGLANG_TEST_HICACHE_BACKEND_RANDOM_FAILURE", "0.1")
    monkeypatch.setenv("SGLANG_TEST_HICACHE_BACKEND_RANDOM_DELAY", "0.002")
    n = 8
    dev_w, alloc_w, w = hybrid_engine("mha", "page_first", n)
    dev_r, alloc_r, r = hybrid_engine("mha", "page_first", n)
    with Records() as log:
        cw = controllers(hybrid_controller(alloc_w, dev_w, w, valkey.port, model))
        cr = controllers(hybrid_controller(alloc_r, dev_r, r, valkey.port, model))
        assert isinstance(cw.storage_backend, HiCacheStorageFailureInjector)
        full = 0
        for round_ in range(20):
            for i, p in enumerate(w.all().values()):
                fill(p, 700 + 10 * round_ + i)
            for p in r.all().values():
                zero(p)
            tokens = tokens_for(n, start=100000 * (round_ + 1))
            hashes = page_hashes(tokens, PS)
            write_two_nodes(cw, w, tokens, hashes)
            res = hybrid_prefetch(cr, f"req{round_}", tokens, prefetch_query(r))
            pages = res.completed_tokens // PS
            assert res.hit_tokens in (0, 4 * PS, 8 * PS)
            if pages:
                kv_idx = torch.arange(pages * PS, dtype=torch.int64)
                assert kv_pages_bytes(r.kv, res.host_indices, pages) == kv_pages_bytes(w.kv, kv_idx, pages)
                assert kv_pages_bytes(r.side["draft"], res.host_indices, pages) == kv_pages_bytes(w.side["draft"], kv_idx, pages)
            if res.hit_tokens and res.pool_hits.get("mamba", 0) >= 1:
                m = transfer_of(res.operation, MAMBA)
                node = res.hit_tokens // (4 * PS) - 1
                assert entry_bytes(r.side["mamba"], int(m.host_indices[0])) == entry_bytes(w.side["mamba"], node)
            full += res.completed_tokens == n * PS and res.pool_hits.get("mamba") == 1 and res.pool_hits.get("swa") == 2
            # the free the scheduler would do after consuming the prefetch
            if res.host_indices is not None:
                cr.mem_pool_host.free(res.host_indices)
                for t in res.operation.pool_transfers or []:
                    if t.indices_from_pool is None and t.host_indices is not None:
                        cr.mem_pool_host.free(t.host_indices, pool=t.name)
    injected = [rec for rec in log.records if rec.getMessage().startswith("Inject failure")]
    assert injected, "the injector never failed a call"
    assert full > 0, "no round got through the injector"
    assert not log.exceptions(), [rec.getMessage() for rec in log.exceptions()]
