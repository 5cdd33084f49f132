//! Faults no real server produces on demand, from a scripted fake RESP server
//! (tests/common/fake.rs), through the public API: a reply torn mid-payload, a reply that stalls
//! mid-payload, a reply sent twice, malformed replies. What batch_get reports must be true of
//! the caller's segments, bounded in time, and never taken from another request's reply.

mod common;

use common::fake::{self, Cmd, Fake, Memory, Step};
use common::{open, page};
use hicache_valkey::{ErrorKind, Outcome, ReadTargets, Result, Settings, Store};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The value-format fingerprint of every store here.
const FORMAT: u64 = 0x5eed_f00d_0000_0001;
/// Payload bytes of a page (small: request timeouts grow with bytes moved, 1 s per 64 MiB).
const LEN: usize = 64 << 10;
/// What an untouched buffer holds.
const UNTOUCHED: u8 = 0xEE;

fn settings(port: u16) -> Settings {
    Settings {
        value_format: FORMAT,
        checksum: Some(false),
        connections: Some(1),
        connect_timeout_ms: Some(2000),
        io_timeout_ms: Some(2000),
        ..common::settings(port, "faults")
    }
}

fn set_one(store: &Store, key: &str, payload: &[u8]) -> Outcome {
    common::set_segments(store, &[key.as_bytes().to_vec()], &[vec![payload]])[0]
}

/// batch_get of one key into `buf` (as two segments, so a payload is scattered).
fn get_one(store: &Store, key: &str, buf: &mut [u8]) -> Result<Outcome> {
    let (a, b) = buf.split_at_mut(buf.len() / 3);
    let mut targets = ReadTargets::with_capacity(1, 2);
    targets.push_value([a, b]);
    let mut out = [Outcome::Ok];
    store.batch_get(&[key.as_bytes()], &mut targets, &mut out)?;
    Ok(out[0])
}

fn untouched(buf: &[u8]) -> bool {
    buf.iter().all(|b| *b == UNTOUCHED)
}

/// A GET reply cut after half the payload, then the connection is closed; the retry on a new
/// connection finds the key gone. Half the caller's segments were overwritten, so the key must
/// not be reported as a MISS (which promises untouched segments): it is a failure.
#[test]
fn torn_payload_then_a_miss_on_retry_is_a_failure_not_a_miss() {
    let data = page(1, LEN);
    let memory = Arc::new(Memory::default());
    let gets = Arc::new(AtomicUsize::new(0));
    let fake = Fake::start({
        let (data, memory, gets) = (data.clone(), memory.clone(), gets.clone());
        move |cmd: &Cmd| match cmd.name().as_str() {
            "GET" if cmd.key_is("torn-page") => match gets.fetch_add(1, SeqCst) {
                0 => vec![Step::Send(fake::torn_get_reply(&data, FORMAT, LEN / 2)), Step::Close],
                _ => vec![Step::Send(fake::NIL.to_vec())],
            },
            _ => memory.answer(cmd),
        }
    });
    let store = open(settings(fake.port));
    // The torn reply starts with the very bytes the store writes for this page.
    assert_eq!(set_one(&store, "torn-page", &data), Outcome::Ok);
    assert_eq!(memory.get("torn-page").expect("stored in the fake"), fake::stored_value(&data, FORMAT));

    let mut buf = vec![UNTOUCHED; LEN];
    let outcome = get_one(&store, "torn-page", &mut buf).expect("the call runs");
    let written = buf.iter().zip(&data).take_while(|(a, b)| a == b).count();
    eprintln!("torn reply: outcome {outcome:?}, {written} payload bytes in the segments, {} GETs", gets.load(SeqCst));
    assert_ne!(outcome, Outcome::Miss, "a MISS promises untouched segments, but {written} bytes of them were overwritten");
    assert!(matches!(outcome, Outcome::IoError | Outcome::Timeout), "expected IoError or Timeout, got {outcome:?}");
    assert!(!outcome.segments_untouched(), "{outcome:?} promises untouched segments");
}

/// A GET reply that stops after half the payload and stays silent (connection open): the key
/// times out after io_timeout, not later, and is not a MISS.
#[test]
fn payload_stalled_midway_is_a_timeout_within_the_timeout() {
    let data = page(2, LEN);
    let fake = Fake::start({
        let data = data.clone();
        move |cmd: &Cmd| match cmd.name().as_str() {
            "GET" => vec![Step::Send(fake::torn_get_reply(&data, FORMAT, LEN / 2)), Step::Stall],
            _ => vec![Step::Send(fake::ok())],
        }
    });
    let timeout = Duration::from_millis(300);
    let store = open(Settings { io_timeout_ms: Some(300), connect_timeout_ms: Some(300), ..settings(fake.port) });
    let mut buf = vec![UNTOUCHED; LEN];
    let started = Instant::now();
    let outcome = get_one(&store, "stalled-page", &mut buf).expect("the call runs");
    let took = started.elapsed();
    eprintln!("stalled reply: outcome {outcome:?} after {took:?}");
    assert_eq!(outcome, Outcome::Timeout, "a reply stalled mid-payload is a timeout");
    assert!(!outcome.segments_untouched());
    assert!(took >= timeout.mul_f64(0.9), "gave up after {took:?}, before the {timeout:?} timeout");
    assert!(took < timeout * 2, "took {took:?} with a {timeout:?} timeout");
}

/// The first connection sends half a payload, waits almost the whole timeout and closes; the
/// retry on a new connection stalls mid-payload. The documented bound holds for the whole call,
/// retry included: io_timeout + connect_timeout + a margin, not two timeouts.
#[test]
fn a_retried_lane_stays_within_one_deadline() {
    let data = page(3, LEN);
    let gets = Arc::new(AtomicUsize::new(0));
    let (io, connect, margin) = (Duration::from_millis(400), Duration::from_millis(100), Duration::from_millis(100));
    let fake = Fake::start({
        let (data, gets) = (data.clone(), gets.clone());
        move |cmd: &Cmd| match cmd.name().as_str() {
            "GET" => match gets.fetch_add(1, SeqCst) {
                0 => vec![
                    Step::Send(fake::torn_get_reply(&data, FORMAT, LEN / 2)),
                    Step::Sleep(Duration::from_millis(350)),
                    Step::Close,
                ],
                _ => vec![Step::Send(fake::torn_get_reply(&data, FORMAT, LEN / 2)), Step::Stall],
            },
            _ => vec![Step::Send(fake::ok())],
        }
    });
    let store = open(Settings {
        io_timeout_ms: Some(io.as_millis() as i64),
        connect_timeout_ms: Some(connect.as_millis() as i64),
        ..settings(fake.port)
    });
    let mut buf = vec![UNTOUCHED; LEN];
    let started = Instant::now();
    let outcome = get_one(&store, "retried-page", &mut buf).expect("the call runs");
    let took = started.elapsed();
    let tries = gets.load(SeqCst);
    eprintln!("torn, then stalled on retry: outcome {outcome:?} after {took:?}, {tries} GETs");
    assert!(took < io + connect + margin, "the call took {took:?}: more than io_timeout {io:?} + connect_timeout {connect:?} + {margin:?} (the retry got a deadline of its own?)");
    match tries {
        1 => assert!(outcome.is_failure() && !outcome.segments_untouched(), "not retried: {outcome:?}"),
        _ => assert_eq!(outcome, Outcome::Timeout, "the retry stalled mid-payload"),
    }
}

/// The server answers one GET twice (the second copy carries another key's bytes). The extra
/// reply must never be taken as the answer to the next request: a connection with unread bytes
/// does not go back to the pool.
#[test]
fn a_duplicate_reply_is_never_read_as_the_next_answer() {
    // Small pages: both copies fit in the socket's first receive window, so the duplicate is
    // in the client's socket by the time the first call is done with the connection.
    const SMALL: usize = 4096;
    let (a, b) = (page(4, SMALL), page(5, SMALL));
    let answered = Arc::new(AtomicUsize::new(0));
    let fake = Fake::start({
        let (a, b, answered) = (a.clone(), b.clone(), answered.clone());
        move |cmd: &Cmd| match cmd.name().as_str() {
            "GET" if cmd.key_is("dup-present") => {
                let mut reply = fake::get_reply(&a, FORMAT);
                if answered.fetch_add(1, SeqCst) == 0 {
                    reply.extend(fake::get_reply(&b, FORMAT));
                }
                vec![Step::Send(reply)]
            }
            "GET" => vec![Step::Send(fake::NIL.to_vec())],
            _ => vec![Step::Send(fake::ok())],
        }
    });
    let store = open(settings(fake.port));
    let mut buf = vec![UNTOUCHED; SMALL];
    assert_eq!(get_one(&store, "dup-present", &mut buf).unwrap(), Outcome::Ok);
    assert!(buf == a, "the first reply is the key's");

    let mut buf = vec![UNTOUCHED; SMALL];
    let outcome = get_one(&store, "dup-absent", &mut buf).unwrap();
    let others = if buf == b { " (the bytes of the duplicate reply, another key's value)" } else { "" };
    assert_eq!(outcome, Outcome::Miss, "an absent key was answered by a stale reply{others}");
    assert!(untouched(&buf), "a MISS left the segments written{others}");
    // And the handle goes on answering correctly.
    let mut buf = vec![UNTOUCHED; SMALL];
    assert_eq!(get_one(&store, "dup-present", &mut buf).unwrap(), Outcome::Ok);
    assert!(buf == a);
}

/// Malformed replies (an unknown type byte, a bulk length of -5, non-numeric lengths and
/// integers) give per-key failures or a protocol error, never a panic, a hit or a MISS; the
/// handle then works on a good connection.
#[test]
fn garbage_replies_fail_cleanly_and_the_handle_recovers() {
    const GET_GARBAGE: &[(&str, &[u8])] = &[
        ("garbage-type", b"&what is this\r\n"),
        ("garbage-negative-length", b"$-5\r\n"),
        ("garbage-length-text", b"$12ab\r\n"),
        ("garbage-length-overflow", b"$99999999999999999999999\r\n"),
        ("garbage-int-for-get", b":1x\r\n"),
        ("garbage-empty-line", b"\r\n"),
    ];
    const EXISTS_GARBAGE: &[(&str, &[u8])] =
        &[("garbage-exists-int", b":12ab\r\n"), ("garbage-exists-type", b"&\r\n"), ("garbage-exists-bulk", b"$-5\r\n")];
    let memory = Arc::new(Memory::default());
    let fake = Fake::start({
        let memory = memory.clone();
        move |cmd: &Cmd| {
            let table = if cmd.name() == "EXISTS" { EXISTS_GARBAGE } else { GET_GARBAGE };
            match table.iter().find(|(k, _)| cmd.key_is(k)) {
                Some((_, garbage)) => vec![Step::Send(garbage.to_vec())],
                None => memory.answer(cmd),
            }
        }
    });
    let store = open(settings(fake.port));
    let good = page(6, LEN);
    assert_eq!(set_one(&store, "good-page", &good), Outcome::Ok);
    let check_good = |after: &str| {
        let mut buf = vec![UNTOUCHED; LEN];
        assert_eq!(get_one(&store, "good-page", &mut buf).unwrap(), Outcome::Ok, "after {after}");
        assert!(buf == good, "after {after}: wrong bytes");
        let mut found = [false; 2];
        let (lead, _) = store.batch_exists(&[b"good-page", b"absent-page"], &mut found).unwrap();
        assert_eq!((lead, found), (1, [true, false]), "after {after}");
    };

    for (key, garbage) in GET_GARBAGE {
        let shown = String::from_utf8_lossy(garbage);
        let mut buf = vec![UNTOUCHED; LEN];
        match get_one(&store, key, &mut buf) {
            Ok(o) => assert!(o.is_failure(), "GET answered {shown:?}: outcome {o:?}, expected a failure"),
            Err(e) => assert_eq!(e.kind(), ErrorKind::Protocol, "GET answered {shown:?}: {e}"),
        }
        check_good(&format!("GET answered {shown:?}"));
    }
    for (key, garbage) in EXISTS_GARBAGE {
        let shown = String::from_utf8_lossy(garbage);
        let mut found = [true; 2];
        match store.batch_exists(&[key.as_bytes(), b"good-page"], &mut found) {
            Ok((lead, report)) => {
                assert!(!found[0] && lead == 0, "EXISTS answered {shown:?}: found {found:?}");
                assert!(report.failed >= 1 && report.first_error.is_some(), "EXISTS answered {shown:?}: no failure reported");
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::Protocol, "EXISTS answered {shown:?}: {e}"),
        }
        check_good(&format!("EXISTS answered {shown:?}"));
    }
}

/// A batch_get of large values reads over two connections (keys dealt in turn); the one carrying
/// the third key is closed before its reply. The lane goes on from that key on two new
/// connections: every key arrives whole, and the keys before it are not asked again.
#[test]
fn a_fanned_lane_that_loses_a_connection_goes_on_from_the_first_unanswered_key() {
    const BIG: usize = 3 << 20;
    let memory = Arc::new(Memory::default());
    let closed = Arc::new(AtomicUsize::new(0));
    let fake = Fake::start({
        let (memory, closed) = (memory.clone(), closed.clone());
        move |cmd: &Cmd| {
            if cmd.name() == "GET" && cmd.key_is("fan-0002") && closed.fetch_add(1, SeqCst) == 0 {
                return vec![Step::Close];
            }
            memory.answer(cmd)
        }
    });
    let store = open(settings(fake.port));
    let keys = common::keys(4, "fan");
    let pages: Vec<Vec<u8>> = (0..4).map(|i| page(10 + i, BIG)).collect();
    assert!(common::set(&store, &keys, &pages).iter().all(|o| *o == Outcome::Ok));
    let before = fake.connections();
    let mut bufs = vec![vec![UNTOUCHED; BIG]; 4];
    let out = common::get(&store, &keys, &mut bufs);
    assert_eq!(out, [Outcome::Ok; 4]);
    assert!(bufs == pages, "wrong bytes");
    let asked: Vec<String> = fake.commands().iter().filter(|c| c.name() == "GET").map(|c| String::from_utf8_lossy(c.key()).into_owned()).collect();
    let times = |k: &str| asked.iter().filter(|a| a.ends_with(k)).count();
    assert_eq!((times("fan-0000"), times("fan-0001"), times("fan-0002"), times("fan-0003")), (1, 1, 2, 2), "GETs: {asked:?}");
    assert!(fake.connections() - before >= 3, "{} connections made for the call", fake.connections() - before);
}
