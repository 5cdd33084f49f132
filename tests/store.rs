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

/// A counter of the server's `INFO stats`.
fn info_stat(server: &common::Server, name: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(&mut server.redis()).unwrap();
    let prefix = format!("{name}:");
    info.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap().trim().parse().unwrap()
}

/// The server's `total_net_input_bytes`.
fn net_input_bytes(server: &common::Server) -> u64 {
    info_stat(server, "total_net_input_bytes")
}

/// `skip_existing`: keys already stored with this handle's value format and payload length are
/// not written again (their outcome is still Ok and the stored bytes stay as they were); keys
/// that are absent, of another length, of another value format or not ours are written.
#[test]
fn skip_existing_skips_only_keys_stored_with_the_same_format_and_length() {
    let server = Server::start(&[]);
    let plain = common::open(settings(server.port));
    let mut s = settings(server.port);
    s.skip_existing = Some(true);
    let skipping = common::open(s);
    let keys = common::keys(8, "dedup");
    let first: Vec<Vec<u8>> = (0..8).map(|i| page(i, 50_000)).collect();
    // keys 0..4 stored by the same format; 4 with another length; 5 by another format; 6 foreign
    assert!(common::set(&plain, &keys[..4], &first[..4]).iter().all(|o| *o == Outcome::Ok));
    assert!(common::set(&plain, &keys[4..5], &[page(4, 40_000)]).iter().all(|o| *o == Outcome::Ok));
    let mut other = settings(server.port);
    other.value_format = 0xfeed;
    assert!(common::set(&common::open(other), &keys[5..6], &first[5..6]).iter().all(|o| *o == Outcome::Ok));
    let _: () = redis::cmd("SET").arg("hicache:test-model:t0of1:dedup-0006").arg(vec![b'z'; 50_032]).query(&mut server.redis()).unwrap();
    // key 7 absent. Write other bytes of the same length under all 8 keys.
    let second: Vec<Vec<u8>> = (0..8).map(|i| page(100 + i, 50_000)).collect();
    let before = net_input_bytes(&server);
    assert!(common::set(&skipping, &keys, &second).iter().all(|o| *o == Outcome::Ok));
    let sent = net_input_bytes(&server) - before;
    // 4 values written (about 200 KB), 4 skipped; the probes cost a few hundred bytes.
    assert!((4 * 50_000..5 * 50_000).contains(&sent), "server received {sent} bytes");
    let mut bufs = vec![vec![0u8; 50_000]; 8];
    assert!(common::get(&skipping, &keys, &mut bufs).iter().all(|o| *o == Outcome::Ok));
    for i in 0..4 {
        assert_eq!(bufs[i], first[i], "key {i} was skipped: the first value stays");
    }
    for i in 4..8 {
        assert_eq!(bufs[i], second[i], "key {i} had to be written");
    }
    assert_eq!(skipping.client_stats().pages_written, 4, "skipped pages are not counted as written");
    // The same batch again: everything is skipped, almost nothing is sent.
    let before = net_input_bytes(&server);
    assert!(common::set(&skipping, &keys, &second).iter().all(|o| *o == Outcome::Ok));
    assert!(net_input_bytes(&server) - before < 4096);
    // Without the option every key is written.
    let before = net_input_bytes(&server);
    assert!(common::set(&plain, &keys, &second).iter().all(|o| *o == Outcome::Ok));
    assert!(net_input_bytes(&server) - before > 8 * 50_000);
}

/// Values of half the GET window (4 MiB) or more are read over two connections, dealt in turn:
/// hits, a miss and a value of another length among them, each value in three segments, land in
/// their own segments.
#[test]
fn large_values_are_read_over_two_connections() {
    let server = Server::start(&[]);
    let store = open(server.port);
    let len = 2 << 20;
    let keys = common::keys(5, "big");
    let pages: Vec<Vec<u8>> = (0..5).map(|i| page(i, len)).collect();
    let stored: Vec<usize> = vec![0, 1, 3, 4];
    let sk: Vec<Vec<u8>> = stored.iter().map(|i| keys[*i].clone()).collect();
    let mut sp: Vec<Vec<u8>> = stored.iter().map(|i| pages[*i].clone()).collect();
    sp[2].truncate(len - 1); // key 3: another length
    assert!(common::set(&store, &sk, &sp).iter().all(|o| *o == Outcome::Ok));
    let accepted = || info_stat(&server, "total_connections_received");
    let before = accepted();
    let mut bufs = vec![vec![0xEEu8; len]; 5];
    let mut targets = ReadTargets::with_capacity(5, 15);
    for b in bufs.iter_mut() {
        let (a, rest) = b.split_at_mut(len / 3);
        let (m, z) = rest.split_at_mut(len / 3);
        targets.push_value([a, m, z]);
    }
    let mut out = vec![Outcome::ServerError; 5];
    store.batch_get(&common::refs(&keys), &mut targets, &mut out).unwrap();
    assert_eq!(out, [Outcome::Ok, Outcome::Ok, Outcome::Miss, Outcome::SizeMismatch, Outcome::Ok]);
    for i in [0, 1, 4] {
        assert!(bufs[i] == pages[i], "key {i}: wrong bytes");
    }
    for i in [2, 3] {
        assert!(bufs[i].iter().all(|b| *b == 0xEE), "key {i}: segments written");
    }
    // The lane took the pooled connection and made one more (the redis-rs connection of
    // `accepted` is counted too).
    assert_eq!(accepted() - before, 2, "connections made for the call (and the INFO)");
}

/// Calls of `command` the server has run (`INFO commandstats`).
fn command_calls(server: &common::Server, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(&mut server.redis()).unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.split(',').next().unwrap().parse().unwrap())
}

/// `skip_existing` on a batch of new pages: one multi-key EXISTS per probe window learns that
/// none is stored, and no GETRANGE is sent; once some are stored, every key's header is read.
#[test]
fn skip_existing_asks_new_pages_with_one_exists() {
    let server = Server::start(&[]);
    let mut s = settings(server.port);
    s.skip_existing = Some(true);
    let store = common::open(s);
    let keys = common::keys(1500, "fresh");
    let pages: Vec<Vec<u8>> = (0..1500).map(|i| page(i, 1000)).collect();
    assert!(common::set(&store, &keys[..1000], &pages[..1000]).iter().all(|o| *o == Outcome::Ok));
    // 1000 keys: one probe window (1024 keys), so one EXISTS.
    assert_eq!((command_calls(&server, "exists"), command_calls(&server, "getrange")), (1, 0));
    assert_eq!(store.client_stats().pages_written, 1000);
    // All 1500 over two windows: the first (1024 keys, 1000 of them stored) needs its
    // GETRANGEs, the second (476 new keys) does not.
    assert!(common::set(&store, &keys, &pages).iter().all(|o| *o == Outcome::Ok));
    assert_eq!((command_calls(&server, "exists"), command_calls(&server, "getrange")), (3, 1024));
    assert_eq!(store.client_stats().pages_written, 1500, "the 1000 stored pages were skipped");
    let mut bufs = vec![vec![0u8; 1000]; 1500];
    assert!(common::get(&store, &keys, &mut bufs).iter().all(|o| *o == Outcome::Ok));
    assert!(bufs == pages);
}

/// An ACL user without EXISTS: the probe falls back to reading every header with GETRANGE, and
/// still skips what is stored.
#[test]
fn skip_existing_without_exists_rights_reads_every_header() {
    let server = Server::start(&[]);
    let acl = ["SETUSER", "noexists", "on", ">pw", "resetkeys", "~hicache:*", "-@all", "+get", "+set", "+getrange", "+ping", "+info"];
    let _: () = redis::cmd("ACL").arg(&acl[..]).query(&mut server.redis()).unwrap();
    let mut s = settings(server.port);
    (s.username, s.password, s.skip_existing) = (Some("noexists".into()), Some("pw".into()), Some(true));
    let store = common::open(s);
    let keys = common::keys(10, "acl");
    let pages: Vec<Vec<u8>> = (0..10).map(|i| page(i, 3000)).collect();
    assert!(common::set(&store, &keys[..5], &pages[..5]).iter().all(|o| *o == Outcome::Ok));
    assert!(common::set(&store, &keys, &pages).iter().all(|o| *o == Outcome::Ok));
    assert_eq!(store.client_stats().pages_written, 10, "5 written, then 5 skipped and 5 written");
    assert_eq!(command_calls(&server, "getrange"), 15);
    let mut bufs = vec![vec![0u8; 3000]; 10];
    assert!(common::get(&store, &keys, &mut bufs).iter().all(|o| *o == Outcome::Ok));
    assert!(bufs == pages);
}

/// `skip_existing` over several lanes and batches larger than the probe window, with skipped and
/// written keys interleaved.
#[test]
fn skip_existing_interleaved_over_lanes() {
    let server = Server::start(&[]);
    let mut s = settings(server.port);
    s.skip_existing = Some(true);
    s.connections = Some(4);
    let store = common::open(s);
    let n = 3000;
    let keys = common::keys(n, "many");
    let pages: Vec<Vec<u8>> = (0..n).map(|i| page(i, 8192)).collect();
    let even: Vec<usize> = (0..n).step_by(2).collect();
    let ek: Vec<Vec<u8>> = even.iter().map(|i| keys[*i].clone()).collect();
    let ep: Vec<Vec<u8>> = even.iter().map(|i| pages[*i].clone()).collect();
    assert!(common::set(&store, &ek, &ep).iter().all(|o| *o == Outcome::Ok));
    let before = net_input_bytes(&server);
    assert!(common::set(&store, &keys, &pages).iter().all(|o| *o == Outcome::Ok));
    let sent = net_input_bytes(&server) - before;
    // Half the pages, plus the probes: every window holds stored keys, so each key is named in
    // an EXISTS and a GETRANGE (about 150 bytes a key).
    assert!(sent < (n as u64 / 2) * 8192 + 600_000, "server received {sent} bytes");
    let mut bufs = vec![vec![0u8; 8192]; n];
    assert!(common::get(&store, &keys, &mut bufs).iter().all(|o| *o == Outcome::Ok));
    assert!(bufs == pages);
}
