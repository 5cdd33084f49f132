//! Issue 8's fault paths against real servers: control operations bounded by their timeout, a
//! minimal ACL user, oversize values rejected per key, Unix sockets.

mod common;

use common::{get, keys, refs, set, try_set, Server};
use hicache_valkey::{ErrorKind, Outcome, Settings, Store};
use std::time::{Duration, Instant};

fn settings(port: u16) -> Settings {
    common::settings(port, "hard")
}

/// Pages `p-0000`, `p-0001`... of `size` bytes.
fn set_pages(store: &Store, n: usize, size: usize) -> Vec<Outcome> {
    let pages: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; size]).collect();
    set(store, &keys(n, "p"), &pages)
}

/// `clear` and `stats` on a server that stopped serving writes (CLIENT PAUSE WRITE) fail within
/// about one request timeout, not keys-per-page × the timeout (0.1 waited 20 s for 100 keys at
/// 200 ms).
#[test]
fn control_operations_on_a_stalled_server_end_within_their_timeout() {
    let server = Server::start(&[]);
    let mut s = settings(server.port);
    s.io_timeout_ms = Some(300);
    let store = Store::open(s.resolve().unwrap()).unwrap();
    assert!(set_pages(&store, 100, 1000).iter().all(|o| *o == Outcome::Ok));
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(20_000).arg("WRITE").query(&mut server.redis()).unwrap();
    let started = Instant::now();
    let e = store.clear().expect_err("UNLINK cannot run while writes are paused");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(started.elapsed() < Duration::from_millis(1500), "clear took {:?}", started.elapsed());
    // Reads still work, and stats do not queue behind the failed clear.
    let started = Instant::now();
    assert_eq!(store.stats().unwrap().server.model_keys, 100);
    assert!(started.elapsed() < Duration::from_millis(1500));
    let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut server.redis()).unwrap();
    assert_eq!(store.clear().unwrap(), 100);
}

/// The minimal ACL the README documents is enough for everything, though it lacks
/// `client|setname` and `config|get`; a missing grant is a PERMISSION error naming the command.
#[test]
fn the_documented_minimal_acl_user_can_do_everything() {
    let server = Server::start(&[]);
    let acl = ["ACL", "SETUSER", "hicache", "on", ">s3cret", "resetkeys", "~hicache:*", "-@all", "+get", "+set", "+exists", "+ping", "+info", "+dbsize", "+scan", "+unlink", "+cluster|slots", "+asking"];
    let _: () = redis::cmd(acl[0]).arg(&acl[1..]).query(&mut server.redis()).unwrap();
    let mut s = settings(server.port);
    s.username = Some("hicache".into());
    s.password = Some("s3cret".into());
    let store = Store::open(s.clone().resolve().unwrap()).expect("connects without CLIENT SETNAME rights");
    assert!(set_pages(&store, 4, 1000).iter().all(|o| *o == Outcome::Ok));
    let mut found = [false; 4];
    assert_eq!(store.batch_exists(&refs(&keys(4, "p")), &mut found).unwrap().0, 4);
    assert_eq!(store.stats().unwrap().server.model_keys, 4);
    store.ping().unwrap();
    assert_eq!(store.clear().unwrap(), 4);
    // Take INFO away: stats fail as a permission problem that names the command.
    let _: () = redis::cmd("ACL").arg(&["SETUSER", "hicache", "-info"][..]).query(&mut server.redis()).unwrap();
    let e = Store::open(s.resolve().unwrap()).unwrap().stats().expect_err("no INFO");
    assert_eq!(e.kind(), ErrorKind::Permission, "{e}");
    assert!(e.message().to_lowercase().contains("info"), "{e}");
}

/// A value over the server's proto-max-bulk-len is rejected before sending, with its own
/// outcome; the rest of the batch is stored (0.1 had the server drop the connection and lost
/// every later key of the lane).
#[test]
fn an_oversize_value_fails_alone() {
    let server = Server::start(&["--proto-max-bulk-len", "1mb"]);
    let store = Store::open(settings(server.port).resolve().unwrap()).unwrap();
    let k = keys(3, "big");
    let pages = [vec![1u8; 1000], vec![2u8; 2 << 20], vec![3u8; 1000]];
    let mut out = vec![Outcome::Miss; 3];
    let report = try_set(&store, &k, &pages, &mut out).unwrap();
    assert_eq!(out, [Outcome::Ok, Outcome::TooLarge, Outcome::Ok]);
    assert!(report.first_error.unwrap().message().contains("proto-max-bulk-len"));
    let mut bufs = [vec![0u8; 1000], vec![0u8; 2 << 20], vec![0u8; 1000]];
    let out = get(&store, &k, &mut bufs);
    assert_eq!(out, [Outcome::Ok, Outcome::Miss, Outcome::Ok]);
    assert_eq!((bufs[0][0], bufs[2][999]), (1, 3));
}

/// Pages round-trip over a Unix domain socket (`unix://` URL and the socket setting).
#[test]
fn unix_socket_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("valkey.sock");
    let sock = sock.to_str().unwrap();
    let _server = Server::start(&["--unixsocket", sock, "--unixsocketperm", "700"]);
    for s in [
        Settings { url: Some(format!("unix://{sock}")), model_name: Some("uds".into()), ..Default::default() },
        Settings { socket: Some(sock.to_string()), model_name: Some("uds".into()), ..Default::default() },
    ] {
        let store = Store::open(s.resolve().unwrap()).unwrap();
        assert_eq!(store.config().server(), format!("unix:{sock}"));
        assert!(set_pages(&store, 8, 256 << 10).iter().all(|o| *o == Outcome::Ok));
        assert_eq!(store.stats().unwrap().server.model_keys, 8);
        assert_eq!(store.clear().unwrap(), 8);
    }
}
