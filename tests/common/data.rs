//! Builders shared by the integration tests: settings and handles for a test server, keys,
//! deterministic pages, and batch set/get of whole pages.
//!
//! The outcome slots of `set`/`get` start as `Outcome::ServerError`, which no test expects from
//! them, so a slot the library forgets to write fails the test instead of passing by chance.

use hicache_valkey::{BatchReport, Outcome, ReadTargets, Result, Settings, Store};
use std::io::IoSlice;

/// Settings for a server on 127.0.0.1:`port` and model `model`; the rest is the defaults.
pub fn settings(port: u16, model: &str) -> Settings {
    Settings { host: Some("127.0.0.1".into()), port: Some(port.into()), model_name: Some(model.into()), ..Default::default() }
}

/// A handle opened with `s` (the test fails if it cannot be opened).
pub fn open(s: Settings) -> Store {
    Store::open(s.resolve().unwrap()).unwrap()
}

/// `n` keys `{tag}-0000`, `{tag}-0001`, ...
pub fn keys(n: usize, tag: &str) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("{tag}-{i:04}").into_bytes()).collect()
}

/// The keys as the slices the batch calls take.
pub fn refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
    v.iter().map(|k| k.as_slice()).collect()
}

/// Page `i` of `len` bytes: deterministic, and different for every `i`.
pub fn page(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as u32).wrapping_mul(2654435761).wrapping_add((j as u32).wrapping_mul(40503)).rotate_left(7) as u8).collect()
}

/// batch_set of `values`, each value given as its segments, into the caller's `outcomes`.
pub fn try_set_segments(store: &Store, keys: &[Vec<u8>], values: &[Vec<&[u8]>], outcomes: &mut [Outcome]) -> Result<BatchReport> {
    let slices: Vec<Vec<IoSlice<'_>>> = values.iter().map(|v| v.iter().map(|s| IoSlice::new(s)).collect()).collect();
    let values: Vec<&[IoSlice<'_>]> = slices.iter().map(|s| s.as_slice()).collect();
    store.batch_set(&refs(keys), &values, outcomes)
}

/// batch_set of whole pages (one segment each) into the caller's `outcomes`.
pub fn try_set(store: &Store, keys: &[Vec<u8>], pages: &[Vec<u8>], outcomes: &mut [Outcome]) -> Result<BatchReport> {
    try_set_segments(store, keys, &whole(pages), outcomes)
}

/// batch_set of `values` given as segments (the call must succeed); the per-key outcomes.
pub fn set_segments(store: &Store, keys: &[Vec<u8>], values: &[Vec<&[u8]>]) -> Vec<Outcome> {
    let mut out = vec![Outcome::ServerError; keys.len()];
    try_set_segments(store, keys, values, &mut out).unwrap();
    out
}

/// batch_set of whole pages, one segment each (the call must succeed); the per-key outcomes.
pub fn set(store: &Store, keys: &[Vec<u8>], pages: &[Vec<u8>]) -> Vec<Outcome> {
    set_segments(store, keys, &whole(pages))
}

/// Each page as a value of one segment.
fn whole(pages: &[Vec<u8>]) -> Vec<Vec<&[u8]>> {
    pages.iter().map(|p| vec![p.as_slice()]).collect()
}

/// batch_get into `bufs`, one segment per key; the per-key outcomes.
pub fn get(store: &Store, keys: &[Vec<u8>], bufs: &mut [Vec<u8>]) -> Vec<Outcome> {
    let mut t = ReadTargets::with_capacity(bufs.len(), bufs.len());
    for b in bufs.iter_mut() {
        t.push_value([b.as_mut_slice()]);
    }
    let mut out = vec![Outcome::ServerError; keys.len()];
    store.batch_get(&refs(keys), &mut t, &mut out).unwrap();
    out
}
