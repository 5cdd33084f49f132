//! Impossible sizes at the C boundary: a batch of n = 2^61 keys, a value of 2^60 segments. The
//! arrays are small real ones, so the library must reject the call before it touches (or sizes
//! an allocation by) them: HICACHE_STATUS_INVALID_ARGUMENT with a message, outputs untouched,
//! never an abort and never HICACHE_STATUS_PANIC; the handle works afterwards.
//!
//! Each check runs in a child process (this test binary, running only that test), so a
//! library that aborts fails the test with the signal instead of killing the whole test binary.

mod common;

use ::hicache_valkey::ffi::{
    hicache_key, hicache_segment, hicache_status, hicache_valkey, hicache_valkey_batch_exists, hicache_valkey_batch_get,
    hicache_valkey_batch_set, hicache_valkey_close, hicache_value,
};
use common::c_last_error as last_error;
use common::fake::{Cmd, Fake, Memory};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHILD: &str = "HICACHE_FFI_LIMITS_CHILD";
const PASSED: &str = "ffi_limits child passed: ";
/// The most a child may take.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);
/// n of the batches: 2^61 keys of 16 bytes is 2^65 bytes, more than any address space.
const HUGE_N: usize = 1 << 61;
/// Segments of one value: 2^60 segments of 16 bytes is 2^64 bytes.
const HUGE_SEGMENTS: usize = 1 << 60;
/// What the output slots hold before the call; they must still hold it after.
const SENTINEL: i32 = -77;

/// Runs `body` in a child process when not in one already; fails unless the child ran it to the
/// end (an abort, a signal, a panic or a failed assertion in the child all fail the test).
fn in_child(name: &str, body: impl FnOnce()) {
    if std::env::var(CHILD).as_deref() == Ok(name) {
        body();
        println!("{PASSED}{name}");
        return;
    }
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, name)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if started.elapsed() > CHILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name}: the child did not finish within {CHILD_TIMEOUT:?} (killed)");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let how = match status.signal() {
        Some(6) => "killed by SIGABRT (the library aborted the process)".to_string(),
        Some(s) => format!("killed by signal {s}"),
        None => format!("exit status {}", status.code().unwrap_or(-1)),
    };
    assert!(
        status.success() && out.contains(&format!("{PASSED}{name}")),
        "{name}: the child failed: {how}\n--- child stdout ---\n{out}\n--- child stderr ---\n{err}"
    );
}

/// A handle on a fake server that stores what it is sent (no real server needed: nothing of
/// these calls should reach the network).
fn open() -> (Fake, *mut hicache_valkey) {
    let memory = Arc::new(Memory::default());
    let fake = Fake::start(move |cmd: &Cmd| memory.answer(cmd));
    let h = common::c_open(fake.port, Some(c"ffi-limits"), |o| o.connections = 1);
    (fake, h)
}

fn key(s: &'static [u8]) -> hicache_key {
    hicache_key { ptr: s.as_ptr(), len: s.len() }
}

/// Two keys and two one-segment values over `bufs`.
struct Batch {
    keys: [hicache_key; 2],
    segs: [hicache_segment; 2],
    bufs: [Vec<u8>; 2],
}

impl Batch {
    fn new() -> Box<Batch> {
        let mut b = Box::new(Batch {
            keys: [key(b"limit-0"), key(b"limit-1")],
            segs: [hicache_segment { ptr: std::ptr::null_mut(), len: 0 }; 2],
            bufs: [vec![1u8; 100], vec![2u8; 100]],
        });
        for i in 0..2 {
            b.segs[i] = hicache_segment { ptr: b.bufs[i].as_mut_ptr().cast(), len: b.bufs[i].len() };
        }
        b
    }

    fn values(&self) -> [hicache_value; 2] {
        [0, 1].map(|i| hicache_value { segments: &self.segs[i], count: 1 })
    }
}

/// The handle still works: two values stored and read back.
fn round_trip(h: *mut hicache_valkey) {
    let mut b = Batch::new();
    let values = b.values();
    let mut out = [SENTINEL; 2];
    // SAFETY: every pointer is valid for the n = 2 items passed.
    unsafe {
        assert_eq!(hicache_valkey_batch_set(h, b.keys.as_ptr(), values.as_ptr(), 2, out.as_mut_ptr()), hicache_status::Ok);
        assert_eq!(out, [0, 0], "{}", last_error());
        b.bufs.iter_mut().for_each(|v| v.fill(0));
        assert_eq!(hicache_valkey_batch_get(h, b.keys.as_ptr(), values.as_ptr(), 2, out.as_mut_ptr()), hicache_status::Ok);
        assert_eq!(out, [0, 0], "{}", last_error());
    }
    assert!(b.bufs[0].iter().all(|x| *x == 1) && b.bufs[1].iter().all(|x| *x == 2));
}

fn assert_rejected(status: hicache_status, what: &str) {
    let message = last_error();
    assert_eq!(status, hicache_status::InvalidArgument, "{what}: {message}");
    assert!(!message.is_empty(), "{what}: INVALID_ARGUMENT without a message");
    eprintln!("{what}: {status:?}: {message}");
}

#[test]
fn batch_get_of_2_pow_61_keys_is_an_invalid_argument() {
    in_child("batch_get_of_2_pow_61_keys_is_an_invalid_argument", || {
        let (_fake, h) = open();
        let b = Batch::new();
        let values = b.values();
        let mut out = [SENTINEL; 2];
        // SAFETY: the arrays hold 2 items; the library must not read past them for an n it rejects.
        let st = unsafe { hicache_valkey_batch_get(h, b.keys.as_ptr(), values.as_ptr(), HUGE_N, out.as_mut_ptr()) };
        assert_rejected(st, "batch_get with n = 2^61");
        assert_eq!(out, [SENTINEL; 2], "outcomes written");
        round_trip(h);
        unsafe { hicache_valkey_close(h) };
    });
}

#[test]
fn batch_set_of_2_pow_61_keys_is_an_invalid_argument() {
    in_child("batch_set_of_2_pow_61_keys_is_an_invalid_argument", || {
        let (_fake, h) = open();
        let b = Batch::new();
        let values = b.values();
        let mut out = [SENTINEL; 2];
        // SAFETY: as above.
        let st = unsafe { hicache_valkey_batch_set(h, b.keys.as_ptr(), values.as_ptr(), HUGE_N, out.as_mut_ptr()) };
        assert_rejected(st, "batch_set with n = 2^61");
        assert_eq!(out, [SENTINEL; 2], "outcomes written");
        round_trip(h);
        unsafe { hicache_valkey_close(h) };
    });
}

#[test]
fn batch_exists_of_2_pow_61_keys_is_an_invalid_argument() {
    in_child("batch_exists_of_2_pow_61_keys_is_an_invalid_argument", || {
        let (_fake, h) = open();
        let b = Batch::new();
        let mut found = [0xEEu8; 2];
        let mut lead = 0usize;
        // SAFETY: as above.
        let st = unsafe { hicache_valkey_batch_exists(h, b.keys.as_ptr(), HUGE_N, found.as_mut_ptr(), &mut lead) };
        assert_rejected(st, "batch_exists with n = 2^61");
        assert_eq!(found, [0xEE; 2], "found written");
        round_trip(h);
        unsafe { hicache_valkey_close(h) };
    });
}

#[test]
fn batch_set_of_a_value_of_2_pow_60_segments_is_an_invalid_argument() {
    in_child("batch_set_of_a_value_of_2_pow_60_segments_is_an_invalid_argument", || {
        let (_fake, h) = open();
        let b = Batch::new();
        let value = hicache_value { segments: b.segs.as_ptr(), count: HUGE_SEGMENTS };
        let mut out = [SENTINEL];
        // SAFETY: the segment array holds 2 items; the library must reject the count first.
        let st = unsafe { hicache_valkey_batch_set(h, b.keys.as_ptr(), &value, 1, out.as_mut_ptr()) };
        assert_rejected(st, "batch_set of a value of 2^60 segments");
        assert_eq!(out, [SENTINEL], "outcomes written");
        round_trip(h);
        unsafe { hicache_valkey_close(h) };
    });
}

#[test]
fn batch_get_of_a_value_of_2_pow_60_segments_is_an_invalid_argument() {
    in_child("batch_get_of_a_value_of_2_pow_60_segments_is_an_invalid_argument", || {
        let (_fake, h) = open();
        let b = Batch::new();
        let value = hicache_value { segments: b.segs.as_ptr(), count: HUGE_SEGMENTS };
        let mut out = [SENTINEL];
        // SAFETY: as above.
        let st = unsafe { hicache_valkey_batch_get(h, b.keys.as_ptr(), &value, 1, out.as_mut_ptr()) };
        assert_rejected(st, "batch_get of a value of 2^60 segments");
        assert_eq!(out, [SENTINEL], "outcomes written");
        assert!(b.bufs[0].iter().all(|x| *x == 1), "segments written");
        round_trip(h);
        unsafe { hicache_valkey_close(h) };
    });
}
