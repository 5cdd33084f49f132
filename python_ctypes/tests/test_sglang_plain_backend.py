"""What a plain-Python Valkey backend for SGLang was expected to do (the behaviour an unmerged
upstream proposal tested): empty batches, None values and mismatched key/value lengths give
False (or misses) instead of exceptions, missing keys are None in v0 ``batch_get``, and
``clear()`` removes only this model's keys. Real SGLang factory and host pool, real valkey-server.
"""

from __future__ import annotations

import pytest

pytest.importorskip("sglang", reason="SGLang is not installed (scripts/sglang-venv.sh makes a venv with it)")
torch = pytest.importorskip("torch", reason="torch is not installed")
try:
    from sglang.srt.mem_cache.storage.backend_factory import StorageBackendFactory
except ImportError as e:  # pragma: no cover - depends on the environment
    pytest.skip(f"SGLang's HiCache modules cannot be imported: {e}", allow_module_level=True)

from sglang_hybrid import storage_config
from sglang_pools import fill_random, make_pool, page_bytes_of, page_indices, page_keys

pytestmark = pytest.mark.sglang


@pytest.fixture
def backend(valkey, model):
    pool = make_pool("mha", "page_first", 4)
    fill_random(pool, seed=9)
    b = StorageBackendFactory.create_backend("dynamic", storage_config(model, valkey.port, tp_size=2), pool)
    b.register_mem_pool_host(pool)
    yield b, pool
    b.close()


def test_empty_batches(backend):
    b, pool = backend
    assert b.batch_get([]) == []
    assert b.batch_get([], []) == []
    assert b.batch_exists([]) == 0
    assert b.batch_set([], []) is False  # nothing was stored
    assert b.batch_set([]) is False
    empty = torch.empty(0, dtype=torch.int64)
    assert b.batch_get_v1([], empty) == [] and b.batch_set_v1([], empty) == []
    assert b.batch_get_v2([]) == {} and b.batch_set_v2([]) == {}
    assert b.batch_exists_v2([]).kv_hit_pages == 0


def test_none_values_and_mismatched_lengths_are_false(backend):
    b, pool = backend
    page = pool.get_data_page(0)
    assert b.set("k" * 64, None) is False
    assert b.batch_set(["a" * 64], None) is False
    assert b.batch_set(["a" * 64], [None]) is False
    assert b.batch_set(["a" * 64, "b" * 64], [page]) is False  # two keys, one value
    assert b.batch_set(["a" * 64], [page, page]) is False
    assert b.batch_set(["a" * 64], [object()]) is False  # not memory at all
    assert b.batch_exists(["a" * 64, "b" * 64, "k" * 64]) == 0  # none of the above stored anything
    # gets: one target for two keys, a None target: misses, not exceptions
    assert b.batch_get(["a" * 64, "b" * 64], [pool.get_dummy_flat_data_page()]) == [None, None]
    assert b.batch_get(["a" * 64], [None]) == [None]
    # v1 with host indices that do not match the keys
    assert b.batch_set_v1(page_keys(2), page_indices(pool, [0])) == [False, False]
    assert b.batch_get_v1(page_keys(2), page_indices(pool, [0, 1, 2])) == [False, False]


def test_missing_keys_are_none_in_v0_batch_get(backend):
    b, pool = backend
    keys = page_keys(3, salt="present")
    assert b.batch_set(keys[:2], [pool.get_data_page(0), pool.get_data_page(pool.page_size)]) is True
    want = page_bytes_of(pool, 1)
    got = b.batch_get([keys[0], "f" * 64, keys[1], keys[2]])  # no targets: the pool's dummy pages
    assert got[1] is None and got[3] is None
    assert got[0] is not None and got[2] is not None
    assert got[2].view(torch.uint8).numpy().tobytes() == want
    assert b.get("f" * 64) is None
    assert b.exists(keys[0]) and not b.exists("f" * 64)
    targets = [pool.get_dummy_flat_data_page() for _ in range(2)]
    assert b.batch_get(["e" * 64, keys[1]], targets) == [None, targets[1]]
    assert not targets[0].any()  # a miss leaves its target untouched


def test_clear_removes_only_this_models_keys(valkey, model, backend):
    b, pool = backend
    other = StorageBackendFactory.create_backend("dynamic", storage_config(model + ":other", valkey.port, tp_size=2), pool)
    prefix = StorageBackendFactory.create_backend("dynamic", storage_config(model[:-1], valkey.port, tp_size=2), pool)
    try:
        for x in (other, prefix):
            x.register_mem_pool_host(pool)
        keys = page_keys(4, salt="clear")
        idx = page_indices(pool, list(range(4)))
        for x in (b, other, prefix):
            assert x.batch_set_v1(keys, idx) == [True] * 4
        rank1 = StorageBackendFactory.create_backend("dynamic", storage_config(model, valkey.port, tp_rank=1, tp_size=2), pool)
        rank1.register_mem_pool_host(pool)
        assert rank1.batch_set_v1(keys, idx) == [True] * 4
        assert b.clear() is True  # every rank of this model...
        assert b.batch_exists(keys) == 0 and rank1.batch_exists(keys) == 0
        # ...and nothing of a model whose name extends it, or that it extends
        assert other.batch_exists(keys) == 4 and prefix.batch_exists(keys) == 4
        rank1.close()
    finally:
        other.close()
        prefix.close()
