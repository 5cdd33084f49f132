//! TLS against real valkey-servers started here with a throwaway PKI: round trips (data and
//! control paths), mutual TLS, each certificate error with its own message, a plaintext client on
//! a TLS port and a TLS client on a plaintext port (both answered fast), a restart, and a 3-primary
//! cluster over TLS resharded behind the handle's back.

mod common;
#[path = "common/tls.rs"]
mod pki;

use common::{keys, page, refs, settings};
use pki::{Pki, TlsCluster, TlsServer};
use hicache_valkey::{ErrorKind, Outcome, Settings, Store};
use std::time::{Duration, Instant};

fn tls_settings(pki: &Pki, port: u16) -> Settings {
    Settings { tls: Some(true), tls_ca_cert: Some(pki.path("ca.crt")), ..settings(port, "tls/model") }
}

fn open_err(s: Settings) -> hicache_valkey::Error {
    match Store::open(s.resolve().unwrap()) {
        Ok(_) => panic!("the handle opened"),
        Err(e) => e,
    }
}

/// Writes and reads back `n` pages of sizes from 1 byte to 1 MiB; exists, stats and clear too.
fn round_trip(store: &Store, n: usize) {
    let keys = keys(n, "tls");
    let sizes = [1usize, 100, 4096, 16 << 10, 16 << 10 | 1, 64 << 10, 200_000, 1 << 20];
    let pages: Vec<Vec<u8>> = (0..n).map(|i| page(i, sizes[i % sizes.len()])).collect();
    assert!(common::set(store, &keys, &pages).iter().all(|o| *o == Outcome::Ok));
    let mut bufs: Vec<Vec<u8>> = pages.iter().map(|p| vec![0u8; p.len()]).collect();
    let out = common::get(store, &keys, &mut bufs);
    assert!(out.iter().all(|o| *o == Outcome::Ok), "{out:?}");
    assert!(bufs == pages, "pages read back differ");
    let mut found = vec![false; n];
    assert_eq!(store.batch_exists(&refs(&keys), &mut found).unwrap().0, n);
    assert_eq!(store.stats().unwrap().server.model_keys, n as u64);
    assert_eq!(store.clear().unwrap(), n as u64);
}

#[test]
fn round_trip_over_tls_by_ip_and_by_name() {
    let pki = Pki::new();
    let s = TlsServer::start(&pki, "server", false, &[]);
    round_trip(&common::open(tls_settings(&pki, s.tls_port)), 40);
    // The same through a valkeys:// URL naming localhost.
    let url = Settings { url: Some(format!("valkeys://localhost:{}", s.tls_port)), tls_ca_cert: Some(pki.path("ca.crt")), model_name: Some("tls/url".into()), ..Default::default() };
    round_trip(&common::open(url), 16);
}

#[test]
fn large_batches_over_several_connections() {
    let pki = Pki::new();
    let s = TlsServer::start(&pki, "server", false, &[]);
    let store = common::open(Settings { connections: Some(4), ..tls_settings(&pki, s.tls_port) });
    let keys = keys(64, "big");
    let pages: Vec<Vec<u8>> = (0..64).map(|i| page(i, 256 << 10)).collect();
    assert!(common::set(&store, &keys, &pages).iter().all(|o| *o == Outcome::Ok));
    let mut bufs = vec![vec![0u8; 256 << 10]; 64];
    assert!(common::get(&store, &keys, &mut bufs).iter().all(|o| *o == Outcome::Ok));
    assert!(bufs == pages);
    // Pooled TLS connections are reused (session tickets read while idle do not count as unread).
    for _ in 0..3 {
        assert!(common::get(&store, &keys[..8], &mut bufs[..8]).iter().all(|o| *o == Outcome::Ok));
    }
}

#[test]
fn mutual_tls_required_and_given_or_not() {
    let pki = Pki::new();
    let s = TlsServer::start(&pki, "server", true, &[]);
    let with_cert = Settings { tls_cert: Some(pki.path("client.crt")), tls_key: Some(pki.path("client.key")), ..tls_settings(&pki, s.tls_port) };
    round_trip(&common::open(with_cert), 16);
    let started = Instant::now();
    let e = open_err(tls_settings(&pki, s.tls_port));
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
    assert!(e.message().contains("requires a client certificate"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    // A client certificate the server's CA did not sign.
    let rogue = Settings { tls_cert: Some(pki.path("rogue.crt")), tls_key: Some(pki.path("rogue.key")), ..tls_settings(&pki, s.tls_port) };
    let e = open_err(rogue);
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
    assert!(e.message().contains("rejected our client certificate"), "{e}");
}

#[test]
fn certificate_errors_have_their_own_messages() {
    let pki = Pki::new();
    for (cert, expect) in [("rogue", "is not trusted"), ("wrongname", "is not valid for the name '127.0.0.1'"), ("expired", "has expired")] {
        let s = TlsServer::start(&pki, cert, false, &[]);
        let e = open_err(tls_settings(&pki, s.tls_port));
        assert_eq!(e.kind(), ErrorKind::Tls, "{cert}: {e}");
        assert!(e.message().contains(expect), "{cert}: {e}");
        assert!(e.message().contains(&format!("127.0.0.1:{}", s.tls_port)), "{cert}: {e}");
        if cert == "wrongname" {
            // Verifying another name, as when connecting by IP to a server known by name.
            let named = Settings { tls_server_name: Some("wrong.example".into()), ..tls_settings(&pki, s.tls_port) };
            round_trip(&common::open(named), 4);
        }
        if cert == "rogue" {
            // Only when explicitly told to (and logged as insecure).
            let insecure = Settings { tls_insecure_skip_verify: Some(true), ..tls_settings(&pki, s.tls_port) };
            round_trip(&common::open(insecure), 4);
        }
    }
}

#[test]
fn plaintext_against_tls_and_tls_against_plaintext_are_answered_fast() {
    let pki = Pki::new();
    let s = TlsServer::start(&pki, "server", false, &[]);
    let slow = Duration::from_secs(5);
    let started = Instant::now();
    let e = open_err(Settings { connect_timeout_ms: Some(5000), ..settings(s.tls_port, "m") });
    assert!(started.elapsed() < Duration::from_secs(2), "plaintext on a TLS port took {:?}: {e}", started.elapsed());
    assert!(e.message().contains("TLS port") && e.message().contains("valkeys://"), "{e}");
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
    let started = Instant::now();
    let e = open_err(Settings { connect_timeout_ms: Some(slow.as_millis() as i64), ..tls_settings(&pki, s.server.port) });
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
    assert!(e.message().contains("plaintext port") || e.message().contains("not a TLS port"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2), "TLS on a plaintext port took {:?}: {e}", started.elapsed());
}

#[test]
fn unreadable_pem_files_are_named() {
    let pki = Pki::new();
    let s = TlsServer::start(&pki, "server", false, &[]);
    let missing = pki.path("missing-ca.pem");
    let e = open_err(Settings { tls_ca_cert: Some(missing.clone()), ..tls_settings(&pki, s.tls_port) });
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
    assert!(e.message().contains(&missing), "{e}");
    let garbage = pki.dir().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let garbage = garbage.to_str().unwrap().to_string();
    let e = open_err(Settings { tls_ca_cert: Some(garbage.clone()), ..tls_settings(&pki, s.tls_port) });
    assert!(e.message().contains(&garbage) && e.message().contains("no PEM certificate"), "{e}");
    let e = open_err(Settings { tls_cert: Some(pki.path("client.crt")), tls_key: Some(garbage.clone()), ..tls_settings(&pki, s.tls_port) });
    assert!(e.message().contains(&garbage) && e.message().contains("private key"), "{e}");
}

#[test]
fn a_restarted_tls_server_is_reconnected() {
    let pki = Pki::new();
    let mut s = TlsServer::start(&pki, "server", false, &[]);
    let store = common::open(tls_settings(&pki, s.tls_port));
    let keys = keys(8, "restart");
    let pages: Vec<Vec<u8>> = (0..8).map(|i| page(i, 50_000)).collect();
    assert!(common::set(&store, &keys, &pages).iter().all(|o| *o == Outcome::Ok));
    s.restart(&pki, "server", false);
    // The pooled connections died with the server: the handle reconnects (within a few calls).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut out = vec![Outcome::ServerError; 8];
        let pages: Vec<Vec<u8>> = (0..8).map(|i| page(i, 50_000)).collect();
        if common::try_set(&store, &keys, &pages, &mut out).is_ok() && out.iter().all(|o| *o == Outcome::Ok) {
            break;
        }
        assert!(Instant::now() < deadline, "no reconnect after the restart: {out:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut bufs = vec![vec![0u8; 50_000]; 8];
    assert!(common::get(&store, &keys, &mut bufs).iter().all(|o| *o == Outcome::Ok));
    assert!(bufs == pages);
}

#[test]
fn a_tls_cluster_is_followed_through_a_resharding() {
    let pki = Pki::new();
    let cluster = TlsCluster::start(&pki, 3);
    let store = common::open(Settings { model_name: Some("{c}/tls".into()), ..tls_settings(&pki, cluster.tls_ports[1]) });
    assert_eq!(store.cluster_primaries(), 3);
    let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("{i:064x}").into_bytes()).collect();
    let pages: Vec<Vec<u8>> = (0..200).map(|i| page(i, 20_000)).collect();
    assert!(common::set(&store, &keys, &pages).iter().all(|o| *o == Outcome::Ok));
    for i in 0..3 {
        assert!(cluster.dbsize(i) > 30, "node {i} holds {} keys", cluster.dbsize(i));
    }
    // Move all of node 0's slots to node 1 behind the handle's back (MIGRATE runs over TLS).
    let out = cluster
        .cli()
        .args(["--cluster", "reshard", &format!("127.0.0.1:{}", cluster.tls_ports[0])])
        .args(["--cluster-from", &cluster.id(0), "--cluster-to", &cluster.id(1), "--cluster-slots", "16384", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "reshard failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(cluster.dbsize(0), 0);
    let mut bufs = vec![vec![0u8; 20_000]; 200];
    let out = common::get(&store, &keys, &mut bufs);
    assert!(out.iter().all(|o| *o == Outcome::Ok), "{out:?}");
    assert!(bufs == pages);
    assert_eq!(store.cluster_primaries(), 2);
    assert_eq!(store.stats().unwrap().server.model_keys, 200);
    assert_eq!(store.clear().unwrap(), 200);
}
