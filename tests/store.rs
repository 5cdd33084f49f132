//! The safe core against a real valkey-server.

mod common;

use common::{page, Server};
use hicache_valkey::{ErrorKind, Outcome, ReadTargets, Settings, Store};
use std::io::IoSlice;

fn settings(port: u16) -> Settings {
    common::settings(port, "test-model")
}

fn open(port: u16) -> Store {
    common::open(settings(port))
}

#[test]
fn set_then_get_round_trips_scatter_gather_values() {
    let server = Server::start(&[]);
    let store = open(server.port);
    let keys: Vec<Vec<u8>> = (0..20).map(|i| format!("page-{i}").into_bytes()).collect();
    let key_refs = common::refs(&keys);
    let data: Vec<Vec<u8>> = (0..20).map(|i| page(i, 1000 + i * 3000)).collect();
    // each value as 3 segments of uneven sizes
    let split: Vec<[IoSlice<'_>; 3]> = data
        .iter()
        .map(|d| {
            let (a, rest) = d.split_at(d.len() / 3);
            let (b, c) = rest.split_at(rest.len() / 2);
            [IoSlice::new(a), IoSlice::new(b), IoSlice::new(c)]
        })
        .collect();
    let values: Vec<&[IoSlice<'_>]> = split.iter().map(|s| s.as_slice()).collect();
    let mut outcomes = vec![Outcome::Miss; 20];
    let r = store.batch_set(&key_refs, &values, &mut outcomes).unwrap();
    assert!(outcomes.iter().all(|o| *o == Outcome::Ok), "{outcomes:?} {:?}", r.first_error);

    let mut bufs: Vec<Vec<u8>> = data.iter().map(|d| vec![0u8; d.len()]).collect();
    let mut targets = ReadTargets::with_capacity(20, 40);
    for b in bufs.iter_mut() {
        let cut = 7.min(b.len());
        let (x, y) = b.split_at_mut(cut);
        targets.push_value([x, y]);
    }
    let mut outcomes = vec![Outcome::Miss; 20];
    store.batch_get(&key_refs, &mut targets, &mut outcomes).unwrap();
    drop(targets);
    assert!(outcomes.iter().all(|o| *o == Outcome::Ok), "{outcomes:?}");
    assert_eq!(bufs, data);

    let mut found = vec![false; 21];
    let mut more = key_refs.clone();
    more.insert(5, b"absent");
    let (leading, _) = store.batch_exists(&more, &mut found).unwrap();
    assert_eq!(leading, 5);
    assert_eq!(found.iter().filter(|f| **f).count(), 20);
    // stored under the documented key
    let stored: Vec<u8> = redis::cmd("GET").arg("hicache:test-model:t0of1:page-3").query(&mut server.redis()).unwrap();
    assert_eq!(&stored[32..], data[3].as_slice());
}

#[test]
fn unreachable_server_is_a_connection_error() {
    let port = common::free_port();
    let e = Store::open(settings(port).resolve().unwrap()).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.message().contains(&format!("127.0.0.1:{port}")), "{e}");
}

#[test]
fn empty_batches_are_no_ops() {
    let server = Server::start(&[]);
    let store = open(server.port);
    assert_eq!(store.batch_set(&[], &[], &mut []).unwrap().failed, 0);
    assert_eq!(store.batch_get(&[], &mut ReadTargets::default(), &mut []).unwrap().failed, 0);
    assert_eq!(store.batch_exists(&[], &mut []).unwrap().0, 0);
    assert_eq!(store.client_stats().set_latency.calls, 0);
}

#[test]
fn mismatched_lengths_and_empty_keys_are_invalid_arguments() {
    let server = Server::start(&[]);
    let store = open(server.port);
    let e = store.batch_exists(&[b"a", b""], &mut [false; 2]).unwrap_err();
    assert_eq!((e.kind(), e.message()), (ErrorKind::InvalidArgument, "key 1 is empty"));
    let e = store.batch_set(&[b"a"], &[], &mut [Outcome::Ok]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}
