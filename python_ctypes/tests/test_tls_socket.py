"""TLS and Unix domain sockets from Python: ValkeyStore round trips, the TLS errors as TlsError,
and the SGLang backend configured through extra_config for each (those skip without SGLang).

The certificates are made here with the ``openssl`` command in a temp dir (nothing is committed).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import numpy as np
import pytest

import hicache_valkey as hv
from conftest import free_port
from hicache_valkey import ValkeyStore


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A throwaway CA and a server certificate for localhost / 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    d = str(tmp_path_factory.mktemp("pki"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=hicache-valkey test CA", cwd=d)
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "2", "-extfile", "ext", cwd=d)
    return d


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"TLS port {port} does not listen"
            time.sleep(0.05)


@pytest.fixture
def tls_server(valkey_factory, pki):
    port = free_port()
    s = valkey_factory(
        "--tls-port", str(port), "--tls-cert-file", os.path.join(pki, "server.crt"),
        "--tls-key-file", os.path.join(pki, "server.key"), "--tls-ca-cert-file", os.path.join(pki, "ca.crt"),
        "--tls-auth-clients", "no",
    )
    _wait_listening(port)
    s.tls_port = port
    return s


@pytest.fixture
def socket_server(valkey_factory, tmp_path):
    path = str(tmp_path / "valkey.sock")
    s = valkey_factory("--unixsocket", path, "--unixsocketperm", "700")
    s.socket_path = path
    return s


def _round_trip(store: ValkeyStore) -> None:
    keys = [f"k{i}" for i in range(12)]
    pages = [np.random.default_rng(i).integers(0, 255, size=(i + 1) * 20_000, dtype=np.uint8) for i in range(12)]
    assert store.batch_set(keys, pages).all_ok
    out = [np.zeros_like(p) for p in pages]
    assert store.batch_get(keys, out).all_ok
    assert all(np.array_equal(a, b) for a, b in zip(out, pages))
    assert store.batch_exists(keys).leading == 12
    assert store.clear() == 12


def test_round_trip_over_tls(tls_server, pki, model):
    with ValkeyStore(host="127.0.0.1", port=tls_server.tls_port, tls=True, tls_ca_cert=os.path.join(pki, "ca.crt"), model_name=model) as s:
        _round_trip(s)
    url = f"valkeys://localhost:{tls_server.tls_port}"
    with ValkeyStore(url=url, tls_ca_cert=os.path.join(pki, "ca.crt"), model_name=model) as s:
        _round_trip(s)


def test_tls_errors_are_tls_errors(tls_server, pki, model):
    # No CA given: the system's trust store does not know the test CA.
    with pytest.raises(hv.TlsError, match="not trusted"):
        ValkeyStore(host="127.0.0.1", port=tls_server.tls_port, tls=True, model_name=model)
    with pytest.raises(hv.TlsError, match="not valid for the name 'other.example'"):
        ValkeyStore(host="127.0.0.1", port=tls_server.tls_port, tls=True, tls_ca_cert=os.path.join(pki, "ca.crt"),
                    tls_server_name="other.example", model_name=model)
    with pytest.raises(hv.TlsError, match="missing.pem"):
        ValkeyStore(host="127.0.0.1", port=tls_server.tls_port, tls=True, tls_ca_cert=os.path.join(pki, "missing.pem"), model_name=model)
    started = time.monotonic()
    with pytest.raises(hv.TlsError, match="TLS port"):
        ValkeyStore(host="127.0.0.1", port=tls_server.tls_port, model_name=model, connect_timeout_ms=5000)
    with pytest.raises(hv.TlsError, match="not a TLS port"):
        ValkeyStore(host="127.0.0.1", port=tls_server.port, tls=True, tls_ca_cert=os.path.join(pki, "ca.crt"), model_name=model, connect_timeout_ms=5000)
    assert time.monotonic() - started < 3


def test_round_trip_over_a_unix_socket(socket_server, model):
    with ValkeyStore(socket_path=socket_server.socket_path, model_name=model) as s:
        _round_trip(s)
    with ValkeyStore(url=f"unix://{socket_server.socket_path}", model_name=model) as s:
        _round_trip(s)


# -- the SGLang backend, configured through extra_config -----------------------------------------


def _sglang_backend(model, extra):
    pytest.importorskip("sglang", reason="SGLang is not installed (scripts/sglang-venv.sh makes a venv with it)")
    pytest.importorskip("torch", reason="torch is not installed")
    try:
        from sglang.srt.mem_cache.hicache_storage import HiCacheStorageConfig
        from sglang.srt.mem_cache.storage.backend_factory import StorageBackendFactory
    except Exception as e:  # noqa: BLE001 (the kernels' python deps)
        pytest.skip(f"SGLang's HiCache modules cannot be imported: {e}")
    from sglang_pools import fill_random, make_pool, page_bytes_of, page_indices, page_keys

    pool = make_pool("mha", "page_first", 4)
    config = HiCacheStorageConfig(
        tp_rank=0, tp_size=1, pp_rank=0, pp_size=1, attn_cp_rank=0, attn_cp_size=1, is_mla_model=False,
        enable_storage_metrics=False, is_page_first_layout=True, model_name=model,
        extra_config={"backend_name": "valkey", "module_path": "hicache_valkey.sglang",
                      "class_name": "ValkeyHiCacheStorage", "interface_v1": 1, **extra},
    )
    b = StorageBackendFactory.create_backend("dynamic", config, pool)
    b.register_mem_pool_host(pool)
    try:
        fill_random(pool, seed=5)
        before = [page_bytes_of(pool, p) for p in range(4)]
        keys = page_keys(4, salt="transport")
        assert b.batch_set_v1(keys, page_indices(pool, [0, 1, 2, 3])) == [True] * 4
        assert b.batch_exists(keys) == 4
        assert b.batch_get_v1(keys, page_indices(pool, [3, 2, 1, 0])) == [True] * 4
        assert [page_bytes_of(pool, p) for p in (3, 2, 1, 0)] == before
    finally:
        b.close()


@pytest.mark.sglang
def test_sglang_backend_over_tls_from_extra_config(tls_server, pki, model):
    _sglang_backend(model, {"host": "127.0.0.1", "port": tls_server.tls_port, "tls": "true",
                            "tls_ca_cert": os.path.join(pki, "ca.crt"), "tls_server_name": "localhost"})


@pytest.mark.sglang
def test_sglang_backend_over_a_socket_from_extra_config(socket_server, model):
    _sglang_backend(model, {"socket_path": socket_server.socket_path})
