//! Zero-copy proof: with a counting global allocator, batch_set and batch_get of large values
//! allocate only O(keys) small bytes, never O(value bytes): the values go from and to the
//! caller's segments without a staging copy inside the library.
//!
//! One #[test] in this binary, so no other test allocates while we count.

mod common;

use common::{c_open, keys, page, refs, settings, Server};
use hicache_valkey::ffi::{
    hicache_key, hicache_segment, hicache_status, hicache_valkey_batch_get, hicache_valkey_batch_set, hicache_valkey_close,
    hicache_value,
};
use hicache_valkey::{Outcome, ReadTargets, Settings, Store};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static BYTES: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);
static LARGEST: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn count(size: usize) {
    if COUNTING.load(Relaxed) {
        BYTES.fetch_add(size as u64, Relaxed);
        CALLS.fetch_add(1, Relaxed);
        LARGEST.fetch_max(size as u64, Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made while `f` runs: (bytes, calls, largest).
fn counted<T>(f: impl FnOnce() -> T) -> (T, u64, u64, u64) {
    BYTES.store(0, Relaxed);
    CALLS.store(0, Relaxed);
    LARGEST.store(0, Relaxed);
    COUNTING.store(true, Relaxed);
    let r = f();
    COUNTING.store(false, Relaxed);
    (r, BYTES.load(Relaxed), CALLS.load(Relaxed), LARGEST.load(Relaxed))
}

const KEYS: usize = 64;
const PAGE: usize = 1 << 20; // 64 MiB per batch
/// What the library may allocate per key (key slices, outcome slots, RESP headers) and per call.
const PER_KEY: u64 = 512;
const PER_CALL: u64 = 256 << 10;

fn budget(keys: usize) -> u64 {
    PER_CALL + PER_KEY * keys as u64
}

fn pages() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    (keys(KEYS, "alloc-page"), (0..KEYS).map(|i| page(i, PAGE)).collect())
}

fn check(what: &str, moved: u64, bytes: u64, calls: u64, largest: u64, keys: usize) {
    eprintln!("{what}: moved {moved} value bytes; allocated {bytes} bytes in {calls} allocations (largest {largest})");
    assert!(bytes <= budget(keys), "{what}: allocated {bytes} bytes for {keys} keys (budget {})", budget(keys));
    assert!(largest < 64 << 10, "{what}: one allocation of {largest} bytes: a value was staged?");
    assert!(bytes * 100 < moved, "{what}: allocations are not small against the bytes moved");
}

fn rust_api(port: u16, connections: i64) {
    let settings = Settings { connections: Some(connections), ..settings(port, &format!("alloc-rust-{connections}")) };
    let store = Store::open(settings.resolve().unwrap()).unwrap();
    let (keys, data) = pages();
    let key_refs = refs(&keys);
    // Two segments per value (K and V halves).
    let split: Vec<[IoSlice<'_>; 2]> = data.iter().map(|d| {
        let (a, b) = d.split_at(PAGE / 2);
        [IoSlice::new(a), IoSlice::new(b)]
    }).collect();
    let values: Vec<&[IoSlice<'_>]> = split.iter().map(|s| s.as_slice()).collect();
    let mut outcomes = vec![Outcome::Miss; KEYS];
    let mut bufs: Vec<Vec<u8>> = (0..KEYS).map(|_| vec![0u8; PAGE]).collect();

    // Warm up: connections (one per lane) and their buffers are made once, not per call.
    store.batch_set(&key_refs, &values, &mut outcomes).unwrap();
    {
        let mut targets = ReadTargets::with_capacity(KEYS, 2 * KEYS);
        for b in bufs.iter_mut() {
            let (x, y) = b.split_at_mut(PAGE / 2);
            targets.push_value([x, y]);
        }
        store.batch_get(&key_refs, &mut targets, &mut outcomes).unwrap();
    }

    let moved = (KEYS * PAGE) as u64;
    let (r, bytes, calls, largest) = counted(|| store.batch_set(&key_refs, &values, &mut outcomes));
    r.unwrap();
    assert!(outcomes.iter().all(|o| *o == Outcome::Ok), "{outcomes:?}");
    check(&format!("Store::batch_set, {connections} connection(s)"), moved, bytes, calls, largest, KEYS);

    for b in bufs.iter_mut() {
        b.fill(0);
    }
    let (r, bytes, calls, largest) = counted(|| {
        let mut targets = ReadTargets::with_capacity(KEYS, 2 * KEYS);
        for b in bufs.iter_mut() {
            let (x, y) = b.split_at_mut(PAGE / 2);
            targets.push_value([x, y]);
        }
        store.batch_get(&key_refs, &mut targets, &mut outcomes)
    });
    r.unwrap();
    assert!(outcomes.iter().all(|o| *o == Outcome::Ok), "{outcomes:?}");
    assert!(bufs == data, "batch_get read back other bytes");
    check(&format!("Store::batch_get, {connections} connection(s)"), moved, bytes, calls, largest, KEYS);
}

fn c_abi(port: u16) {
    let (keys, mut data) = pages();
    let mut back: Vec<Vec<u8>> = (0..KEYS).map(|_| vec![0u8; PAGE]).collect();
    let h = c_open(port, Some(c"alloc-c"), |_| {});
    unsafe {
        let ckeys: Vec<hicache_key> = keys.iter().map(|k| hicache_key { ptr: k.as_ptr(), len: k.len() }).collect();
        let seg = |v: &mut Vec<u8>| hicache_segment { ptr: v.as_mut_ptr().cast(), len: v.len() };
        let wsegs: Vec<hicache_segment> = data.iter_mut().map(seg).collect();
        let rsegs: Vec<hicache_segment> = back.iter_mut().map(seg).collect();
        let wvals: Vec<hicache_value> = wsegs.iter().map(|s| hicache_value { segments: s, count: 1 }).collect();
        let rvals: Vec<hicache_value> = rsegs.iter().map(|s| hicache_value { segments: s, count: 1 }).collect();
        let mut out = vec![-1i32; KEYS];
        assert_eq!(hicache_valkey_batch_set(h, ckeys.as_ptr(), wvals.as_ptr(), KEYS, out.as_mut_ptr()), hicache_status::Ok);
        let moved = (KEYS * PAGE) as u64;
        let (st, bytes, calls, largest) = counted(|| hicache_valkey_batch_set(h, ckeys.as_ptr(), wvals.as_ptr(), KEYS, out.as_mut_ptr()));
        assert_eq!(st, hicache_status::Ok);
        assert!(out.iter().all(|o| *o == 0), "{out:?}");
        check("hicache_valkey_batch_set", moved, bytes, calls, largest, KEYS);
        let (st, bytes, calls, largest) = counted(|| hicache_valkey_batch_get(h, ckeys.as_ptr(), rvals.as_ptr(), KEYS, out.as_mut_ptr()));
        assert_eq!(st, hicache_status::Ok);
        assert!(out.iter().all(|o| *o == 0), "{out:?}");
        check("hicache_valkey_batch_get", moved, bytes, calls, largest, KEYS);
        hicache_valkey_close(h);
    }
    assert!(back == data, "C batch_get read back other bytes");
}

#[test]
fn large_values_are_never_copied_into_library_buffers() {
    let server = Server::start(&[]);
    rust_api(server.port, 1);
    rust_api(server.port, 4);
    c_abi(server.port);
}
