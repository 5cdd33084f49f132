"""The package alone (no SGLang): ValkeyStore over a real valkey-server."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import hicache_valkey as hv
from hicache_valkey import Outcome, ValkeyStore


def open_store(server, model, **kw) -> ValkeyStore:
    return ValkeyStore(host=server.host, port=server.port, model_name=model, **kw)


# -- loading -------------------------------------------------------------------------------------


def test_library_is_found_inside_the_installed_package():
    if os.environ.get(hv.LIB_ENV):
        pytest.skip(f"{hv.LIB_ENV} is set; the bundled copy is not what is loaded")
    path = Path(hv.library_path())
    assert path.parent == Path(hv.__file__).resolve().parent
    assert hv.version().count(".") == 2


def test_missing_library_error_names_both_places(tmp_path):
    missing = tmp_path / "nope" / "libhicache_valkey.so"
    code = "import hicache_valkey as h\ntry:\n    h.ValkeyStore()\nexcept h.LibraryNotFoundError as e:\n    print(e)\n"
    env = dict(os.environ, HICACHE_VALKEY_LIB=str(missing))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert str(missing) in out.stdout
    assert "HICACHE_VALKEY_LIB" in out.stdout
    assert str(Path(hv.__file__).resolve().parent / "libhicache_valkey.so") in out.stdout


def test_every_function_has_a_prototype():
    from hicache_valkey import _lib

    L = _lib.lib()
    header = Path(__file__).resolve().parents[2] / "include" / "hicache_valkey.h"
    declared = {name for name, _, _ in _lib._PROTOTYPES}
    if header.is_file():
        import re

        in_header = set(re.findall(r"\b(hicache_valkey_\w+)\(", header.read_text()))
        assert in_header <= declared, f"not declared for ctypes: {in_header - declared}"
    for name in declared:
        assert getattr(L, name).argtypes is not None
    assert isinstance(L, ctypes.CDLL) and not isinstance(L, ctypes.PyDLL)  # GIL released in calls


# -- round trips ---------------------------------------------------------------------------------


def test_bytes_round_trip(valkey, model):
    with open_store(valkey, model) as s:
        values = [b"hello", bytearray(b"world!"), memoryview(b"0123456789")[2:8], b"\x00" * 3]
        keys = ["k-bytes", b"k-bytearray", "k-\u00e9-memoryview", b"\xff\x00binary"]
        r = s.batch_set(keys, values)
        assert r == [Outcome.OK] * 4 and r.all_ok and r.error == ""
        targets = [bytearray(len(bytes(v))) for v in values]
        r = s.batch_get(keys, targets)
        assert r.all_ok
        assert [bytes(t) for t in targets] == [bytes(v) for v in values]
        # a writable memoryview is a target as well
        mv = memoryview(bytearray(5))
        assert s.get("k-bytes", mv) and mv.tobytes() == b"hello"
        assert s.set("single", b"x") and s.get("single", bytearray(1))


def test_numpy_round_trip_in_place(valkey, model):
    rng = np.random.default_rng(1)
    arrays = [
        rng.integers(0, 255, size=1 << 20, dtype=np.uint8),
        rng.standard_normal((64, 128)).astype(np.float32),
        rng.integers(-5, 5, size=(3, 5, 7), dtype=np.int64),
        np.zeros(0, dtype=np.uint8),
    ]
    with open_store(valkey, model) as s:
        keys = [f"np-{i}" for i in range(len(arrays))]
        assert s.batch_set(keys, arrays).all_ok
        targets = [np.empty_like(a) for a in arrays]
        ids = [id(t) for t in targets]
        assert s.batch_get(keys, targets).all_ok
        assert [id(t) for t in targets] == ids  # written in place, not replaced
        for a, t in zip(arrays, targets):
            assert a.dtype == t.dtype and np.array_equal(a, t)


def test_numpy_rows_and_the_arrays_the_fast_path_leaves_to_the_checks(valkey, model):
    # One writable row per page takes the quick path (no per-value checks); a read-only or
    # non-contiguous array anywhere in the batch sends the whole batch through the checks.
    src = np.random.default_rng(2).integers(0, 255, size=(6, 4096), dtype=np.uint8)
    with open_store(valkey, model) as s:
        keys = [f"row-{i}" for i in range(6)]
        assert s.batch_set(keys, list(src)).all_ok
        dst = np.zeros_like(src)
        assert s.batch_get(keys, list(dst)).all_ok and np.array_equal(src, dst)
        frozen = src.copy()
        frozen.flags.writeable = False
        assert s.batch_set(["frozen"], [frozen[0]]).all_ok  # a read-only source is fine
        with pytest.raises(hv.InvalidArgumentError, match="read-only"):
            s.batch_get(keys[:2], [dst[0], frozen[1]])
        wide = np.zeros((6, 8192), dtype=np.uint8)
        with pytest.raises(hv.InvalidArgumentError, match="not C-contiguous"):
            s.batch_get(keys[:2], [dst[0], wide[1, ::2]])
        assert np.array_equal(src, dst)


def test_torch_cpu_tensors_by_data_pointer(valkey, model):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    src = torch.randn(256, 64, dtype=torch.bfloat16)
    with open_store(valkey, model) as s:
        assert s.batch_set(["t"], [src]).all_ok
        dst = torch.zeros_like(src)
        ptr = dst.data_ptr()
        assert s.batch_get(["t"], [dst]).all_ok
        assert dst.data_ptr() == ptr and torch.equal(src.view(torch.int16), dst.view(torch.int16))
        with pytest.raises(hv.InvalidArgumentError, match="not contiguous"):
            s.batch_get(["t"], [torch.zeros(64, 256, dtype=torch.bfloat16).t()])


def test_scatter_gather_segments(valkey, model):
    rng = np.random.default_rng(2)
    whole = rng.integers(0, 255, size=10_000, dtype=np.uint8)
    with open_store(valkey, model) as s:
        # stored from three pieces...
        assert s.batch_set(["sg"], [[whole[:1000], whole[1000:7000], bytes(whole[7000:])]]).all_ok
        # ...read back into a differently split destination: the value is their concatenation
        a, b = np.zeros(3333, np.uint8), bytearray(10_000 - 3333)
        assert s.batch_get(["sg"], [(a, b)]).all_ok
        assert np.array_equal(np.concatenate([a, np.frombuffer(b, np.uint8)]), whole)
        one = np.zeros_like(whole)
        assert s.get("sg", one) and np.array_equal(one, whole)


def test_raw_pointer_segments(valkey, model):
    rng = np.random.default_rng(3)
    pages = rng.integers(0, 255, size=(8, 4, 512), dtype=np.uint8)  # 8 values of 4 segments
    keys = [f"raw-{i}" for i in range(8)]
    base = pages.ctypes.data
    ptrs = base + np.arange(32, dtype=np.uint64) * 512
    sizes = np.full(32, 512, dtype=np.uint64)
    with open_store(valkey, model) as s:
        out = s.batch_set_segments(keys, ptrs, sizes, 4)
        assert out.dtype == np.int32 and (out == 0).all()
        dst = np.zeros_like(pages)
        dptrs = dst.ctypes.data + np.arange(32, dtype=np.uint64) * 512
        out = s.batch_get_segments(keys, dptrs, sizes, [4] * 8)
        assert (out == 0).all() and np.array_equal(dst, pages)
        # (pointer, length) pairs inside the object API
        dst2 = np.zeros(2048, np.uint8)
        half = dst2.ctypes.data
        assert s.batch_get(["raw-5"], [[(half, 1024), (half + 1024, 1024)]]).all_ok
        assert np.array_equal(dst2, pages[5].ravel())
        # uneven segment counts
        out = s.batch_get_segments(keys[:2], [dst.ctypes.data, dst.ctypes.data + 2048, dst.ctypes.data + 4096],
                                   [2048, 1024, 1024], [1, 2])
        assert (out == 0).all()


def test_misses_of_each_kind_leave_targets_untouched(valkey, model):
    with open_store(valkey, model, value_format=1) as s:
        assert s.set("v", b"abcd")
        t = bytearray(b"....")
        r = s.batch_get(["absent", "v"], [bytearray(4), bytearray(3)])
        assert r == [Outcome.MISS, Outcome.SIZE_MISMATCH]
        with open_store(valkey, model, value_format=2) as other:
            assert other.batch_get(["v"], [t]) == [Outcome.FORMAT_MISMATCH]
            assert t == b"...."
            assert other.batch_exists(["v"]).found == [True]  # EXISTS cannot see the format


def test_exists_leading_count_and_flags(valkey, model):
    with open_store(valkey, model) as s:
        keys = [f"e{i}" for i in range(6)]
        assert s.batch_set([keys[0], keys[1], keys[3]], [b"1", b"2", b"3"]).all_ok
        r = s.batch_exists(keys)
        assert r.leading == 2 and r.found == [True, True, False, True, False, False]
        assert s.leading_hits(keys) == 2
        assert s.batch_exists([]) == (0, [])
        many = [f"many-{i}" for i in range(5000)]
        assert s.leading_hits(many) == 0


def test_namespaces_isolate_models_and_ranks(valkey, model):
    with open_store(valkey, model) as a, open_store(valkey, model + "-other") as b, \
            open_store(valkey, model, tp_rank=1, tp_size=2) as r1, \
            open_store(valkey, model, tp_rank=0, tp_size=2, is_mla=True) as m0, \
            open_store(valkey, model, tp_rank=1, tp_size=2, is_mla=True) as m1:
        assert a.set("k", b"A")
        assert b.leading_hits(["k"]) == 0 and r1.leading_hits(["k"]) == 0
        assert m0.set("k", b"M")
        out = bytearray(1)
        assert m1.get("k", out) and out == b"M"  # MLA: one copy for all tp ranks
        assert a.get("k", out) and out == b"A"


def test_clear_removes_only_its_model(valkey, model):
    with open_store(valkey, model) as a, open_store(valkey, model + "-keep") as b:
        assert a.batch_set(["1", "2", "3"], [b"x"] * 3).all_ok
        assert b.set("1", b"y")
        assert a.clear() == 3
        assert a.leading_hits(["1"]) == 0 and b.leading_hits(["1"]) == 1
        b.clear()


def test_stats(valkey, model):
    with open_store(valkey, model) as s:
        s.batch_set(["a", "b"], [b"1", b"2"])
        s.batch_get(["a", "zz"], [bytearray(1), bytearray(1)])
        st = s.stats()
        assert st["model_keys"] == 2
        assert st["used_memory_bytes"] > 0 and st["used_memory_human"]
        assert st["connected_clients"] >= 1
        assert st["get_hits"] == 1 and st["get_misses"] == 1 and st["get_hit_ratio"] == 0.5
        assert 0.0 <= st["keyspace_hit_ratio"] <= 1.0
        assert st["server_version"]
        assert s.ping() >= 0


# -- errors --------------------------------------------------------------------------------------


def test_bad_input_raises_invalid_argument_with_the_library_message(valkey, model):
    with open_store(valkey, model) as s:
        with pytest.raises(hv.InvalidArgumentError, match=r"keys\[1\] is empty") as e:
            s.batch_set(["ok", ""], [b"1", b"2"])
        assert e.value.status == hv.Status.INVALID_ARGUMENT
        assert isinstance(e.value, ValueError)
        with pytest.raises(hv.InvalidArgumentError, match="read-only"):
            s.batch_get(["ok"], [b"immutable"])
        with pytest.raises(hv.InvalidArgumentError, match="not C-contiguous"):
            s.batch_set(["ok"], [np.zeros((4, 4))[:, 1]])
        with pytest.raises(hv.InvalidArgumentError, match="2 keys but 1 values"):
            s.batch_set(["a", "b"], [b"1"])
        with pytest.raises(hv.InvalidArgumentError, match="no contiguous memory"):
            s.batch_set(["a"], [12345])
        with pytest.raises(hv.InvalidArgumentError, match="NULL"):
            s.batch_set(["a"], [(0, 10)])
        with pytest.raises(hv.InvalidArgumentError):
            s.batch_set_segments(["a", "b"], [1, 2, 3], [1, 1, 1], 2)
        # nothing was stored by the failed calls
        assert s.batch_exists(["ok", "a", "b"]).found == [False, False, False]


def test_bad_configuration_raises_invalid_config(valkey, model):
    with pytest.raises(hv.InvalidConfigError, match="port"):
        ValkeyStore(host="127.0.0.1", port=0)
    with pytest.raises(hv.InvalidConfigError, match="tp_rank 2"):
        ValkeyStore(host="127.0.0.1", port=valkey.port, tp_rank=2, tp_size=2)
    with pytest.raises(hv.InvalidConfigError):
        ValkeyStore(url="http://nope")
    with pytest.raises(hv.InvalidConfigError):
        ValkeyStore(port="not-a-port")


def test_server_down_raises_connection_error(valkey_factory, model):
    # nothing listening at all
    server = valkey_factory()
    server.stop()
    with pytest.raises(hv.ValkeyConnectionError, match="(?i)refused|connect") as e:
        ValkeyStore(host="127.0.0.1", port=server.port, connect_timeout_ms=1000)
    assert e.value.status == hv.Status.CONNECTION and isinstance(e.value, ConnectionError)
    # a server that goes away under an open store
    live = valkey_factory()
    s = ValkeyStore(host="127.0.0.1", port=live.port, model_name=model, timeout_ms=1000, connect_timeout_ms=1000)
    assert s.set("k", b"v")
    live.stop()
    with pytest.raises((hv.ValkeyConnectionError, hv.ValkeyTimeoutError)):
        s.batch_get(["k"], [bytearray(1)])
    with pytest.raises((hv.ValkeyConnectionError, hv.ValkeyTimeoutError)):
        s.batch_exists(["k"])
    s.close()


def test_wrong_password_raises_auth_error(valkey_factory, model, monkeypatch):
    server = valkey_factory(password="s3cret")
    with pytest.raises(hv.AuthenticationError) as e:
        ValkeyStore(host="127.0.0.1", port=server.port, password="wrong")
    assert e.value.status == hv.Status.AUTH and isinstance(e.value, PermissionError)
    assert "s3cret" not in str(e.value) and "wrong" not in str(e.value)
    with pytest.raises(hv.AuthenticationError):
        ValkeyStore(host="127.0.0.1", port=server.port)  # a password is required
    with ValkeyStore(host="127.0.0.1", port=server.port, password="s3cret", model_name=model) as s:
        assert s.set("k", b"v")
    monkeypatch.setenv("VALKEY_PASSWORD", "s3cret")  # read by the C library itself
    with ValkeyStore(host="127.0.0.1", port=server.port, model_name=model) as s:
        assert s.leading_hits(["k"]) == 1


def test_environment_under_keyword_arguments(valkey, model, monkeypatch):
    monkeypatch.setenv("VALKEY_HOST", "127.0.0.1")
    monkeypatch.setenv("VALKEY_PORT", str(valkey.port))
    with ValkeyStore(model_name=model) as s:  # all from the environment
        assert s.set("env", b"1")
    monkeypatch.setenv("VALKEY_PORT", "1")  # wrong in the environment, right as a keyword
    with ValkeyStore(port=valkey.port, model_name=model) as s:
        assert s.leading_hits(["env"]) == 1
    with pytest.raises(hv.ValkeyConnectionError):
        ValkeyStore(model_name=model, connect_timeout_ms=500)


def test_calls_of_changing_shapes_on_one_thread(valkey, model):
    # A thread builds every call's C arrays in arrays it keeps, and keeps a key array for keys
    # of one length (and a value array for one segment count) from call to call. Each call here
    # changes something the kept arrays depend on: the key count, the key length, keys of mixed
    # lengths, the segments per value (one count for all, or one per value), and arrays grown
    # (and so moved) past their first size.
    rng = np.random.default_rng(5)
    with open_store(valkey, model) as s:
        batches = [
            [f"a{i}" for i in range(3)],
            [f"b{i}" for i in range(3)],  # same count and length: the kept key array, new bytes
            [f"c{i}" for i in range(5)],
            [f"{i}-" + "x" * i for i in range(7)],  # mixed lengths
            [f"long-{i:04d}-" + "y" * 120 for i in range(300)],  # grows and moves every array
            [f"d{i}" for i in range(3)],  # the first shape again, after the move
        ]
        for keys in batches:
            n = len(keys)
            for per in (1, 2, 1, [2] * (n - 1) + [1]):
                counts = [per] * n if isinstance(per, int) else per
                sizes = np.array([64 + 8 * j for c in counts for j in range(c)], dtype=np.uint64)
                src = rng.integers(0, 255, size=int(sizes.sum()), dtype=np.uint8)
                dst = np.zeros_like(src)
                offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.uint64)
                assert (s.batch_set_segments(keys, src.ctypes.data + offsets, sizes, per) == 0).all()
                assert (s.batch_get_segments(keys, dst.ctypes.data + offsets, sizes, per) == 0).all()
                assert np.array_equal(src, dst)
            # each key holds its own value (of the last write): read one by one, in reverse
            for i in reversed(range(n)):
                lo = int(offsets[sum(counts[:i])])
                one = np.zeros(int(sum(64 + 8 * j for j in range(counts[i]))), np.uint8)
                assert s.get(keys[i], one) and np.array_equal(one, src[lo : lo + one.size])
            assert s.batch_exists(keys).found == [True] * n
        assert s.batch_exists(["a0", "b0", "c4", "6-xxxxxx", "d2", "never"]).found == [True] * 5 + [False]


def test_a_call_made_while_this_thread_builds_another(valkey, model):
    # Converting a caller's arrays can run Python code (an __array__ method; a signal handler or
    # finalizer can run at any such point) that makes a call of its own on the same thread. That
    # call must not write into the arrays the outer call has half built.
    with open_store(valkey, model) as s:
        inner = np.full(100, 7, np.uint8)
        outer = np.full(200, 9, np.uint8)

        class Pointers:
            def __array__(self, dtype=None, copy=None):
                assert s.batch_set(["inner-key-1", "inner-key-2"], [inner, inner]).all_ok
                return np.array([outer.ctypes.data], dtype=np.uint64)

        out = s.batch_set_segments(["outer-key"], Pointers(), [200], 1)
        assert (out == 0).all()
        got = np.zeros(200, np.uint8)
        assert s.get("outer-key", got) and (got == 9).all()
        got = np.zeros(100, np.uint8)
        assert s.get("inner-key-1", got) and (got == 7).all()
        assert s.batch_exists(["inner-key-2", "outer-key"]).found == [True, True]


def test_closed_store(valkey, model):
    s = open_store(valkey, model)
    assert not s.closed
    s.close()
    s.close()
    assert s.closed
    with pytest.raises(hv.StoreClosedError):
        s.set("k", b"v")
    with open_store(valkey, model) as s2:
        assert "ValkeyStore(" in repr(s2)


def test_one_store_many_threads(valkey, model):
    errors = []
    rng = np.random.default_rng(4)
    data = {t: rng.integers(0, 255, size=(16, 4096), dtype=np.uint8) for t in range(4)}
    with open_store(valkey, model) as s:

        def work(t: int) -> None:
            try:
                keys = [f"thr{t}-{i}" for i in range(16)]
                for _ in range(10):
                    assert s.batch_set(keys, list(data[t])).all_ok
                    dst = np.zeros_like(data[t])
                    assert s.batch_get(keys, list(dst)).all_ok
                    assert np.array_equal(dst, data[t])
                    assert s.leading_hits(keys) == 16
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
        assert not any(th.is_alive() for th in threads)
    assert not errors, errors
