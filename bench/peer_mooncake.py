#!/usr/bin/env python3
"""Mooncake's store as a peer of `hicache-valkey bench` (SGLang's default distributed store),
driven the way SGLang's MooncakeStore drives it: ``setup(...)`` with the TCP transport on
loopback, ``register_buffer`` on the host pool, ``batch_put_from`` / ``batch_get_into`` with one
pointer per page, fresh keys for every batch.

Two layouts, measured one after the other against one ``mooncake_master`` (with its HTTP metadata
server), each with the same total store memory:

* two_engines:   the measuring engine and a second engine process each give half the store
  memory (SGLang's default layout: every engine contributes a segment); pages land in either;
* third_process: the measuring engine gives none; a third process holds all the store memory
  (all bytes cross TCP, the shape of client -> valkey-server -> client).

Prints one JSON line: for each layout put_GBps, get_GBps, hits, pages, and CPU seconds per GB of
the measuring engine (client_cpu_s_per_gb_put/get) and of the other processes (store side:
segment holders and master; store_cpu_s_per_gb_put/get); GB/s = 1e9 bytes of page payload per
second over all the batches.

usage: peer_mooncake.py --page-bytes N [--pages 128] [--bytes TOTAL] [--store-mib 1024]
Needs the mooncake-transfer-engine-non-cuda wheel (and Debian's libibverbs1), numpy.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# Loopback only: the TCP transport and the transfer engine's RPC bind to 127.0.0.1 (inherited by
# the store processes this script starts); quieter logs.
os.environ.setdefault("MC_TCP_BIND_ADDRESS", "127.0.0.1")
os.environ.setdefault("MC_TE_FILTERS", "lo")
os.environ.setdefault("GLOG_minloglevel", "1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, limit: float = 20.0) -> None:
    end = time.time() + limit
    while time.time() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    sys.exit(f"peer_mooncake: port {port} did not open within {limit} s")


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process pid, all threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def setup(store, segment: int, master: int, meta: int) -> None:
    rc = store.setup(
        "127.0.0.1", f"http://127.0.0.1:{meta}/metadata", segment, 64 << 20, "tcp", "", f"127.0.0.1:{master}"
    )
    if rc != 0:
        sys.exit(f"peer_mooncake: setup returned {rc}")


def holder(args) -> None:
    """A store process holding `segment` bytes; lives until stdin closes (at most 10 minutes)."""
    from mooncake.store import MooncakeDistributedStore

    store = MooncakeDistributedStore()
    setup(store, args.segment, args.master_port, args.meta_port)
    print("ready", flush=True)
    import select

    select.select([sys.stdin], [], [], 600)
    store.close()


def start_holder(args, segment: int):
    p = subprocess.Popen(
        [sys.executable, __file__, "--role", "holder", "--segment", str(segment), "--master-port", str(args.master_port),
         "--meta-port", str(args.meta_port), "--page-bytes", "1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    line = p.stdout.readline()
    if line.strip() != "ready":
        sys.exit(f"peer_mooncake: store process did not start ({p.poll()})")
    return p


def measure(store, args, layout: str, others) -> dict:
    n, size = args.pages, args.page_bytes
    batches = max(1, args.bytes // (n * size))
    src = np.random.default_rng(size).integers(0, 256, size=(n, size), dtype=np.uint8)
    dst = np.zeros_like(src)
    for buf in (src, dst):
        rc = store.register_buffer(buf.ctypes.data, buf.nbytes)
        if rc != 0:
            sys.exit(f"peer_mooncake: register_buffer returned {rc}")
    sp = [src.ctypes.data + i * size for i in range(n)]
    dp = [dst.ctypes.data + i * size for i in range(n)]
    sizes = [size] * n
    nonce = f"{time.time_ns():x}"
    keys = [[f"{layout}-{nonce}-{b}-{i:05d}" for i in range(n)] for b in range(batches)]
    total = n * size * batches
    res = {}
    for op in ("put", "get"):
        c0, o0 = time.process_time(), sum(proc_cpu(p) for p in others)
        t0 = time.perf_counter()
        hits = 0
        for k in keys:
            if op == "put":
                r = store.batch_put_from(k, sp, sizes)
                if any(x != 0 for x in r):
                    sys.exit(f"peer_mooncake: batch_put_from failed: {[x for x in r if x != 0][:3]}")
            else:
                r = store.batch_get_into(k, dp, sizes)
                hits += sum(1 for x in r if x == size)
        wall = time.perf_counter() - t0
        cli, oth = time.process_time() - c0, sum(proc_cpu(p) for p in others) - o0
        gb = total / 1e9
        res[f"{op}_GBps"] = round(gb / wall, 3)
        res[f"client_cpu_s_per_gb_{op}"] = round(cli / gb, 3)
        res[f"store_cpu_s_per_gb_{op}"] = round(oth / gb, 3)
        if op == "get":
            res["hits"], res["pages"] = hits, n * batches
            if hits == n * batches and not np.array_equal(dst, src):
                sys.exit("peer_mooncake: pages read back differ from the pages written")
    for buf in (src, dst):
        store.unregister_buffer(buf.ctypes.data) if hasattr(store, "unregister_buffer") else None
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", default="driver")
    ap.add_argument("--page-bytes", type=int, required=True)
    ap.add_argument("--pages", type=int, default=128)
    ap.add_argument("--bytes", type=int, default=256 << 20)
    ap.add_argument("--store-mib", type=int, default=1024)
    ap.add_argument("--segment", type=int, default=0)
    ap.add_argument("--master-port", type=int, default=0)
    ap.add_argument("--meta-port", type=int, default=0)
    args = ap.parse_args()
    if args.role == "holder":
        return holder(args)

    from mooncake.store import MooncakeDistributedStore

    master_bin = shutil.which("mooncake_master") or str(Path(sys.executable).parent / "mooncake_master")
    args.master_port, args.meta_port, metrics = free_port(), free_port(), free_port()
    master = subprocess.Popen(
        [master_bin, f"--rpc_port={args.master_port}", "--rpc_address=127.0.0.1", "--enable_http_metadata_server=true",
         "--http_metadata_server_host=127.0.0.1", f"--http_metadata_server_port={args.meta_port}", "--metrics_host=127.0.0.1",
         f"--metrics_port={metrics}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    holders = []
    out = {"peer": "mooncake", "page_bytes": args.page_bytes, "pages": args.pages, "store_bytes": args.store_mib << 20}
    try:
        wait_port(args.master_port)
        wait_port(args.meta_port)
        store_bytes = args.store_mib << 20
        # two_engines: this engine and another each give half of the store memory.
        holders.append(start_holder(args, store_bytes // 2))
        store = MooncakeDistributedStore()
        setup(store, store_bytes // 2, args.master_port, args.meta_port)
        out["two_engines"] = measure(store, args, "two", [h.pid for h in holders] + [master.pid])
        store.close()
        for h in holders:
            h.stdin.close()
            h.wait(timeout=30)
        holders = []
        # third_process: this engine gives none; a third process holds it all.
        holders.append(start_holder(args, store_bytes))
        store = MooncakeDistributedStore()
        setup(store, 0, args.master_port, args.meta_port)
        out["third_process"] = measure(store, args, "third", [h.pid for h in holders] + [master.pid])
        store.close()
    finally:
        for h in holders:
            try:
                h.stdin.close()
                h.wait(timeout=30)
            except Exception:
                h.kill()
        master.terminate()
        try:
            master.wait(timeout=10)
        except subprocess.TimeoutExpired:
            master.kill()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
