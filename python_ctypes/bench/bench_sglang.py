#!/usr/bin/env python3
"""Throughput of the SGLang backend's zero-copy path (batch_set_v1 / batch_get_v1), next to

* the C API called directly on the same host-pool buffers (one ctypes call, arrays prebuilt),
* the plain valkey-py approach (bench/peer_valkey_py.py, run as a subprocess),
* SGLang's built-in file backend (HiCacheFile) on the same real host pool, through the v0 path
  its cache controller uses (get_data_page + batch_set; dummy pages + batch_get +
  set_from_flat_data_page), with its directory on tmpfs (/dev/shm) and on disk,

for batches of PAGES pages of several realistic sizes (MHA, 8 KV heads, head_dim 128, bf16):
256 KiB (page 16 tokens, 4 layers), 1 MiB (64 tokens, 4 layers) and 9 MiB (64 tokens, 36 layers:
an 8B-class model such as Qwen3-8B / Llama-3-8B). GB/s = 1e9 bytes per second. Each figure is the
best of REPEAT runs; medians and every run are in the JSON. All variants run against one
throwaway valkey-server on loopback, one after another within each repetition (the peer script
once per repetition), so the ratios come from the same conditions.

usage (with the venv that has SGLang and the package installed, e.g. after scripts/pytest.sh):
    PY=$(scripts/sglang-venv.sh)
    $PY python_ctypes/bench/bench_sglang.py [--sizes 256KiB,1MiB,9MiB] [--pages 128]
        [--repeat 7] [--layout page_first] [--out bench_sglang.json] [--quick]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # sglang_pools: the real SGLang host pools on CPU

SIZES = {
    "256KiB": dict(page_size=16, layers=4),
    "1MiB": dict(page_size=64, layers=4),
    "9MiB": dict(page_size=64, layers=36),
}
HEADS, HEAD_DIM = 8, 128
DEFAULT_PEER = HERE.parents[1] / "bench" / "peer_valkey_py.py"


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


# -- a throwaway server --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_server():
    exe = shutil.which("valkey-server")
    if not exe:
        sys.exit("valkey-server is not installed (scripts/install-deps.sh)")
    port, d = free_port(), tempfile.mkdtemp(prefix="hicache-bench-")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", d,
         "--logfile", os.path.join(d, "valkey.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not ping(port):
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    if not ping(port):
        proc.kill()
        sys.exit("valkey-server did not start")
    return port, proc, d


# -- measurements --------------------------------------------------------------------------------


class Series:
    """GB/s figures of repeated runs of one operation."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.gbps: List[float] = []

    def run(self, fn: Callable[[], object], check: Optional[Callable[[object], bool]] = None) -> None:
        t0 = time.perf_counter()
        r = fn()
        dt = time.perf_counter() - t0
        if check is not None and not check(r):
            raise RuntimeError(f"a benchmarked call failed: {r!r:.200}")
        self.gbps.append(self.nbytes / dt / 1e9)

    @property
    def best(self) -> float:
        return max(self.gbps) if self.gbps else float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.gbps) if self.gbps else float("nan")

    def as_dict(self) -> Dict[str, object]:
        return {"best_GBps": round(self.best, 3), "median_GBps": round(self.median, 3),
                "runs_GBps": [round(x, 3) for x in self.gbps]}


def storage_config(model: str, extra: dict, layout: str):
    from sglang.srt.mem_cache.hicache_storage import HiCacheStorageConfig

    return HiCacheStorageConfig(
        tp_rank=0, tp_size=1, pp_rank=0, pp_size=1, attn_cp_rank=0, attn_cp_size=1, is_mla_model=False,
        enable_storage_metrics=False, is_page_first_layout=layout == "page_first", model_name=model,
        extra_config=extra,
    )


def bench_size(name: str, args, port: int) -> Dict[str, object]:
    import torch
    from sglang.srt.mem_cache.storage.backend_factory import StorageBackendFactory
    from sglang_pools import fill_random, make_pool, page_indices, page_keys, raw_bytes

    import hicache_valkey as hv
    from hicache_valkey import _lib
    from hicache_valkey._lib import hicache_key, hicache_value
    from hicache_valkey.store import build_values, encode_keys

    geo = SIZES[name]
    n = args.pages
    pool = make_pool("mha", args.layout, n, heads=HEADS, head_dim=HEAD_DIM, dtype=torch.bfloat16, **geo)
    fill_random(pool, seed=7)
    want = raw_bytes(pool).clone()
    idx = page_indices(pool, list(range(n)))
    keys = page_keys(n, salt=name)
    ptrs, sizes = pool.get_page_buffer_meta(idx)
    page_bytes = sum(sizes) // n
    total = page_bytes * n
    log(f"[{name}] {n} pages of {page_bytes} B ({len(ptrs) // n} buffers per page, layout {args.layout}),"
        f" {total / 1e9:.2f} GB per batch")

    # The backend, created the way SGLang's controller does.
    model = f"bench-{name}"
    extra = {"backend_name": "valkey", "module_path": "hicache_valkey.sglang", "class_name": "ValkeyHiCacheStorage",
             "interface_v1": 1, "host": "127.0.0.1", "port": port}
    backend = StorageBackendFactory.create_backend("dynamic", storage_config(model, extra, args.layout), pool)
    backend.register_mem_pool_host(pool)
    backend.clear()

    # The C API on the same buffers: arrays built once, one ctypes call timed.
    # Same namespace and format as the backend: the same keys and values (and server memory).
    capi_store = hv.ValkeyStore(host="127.0.0.1", port=port, model_name=model, value_format=backend.value_format)
    L = _lib.lib()
    vals, segs = build_values(ptrs, sizes, len(ptrs) // n, n)
    key_arr, key_keep = encode_keys(keys)
    out = np.empty(n, dtype=np.int32)
    kp = key_arr.ctypes.data_as(ctypes.POINTER(hicache_key))
    vp = vals.ctypes.data_as(ctypes.POINTER(hicache_value))
    outp = out.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
    handle = capi_store._ptr  # the raw C handle, for timing one ctypes call

    def capi(fn):
        def call():
            st = fn(handle, kp, vp, n, outp)
            return st == 0 and not out.any()
        return call

    all_true = lambda r: r is True or (isinstance(r, list) and all(r))  # noqa: E731
    res = {k: (Series(total), Series(total)) for k in ("backend", "capi")}
    variants = [
        ("capi", "set", capi(L.hicache_valkey_batch_set), bool),
        ("backend", "set", lambda: backend.batch_set_v1(keys, idx), all_true),
        ("capi", "get", capi(L.hicache_valkey_batch_get), bool),
        ("backend", "get", lambda: backend.batch_get_v1(keys, idx), all_true),
    ]

    # SGLang's HiCacheFile on the same pool, driven as its controller drives a v0 backend
    # (_generic_page_set: get_data_page + batch_set; _generic_page_get: dummy pages + batch_get +
    # set_from_flat_data_page), directory on tmpfs and on disk.
    ps = pool.page_size
    file_dirs = {} if args.skip_file else {"file_shm": "/dev/shm", "file_disk": args.disk_dir}
    file_backends = {}
    tmpdirs = []
    os.environ.pop("SGLANG_HICACHE_FILE_BACKEND_STORAGE_DIR", None)
    for label, base in file_dirs.items():
        d = tempfile.mkdtemp(prefix="hicache-file-bench-", dir=base)
        tmpdirs.append(d)
        fb = StorageBackendFactory.create_backend("file", storage_config(model, {"file_storage_path": d}, args.layout), pool)
        fb.register_mem_pool_host(pool)
        file_backends[label] = fb
        res[label] = (Series(total), Series(total))

        def file_set(fb=fb):
            data = [pool.get_data_page(idx[i * ps]) for i in range(n)]
            return fb.batch_set(keys, data)

        def file_get(fb=fb):
            got = fb.batch_get(keys, [pool.get_dummy_flat_data_page() for _ in keys])
            for i, page in enumerate(got):
                if page is None:
                    return False
                pool.set_from_flat_data_page(idx[i * ps], page)
            return True

        variants.append((label, "clear", fb.clear, None))  # HiCacheFile skips keys already on disk
        variants.append((label, "set", file_set, all_true))
        variants.append((label, "get", file_get, all_true))

    # The plain valkey-py approach on the same server: one run of the peer script per repetition.
    peer_runs: List[dict] = []
    run_peer = not args.skip_peer and Path(args.peer).is_file()
    if not args.skip_peer and not run_peer:
        log(f"[{name}] peer baseline {args.peer} not found")

    try:
        for rep in range(args.repeat):  # every variant once per repetition: same conditions
            order = list(variants)
            if rep % 2:  # alternate which of backend / C API goes first
                order[0], order[1], order[2], order[3] = order[1], order[0], order[3], order[2]
            for label, op, fn, check in order:
                if op == "clear":
                    fn()
                else:
                    res[label][0 if op == "set" else 1].run(fn, check)
            if run_peer:
                p = subprocess.run([sys.executable, str(args.peer), str(port), str(n), str(page_bytes), "1"],
                                   capture_output=True, text=True, timeout=1800)
                if p.returncode != 0:
                    log(f"[{name}] peer baseline failed: {p.stderr[-500:]}")
                    run_peer = False
                else:
                    peer_runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
            log(f"[{name}] run {rep + 1}/{args.repeat} done")
        # every variant read back exactly what was written
        raw_bytes(pool).zero_()
        assert all(backend.batch_get_v1(keys, idx)) and torch.equal(raw_bytes(pool), want), "backend read wrong data"
        for label, fb in file_backends.items():
            raw_bytes(pool).zero_()
            got = fb.batch_get(keys, [pool.get_dummy_flat_data_page() for _ in keys])
            for i, page in enumerate(got):
                pool.set_from_flat_data_page(idx[i * ps], page)
            assert torch.equal(raw_bytes(pool), want), f"{label} read wrong data"
    finally:
        for fb in file_backends.values():
            fb.clear()
        for d in tmpdirs:
            shutil.rmtree(d, ignore_errors=True)
        backend.clear()
        capi_store.close()
        backend.close()
    del key_keep, segs
    peer = None
    if peer_runs:
        peer = {
            "set": Series(total), "get": Series(total),
        }
        peer["set"].gbps = [r["set_GBps"] for r in peer_runs]
        peer["get"].gbps = [r["get_GBps"] for r in peer_runs]
    del pool, want
    row: Dict[str, object] = {"size": name, "page_bytes": page_bytes, "pages": n, "layout": args.layout,
                              "buffers_per_page": len(ptrs) // n, "batch_bytes": total}
    for k, (s, g) in res.items():
        row[k] = {"set": s.as_dict(), "get": g.as_dict()}
    row["backend_over_capi_paired_median"] = {op: paired(row, op) for op in ("set", "get")}
    if peer is not None:
        row["valkey_py"] = {"set": peer["set"].as_dict(), "get": peer["get"].as_dict()}
    return row


def fmt_ratio(a: Optional[float], b: Optional[float]) -> str:
    if a is None or b is None or not b or b != b:
        return "n/a"
    return f"{a / b:.2f}x"


def best(row, key, op) -> Optional[float]:
    v = row.get(key)
    return None if v is None else v[op]["best_GBps"]


def median(row, key, op) -> Optional[float]:
    v = row.get(key)
    return None if v is None else v[op].get("median_GBps")


def paired(row, op) -> str:
    """Median over repetitions of backend / C API measured back to back in the same repetition
    (robust to the machine's swings between repetitions)."""
    b = row["backend"][op]["runs_GBps"]
    c = row["capi"][op]["runs_GBps"]
    if not b or len(b) != len(c):
        return "n/a"
    return f"{statistics.median(x / y for x, y in zip(b, c)):.2f}x"


def table(rows: List[Dict[str, object]]) -> str:
    cols = ["backend", "capi", "valkey_py", "file_shm", "file_disk"]
    head = ("| page | op | backend v1 | C API direct | valkey-py | HiCacheFile /dev/shm | HiCacheFile disk "
            "| backend / C API (best; paired median) | backend / valkey-py | backend / file shm | backend / file disk |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        for op in ("set", "get"):
            vals = [best(r, c, op) for c in cols]
            cells = ["n/a" if v is None else f"{v:.2f}" for v in vals]
            b = vals[0]
            ratios = [fmt_ratio(b, v) for v in vals[1:]]
            ratios[0] += f"; {paired(r, op)}"
            lines.append(f"| {r['size']} | {op} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="256KiB,1MiB,9MiB", help=f"comma-separated, of {list(SIZES)}")
    ap.add_argument("--pages", type=int, default=128, help="pages per batch (SGLang's STORAGE_BATCH_SIZE is 128)")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--layout", default="page_first", choices=["page_first", "page_first_direct", "layer_first"])
    ap.add_argument("--out", default="bench_sglang.json", help="JSON results file")
    ap.add_argument("--peer", default=str(DEFAULT_PEER), help="peer_valkey_py.py")
    ap.add_argument("--disk-dir", default="/var/tmp", help="where HiCacheFile's on-disk directory goes")
    ap.add_argument("--skip-file", action="store_true")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smoke run: 256KiB,1MiB, 32 pages, 2 runs")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.pages, args.repeat = "256KiB,1MiB", 32, 2
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for s in sizes:
        if s not in SIZES:
            sys.exit(f"unknown size {s!r}; known: {list(SIZES)}")

    import hicache_valkey as hv

    load_before = os.getloadavg()
    port, proc, d = start_server()
    rows = []
    try:
        for s in sizes:
            rows.append(bench_size(s, args, port))
    finally:
        proc.kill()
        proc.wait(timeout=10)
        shutil.rmtree(d, ignore_errors=True)

    load_after = os.getloadavg()
    t = table(rows)
    cmd = "python_ctypes/bench/bench_sglang.py " + " ".join(sys.argv[1:])
    print(f"\nbatches of {args.pages} pages, layout {args.layout}, best of {args.repeat} runs, GB/s (1e9 B/s); "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after\n")
    print(t)
    result = {
        "command": cmd.strip(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_before": load_before, "loadavg_after": load_after},
        "library_version": hv.version(),
        "pages": args.pages,
        "repeat": args.repeat,
        "layout": args.layout,
        "rows": rows,
        "table_markdown": t,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nJSON written to {args.out}")


if __name__ == "__main__":
    main()
