//! Behaviour a cache tier must get right, against real valkey-servers: misses of every kind never
//! count as hits, failures are reported per key, a restarted server is reconnected to, timeouts
//! fire, memory-full and authentication errors are named, one handle serves many threads.

mod common;

use common::{get, keys, open, page, refs, set, settings, try_set, Server};
use hicache_valkey::{ErrorKind, Outcome, Settings, Store};
use std::time::{Duration, Instant};

#[test]
fn misses_of_every_kind_leave_the_buffer_alone() {
    let server = Server::start(&[]);
    let a = open(Settings { value_format: 1, checksum: Some(true), ..settings(server.port, "m") });
    let b = open(Settings { value_format: 2, ..settings(server.port, "m") });
    let k = keys(5, "p");
    let pages: Vec<Vec<u8>> = (0..5).map(|i| page(i, 4096)).collect();
    assert!(set(&a, &k, &pages).iter().all(|o| *o == Outcome::Ok));
    let mut r = server.redis();
    // key 1: a foreign value; key 2: a corrupted payload (checksum); key 3: absent.
    let _: () = redis::cmd("SET").arg("hicache:m:t0of1:p-0001").arg(vec![7u8; 4128]).query(&mut r).unwrap();
    let _: () = redis::cmd("SETRANGE").arg("hicache:m:t0of1:p-0002").arg(100).arg("X").query(&mut r).unwrap();
    let _: () = redis::cmd("DEL").arg("hicache:m:t0of1:p-0003").query(&mut r).unwrap();

    let mut bufs = vec![vec![0xEEu8; 4096]; 5];
    let out = get(&a, &k, &mut bufs);
    assert_eq!(out, [Outcome::Ok, Outcome::Foreign, Outcome::ChecksumMismatch, Outcome::Miss, Outcome::Ok]);
    assert_eq!(bufs[0], pages[0]);
    assert_eq!(bufs[4], pages[4]);
    assert!(bufs[1].iter().chain(&bufs[3]).all(|b| *b == 0xEE), "miss buffers were written");

    // Another fingerprint, same length: never a hit, buffer untouched.
    let mut bufs = vec![vec![0xEEu8; 4096]; 5];
    let out = get(&b, &k, &mut bufs);
    assert_eq!(out[0], Outcome::FormatMismatch);
    assert!(bufs[0].iter().all(|b| *b == 0xEE));
    // Another length: a size mismatch, buffer untouched.
    let mut small = vec![vec![0xEEu8; 4000]];
    assert_eq!(get(&a, &k[..1], &mut small), [Outcome::SizeMismatch]);
    assert!(small[0].iter().all(|b| *b == 0xEE));
    // The pipeline is still in step after all those skipped payloads.
    let mut bufs = vec![vec![0u8; 4096]; 1];
    assert_eq!(get(&a, &k[4..], &mut bufs), [Outcome::Ok]);
    assert_eq!(bufs[0], pages[4]);
    let c = a.client_stats();
    assert_eq!((c.get_hits, c.get_misses), (3, 4));
}

#[test]
fn restarted_server_is_reconnected_on_the_next_call() {
    let mut server = Server::start(&[]);
    let port = server.port;
    let store = open(settings(port, "m"));
    let k = keys(8, "r");
    let pages: Vec<Vec<u8>> = (0..8).map(|i| page(i, 100_000)).collect();
    assert!(set(&store, &k, &pages).iter().all(|o| *o == Outcome::Ok));
    server.kill();
    // Down: the whole call fails with a connection error naming the server.
    let mut out = vec![Outcome::Ok; 8];
    let e = try_set(&store, &k, &pages, &mut out).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.message().contains(&port.to_string()), "{e}");
    assert!(out.iter().all(|o| *o == Outcome::IoError));
    // Back (empty, no persistence): the same handle works again.
    let _server = Server::start_on(port, &[]);
    assert!(set(&store, &k, &pages).iter().all(|o| *o == Outcome::Ok));
    let mut bufs = vec![vec![0u8; 100_000]; 8];
    assert!(get(&store, &k, &mut bufs).iter().all(|o| *o == Outcome::Ok));
    assert_eq!(bufs, pages);
    assert!(store.client_stats().reconnects >= 1);
}

#[test]
fn a_paused_server_times_out_per_key_and_the_handle_recovers() {
    let server = Server::start(&[]);
    let store = open(Settings { io_timeout_ms: Some(300), ..settings(server.port, "m") });
    let k = keys(4, "t");
    let pages: Vec<Vec<u8>> = (0..4).map(|i| page(i, 1000)).collect();
    assert!(set(&store, &k, &pages).iter().all(|o| *o == Outcome::Ok));
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(1500).arg("ALL").query(&mut server.redis()).unwrap();
    let started = Instant::now();
    let mut bufs = vec![vec![0u8; 1000]; 4];
    let out = get(&store, &k, &mut bufs);
    let took = started.elapsed();
    assert!(out.iter().all(|o| *o == Outcome::Timeout), "{out:?}");
    assert!(took >= Duration::from_millis(250) && took < Duration::from_millis(1400), "{took:?}");
    std::thread::sleep(Duration::from_millis(1600).saturating_sub(started.elapsed()));
    assert!(get(&store, &k, &mut bufs).iter().all(|o| *o == Outcome::Ok));
    assert_eq!(bufs, pages);
}

#[test]
fn memory_full_is_reported_per_key_with_advice() {
    let server = Server::start(&["--maxmemory", "3mb", "--maxmemory-policy", "noeviction"]);
    let store = open(settings(server.port, "m"));
    let k = keys(40, "oom");
    let pages: Vec<Vec<u8>> = (0..40).map(|i| page(i, 256 << 10)).collect();
    let mut out = vec![Outcome::Miss; 40];
    let report = try_set(&store, &k, &pages, &mut out).unwrap();
    assert_eq!(out[0], Outcome::Ok);
    assert_eq!(out[39], Outcome::OutOfMemory, "{out:?}");
    let e = report.first_error.unwrap();
    assert!(e.message().contains("OOM") && e.message().contains("maxmemory"), "{e}");
    assert_eq!(report.failed, out.iter().filter(|o| **o == Outcome::OutOfMemory).count());
}

#[test]
fn authentication_errors_are_named() {
    let server = Server::start(&["--requirepass", "s3cret"]);
    let e = Store::open(settings(server.port, "m").resolve().unwrap()).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert!(e.message().contains("VALKEY_PASSWORD"), "{e}");
    let wrong = Settings { password: Some("nope".into()), ..settings(server.port, "m") };
    let e = Store::open(wrong.resolve().unwrap()).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert!(!e.message().contains("nope"), "password in message: {e}");
    let right = Settings { password: Some("s3cret".into()), db: Some(2), ..settings(server.port, "m") };
    let store = open(right);
    let k = keys(1, "a");
    assert_eq!(set(&store, &k, &[page(0, 10)]), [Outcome::Ok]);
    let s = store.stats().unwrap();
    assert_eq!((s.server.model_keys, s.server.db_keys), (1, 1));
    let bad_db = Settings { password: Some("s3cret".into()), db: Some(999), ..settings(server.port, "m") };
    let e = Store::open(bad_db.resolve().unwrap()).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
}

#[test]
fn stats_and_clear_see_only_this_model() {
    let server = Server::start(&[]);
    let a0 = open(Settings { tp_rank: Some(0), tp_size: Some(2), ..settings(server.port, "org/model:a*") });
    let a1 = open(Settings { tp_rank: Some(1), tp_size: Some(2), ..settings(server.port, "org/model:a*") });
    let other = open(settings(server.port, "org/model:ab"));
    let k = keys(10, "s");
    let pages: Vec<Vec<u8>> = (0..10).map(|i| page(i, 512)).collect();
    set(&a0, &k, &pages);
    set(&a1, &k[..4], &pages[..4]);
    set(&other, &k, &pages);
    // tp ranks are isolated: rank 1 has only 4 of the keys.
    let mut found = vec![false; 10];
    assert_eq!(a1.batch_exists(&refs(&k), &mut found).unwrap().0, 4);
    let s = a0.stats().unwrap();
    assert_eq!((s.server.model_keys, s.server.db_keys), (14, 24));
    assert!(s.server.used_memory > 0 && !s.server.used_memory_human.is_empty());
    assert!(s.server.connected_clients >= 3);
    assert_eq!(s.client.pages_written, 10);
    assert_eq!(s.client.set_latency.calls, 1);
    assert_eq!(a0.clear().unwrap(), 14);
    assert_eq!(other.stats().unwrap().server.model_keys, 10);
    assert_eq!(a0.stats().unwrap().server.db_keys, 10);
}

#[test]
fn one_handle_serves_many_threads() {
    let server = Server::start(&[]);
    let store = open(Settings { connections: Some(2), ..settings(server.port, "m") });
    std::thread::scope(|s| {
        for t in 0..6 {
            let store = &store;
            s.spawn(move || {
                for round in 0..10 {
                    let k = keys(16, &format!("t{t}r{round}"));
                    let pages: Vec<Vec<u8>> = (0..16).map(|i| page(t * 1000 + round * 16 + i, 64 << 10)).collect();
                    assert!(set(store, &k, &pages).iter().all(|o| *o == Outcome::Ok));
                    let mut found = vec![false; 16];
                    assert_eq!(store.batch_exists(&refs(&k), &mut found).unwrap().0, 16);
                    let mut bufs = vec![vec![0u8; 64 << 10]; 16];
                    assert!(get(store, &k, &mut bufs).iter().all(|o| *o == Outcome::Ok));
                    assert_eq!(bufs, pages);
                }
            });
        }
    });
    let c = store.client_stats();
    assert_eq!((c.pages_written, c.get_hits, c.exists_hits), (960, 960, 960));
}

#[test]
fn large_batches_split_across_connections_round_trip() {
    let server = Server::start(&[]);
    let store = open(Settings { connections: Some(3), ..settings(server.port, "m") });
    // 40 pages of 1 MiB: three lanes of ~13 MiB each; uneven sizes and an empty value too.
    let k = keys(41, "big");
    let mut pages: Vec<Vec<u8>> = (0..40).map(|i| page(i, (1 << 20) + i * 17)).collect();
    pages.push(Vec::new());
    assert!(set(&store, &k, &pages).iter().all(|o| *o == Outcome::Ok));
    let mut bufs: Vec<Vec<u8>> = pages.iter().map(|p| vec![0u8; p.len()]).collect();
    assert!(get(&store, &k, &mut bufs).iter().all(|o| *o == Outcome::Ok));
    assert!(bufs == pages);
    let mut found = vec![false; 41];
    assert_eq!(store.batch_exists(&refs(&k), &mut found).unwrap().0, 41);
}

#[test]
fn mla_ranks_share_and_pp_stages_do_not() {
    let server = Server::start(&[]);
    let mla0 = open(Settings { is_mla: true, tp_rank: Some(0), tp_size: Some(4), ..settings(server.port, "ds") });
    let mla3 = open(Settings { is_mla: true, tp_rank: Some(3), tp_size: Some(4), ..settings(server.port, "ds") });
    let pp1 = open(Settings { is_mla: true, pp_rank: Some(1), pp_size: Some(2), ..settings(server.port, "ds") });
    let k = keys(3, "x");
    set(&mla0, &k, &[page(0, 64), page(1, 64), page(2, 64)]);
    let mut found = vec![false; 3];
    assert_eq!(mla3.batch_exists(&refs(&k), &mut found).unwrap().0, 3);
    assert_eq!(pp1.batch_exists(&refs(&k), &mut found).unwrap().0, 0);
    let stored: bool = redis::cmd("EXISTS").arg("hicache:ds:mla:x-0000").query(&mut server.redis()).unwrap();
    assert!(stored);
}

#[test]
fn stats_and_clear_survive_a_killed_control_connection() {
    let server = Server::start(&[]);
    let store = open(settings(server.port, "m"));
    store.stats().unwrap();
    let _: u64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal").query(&mut server.redis()).unwrap();
    assert_eq!(store.stats().unwrap().server.model_keys, 0);
    let _: u64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal").query(&mut server.redis()).unwrap();
    assert_eq!(store.clear().unwrap(), 0);
}
