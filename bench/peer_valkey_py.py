#!/usr/bin/env python3
"""The valkey-py baseline of `hicache-valkey bench`: KV pages stored and loaded the plain Python way.

A storage backend written directly on valkey-py would keep its host KV pool in a numpy array,
send each batch of pages as one non-transactional pipeline of SETs, load a batch with one
pipeline of GETs copied into the pool, and ask which pages exist with one pipeline of EXISTS.
This script times exactly that, for PAGES pages of PAGE_BYTES bytes, REPEAT times, checks that
every page read back is the page written, and prints the best of each figure as one JSON line:

    {"peer": "valkey-py", ..., "set_GBps": 1.9, "get_GBps": 0.7, "exists_per_s": 180000.0}

GB/s are 1e9 bytes of page payload per second; exists_per_s is keys per second.

usage: peer_valkey_py.py PORT PAGES PAGE_BYTES [REPEAT] [--host HOST] [--db N]

The username and password, if the server needs them, are read from VALKEY_USERNAME and
VALKEY_PASSWORD (never from the command line, which other local users can read).
Needs: valkey (valkey-py) and numpy. Its keys (hicache:valkey-py-peer:*) are deleted on exit.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import valkey

KEY_PREFIX = "hicache:valkey-py-peer:"


def parse_args(argv):
    ap = argparse.ArgumentParser(description="valkey-py baseline for hicache-valkey bench")
    ap.add_argument("port", type=int)
    ap.add_argument("pages", type=int, help="pages per batch")
    ap.add_argument("page_bytes", type=int, help="bytes per page")
    ap.add_argument("repeat", type=int, nargs="?", default=3, help="timed rounds; the best is kept")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--db", type=int, default=0)
    args = ap.parse_args(argv)
    if args.pages < 1 or args.page_bytes < 1 or args.repeat < 1:
        ap.error("PAGES, PAGE_BYTES and REPEAT must be positive")
    return args


def timed(fn):
    """Runs fn(); returns (seconds, its result)."""
    t0 = time.perf_counter_ns()
    result = fn()
    return (time.perf_counter_ns() - t0) / 1e9, result


def store(client, keys, pool):
    pipe = client.pipeline(transaction=False)
    for key, page in zip(keys, pool):
        pipe.set(key, memoryview(page))  # a view of the pool's row: no copy before the socket
    return pipe.execute()


def load(client, keys, pool):
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
    values = pipe.execute()
    for row, value in enumerate(values):
        if value is None or len(value) != pool.shape[1]:
            return False
        pool[row] = np.frombuffer(value, dtype=np.uint8)
    return True


def exists(client, keys):
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.exists(key)
    return pipe.execute()


def main(argv):
    args = parse_args(argv)
    client = valkey.Valkey(
        host=args.host,
        port=args.port,
        db=args.db,
        username=os.environ.get("VALKEY_USERNAME") or None,
        password=os.environ.get("VALKEY_PASSWORD") or None,
        socket_timeout=120,
    )
    keys = [f"{KEY_PREFIX}{args.page_bytes}:{i:016x}" for i in range(args.pages)]
    rng = np.random.default_rng(args.page_bytes * 1_000_003 + args.pages)
    written = rng.integers(0, 256, size=(args.pages, args.page_bytes), dtype=np.uint8)
    host_pool = np.empty_like(written)
    total_bytes = args.pages * args.page_bytes
    best_set = best_get = best_exists = 0.0
    try:
        for _ in range(args.repeat):
            client.delete(*keys)
            host_pool.fill(0)
            secs, replies = timed(lambda: store(client, keys, written))
            if not all(replies):
                sys.exit("peer_valkey_py: a SET was refused")
            best_set = max(best_set, total_bytes / secs / 1e9)
            secs, complete = timed(lambda: load(client, keys, host_pool))
            if not complete or not np.array_equal(host_pool, written):
                sys.exit("peer_valkey_py: pages read back differ from the pages written")
            best_get = max(best_get, total_bytes / secs / 1e9)
            secs, found = timed(lambda: exists(client, keys))
            if sum(found) != args.pages:
                sys.exit(f"peer_valkey_py: EXISTS found {sum(found)} of {args.pages} pages")
            best_exists = max(best_exists, args.pages / secs)
    finally:
        client.delete(*keys)
    print(json.dumps({
        "peer": "valkey-py",
        "valkey_py_version": valkey.__version__,
        "pages": args.pages,
        "page_bytes": args.page_bytes,
        "repeat": args.repeat,
        "set_GBps": round(best_set, 3),
        "get_GBps": round(best_get, 3),
        "exists_per_s": round(best_exists, 1),
    }))


if __name__ == "__main__":
    main(sys.argv[1:])
