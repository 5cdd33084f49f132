//! The pipelined SET / GET / EXISTS loops of one connection, bounded by bytes in flight.
//!
//! Each function handles keys `done..n` of its slice, records each key's [`Outcome`] as its reply
//! arrives, and on a connection failure returns the error with `done` telling how far it got, so
//! the caller can retry the rest on a fresh connection.

use crate::config::Config;
use crate::conn::Conn;
use crate::resp::{bulk_header_len, push_array_header, push_bulk, push_bulk_header, redirect, Redirect, Reply, ASKING};
use crate::error::{Error, Result};
use crate::format::{checksum, checksum_slices, Header, Rejection, HEADER_LEN};
use crate::Outcome;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Bytes queued before a vectored write is issued. Measured at steady state over loopback TCP,
/// 64 KiB pages, interleaved, medians of 16-20 figures: 256 KiB 3.1-3.3 GB/s, tight; 1 MiB
/// 2.0-2.8, swinging between about 1.9 and 3.1 from one connection to the next (512 KiB the same);
/// 128 KiB 3.0; 64 KiB 1.8. 16 KiB, 256 KiB and 1 MiB pages unchanged; Unix sockets no worse.
const FLUSH_BYTES: usize = 256 << 10;
/// Slices in one vectored write (Linux's IOV_MAX is 1024).
const MAX_IOV: usize = 1000;
/// EXISTS commands kept in flight.
const EXISTS_WINDOW: usize = 4096;

/// What one lane run ended with.
pub struct LaneError {
    /// The error that stopped the lane.
    pub error: Error,
    /// Keys before this index have their final outcome.
    pub done: usize,
    /// batch_get: payload bytes of key `done` had been written into its segments.
    pub torn: bool,
}

/// A server error reply for key `i`: the key's outcome and the message to report. A cluster
/// redirection is noted on the connection for the lane's caller to follow.
fn key_error(reply: &str, conn: &mut Conn, i: usize) -> (Outcome, Error) {
    match redirect(reply) {
        Some(Redirect::Moved) => conn.redirects.moved = true,
        Some(Redirect::Ask(to)) => conn.redirects.asks.push((i, to)),
        None => {}
    }
    let outcome = if reply.starts_with("OOM") { Outcome::OutOfMemory } else { Outcome::ServerError };
    let hint = if outcome == Outcome::OutOfMemory {
        " (maxmemory reached with a noeviction policy: raise maxmemory or use maxmemory-policy allkeys-lru)"
    } else {
        ""
    };
    (outcome, Error::from_server_reply(&format!("{reply}{hint}"), conn.server()))
}

/// Pieces of a vectored write: header bytes in an arena, value bytes borrowed from the caller.
struct WriteQueue<'a> {
    arena: Vec<u8>,
    pieces: Vec<Piece<'a>>,
    bytes: usize,
}

enum Piece<'a> {
    Arena(usize, usize),
    Borrowed(&'a [u8]),
}

impl<'a> WriteQueue<'a> {
    fn new() -> Self {
        WriteQueue { arena: Vec::with_capacity(4096), pieces: Vec::new(), bytes: 0 }
    }

    /// Marks the arena bytes written since the last mark as one piece.
    fn seal_arena(&mut self, from: usize) {
        if self.arena.len() > from {
            self.bytes += self.arena.len() - from;
            self.pieces.push(Piece::Arena(from, self.arena.len()));
        }
    }

    fn borrow(&mut self, bytes: &'a [u8]) {
        if !bytes.is_empty() {
            self.bytes += bytes.len();
            self.pieces.push(Piece::Borrowed(bytes));
        }
    }

    /// Queues `SET key value`, the value being `head` (our header) followed by `segments`:
    /// the RESP framing and `head` go into the arena, the segments are borrowed as they are.
    fn push_set(&mut self, asking: bool, key: &[&[u8]], head: &[u8], segments: &'a [IoSlice<'a>]) {
        let mark = self.arena.len();
        if asking {
            self.arena.extend_from_slice(ASKING);
        }
        push_array_header(&mut self.arena, 3);
        push_bulk(&mut self.arena, &[b"SET"]);
        push_bulk(&mut self.arena, key);
        let len = head.len() + segments.iter().map(|s| s.len()).sum::<usize>();
        push_bulk_header(&mut self.arena, len as u64);
        self.arena.extend_from_slice(head);
        self.seal_arena(mark);
        for seg in segments {
            self.borrow(seg);
        }
        let mark = self.arena.len();
        self.arena.extend_from_slice(b"\r\n");
        self.seal_arena(mark);
    }

    fn wants_flush(&self) -> bool {
        self.bytes >= FLUSH_BYTES || self.pieces.len() >= MAX_IOV
    }

    fn flush(&mut self, conn: &mut Conn) -> Result<()> {
        for chunk in self.pieces.chunks(MAX_IOV) {
            let mut iov: Vec<IoSlice<'_>> = chunk
                .iter()
                .map(|p| match *p {
                    Piece::Arena(s, e) => IoSlice::new(&self.arena[s..e]),
                    Piece::Borrowed(b) => IoSlice::new(b),
                })
                .collect();
            conn.write_all(&mut iov)?;
        }
        self.arena.clear();
        self.pieces.clear();
        self.bytes = 0;
        Ok(())
    }
}

/// Keys batch_set did not write because they were already stored (`skip_existing`).
#[derive(Default)]
pub struct Skipped {
    pub pages: AtomicU64,
    pub bytes: AtomicU64,
}

/// What a batch_set lane shares with the rest of the store.
pub struct SetShared<'a> {
    /// Keys not to send (`skip_existing`); empty when none are skipped.
    pub skip: &'a [bool],
    pub skipped: &'a Skipped,
    /// Latency-sensitive calls (batch_exists, small batch_get) running now on this store.
    pub urgent: &'a AtomicUsize,
}

/// Longest a bulk write waits for latency-sensitive calls of the same store before it goes on.
const YIELD_MAX: std::time::Duration = std::time::Duration::from_millis(3);

/// Before a bulk write: while a latency-sensitive call of the same store is running, hold the
/// next bytes back (at most [`YIELD_MAX`]), so the server and the cores serve that call first
/// instead of queueing it behind megabytes of values.
fn yield_to_urgent(urgent: &AtomicUsize) {
    if urgent.load(Relaxed) == 0 {
        return;
    }
    let until = std::time::Instant::now() + YIELD_MAX;
    while urgent.load(Relaxed) > 0 && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_micros(20));
    }
}

/// How long [`probe`] polls for its answers, when its lane may poll at all.
const PROBE_SPIN: std::time::Duration = std::time::Duration::from_micros(300);

/// GETRANGE commands kept in flight by [`probe`].
const PROBE_WINDOW: usize = 1024;

/// `GETRANGE prefix+key 0 31` for keys `done..`: sets `skip[i]` when key i is stored with our
/// header, the caller's value-format fingerprint and payload length `sizes[i]` (a value of
/// another format, length, or not ours is written again). Only 32 bytes per key come back. A
/// key whose GETRANGE fails (an ACL without it, a redirection) is simply written.
///
/// With `multi_key` (not a cluster: a multi-key command there spans hash slots), each window of
/// keys is first asked with one `EXISTS k1 k2 ...`: when it counts none, as for a batch of new
/// pages, the window needs no GETRANGE at all. That one command costs the server far less than
/// a GETRANGE per key, which was most of the option's cost on new pages. A failed or refused
/// EXISTS just falls back to the GETRANGEs.
pub fn probe(conn: &mut Conn, cfg: &Config, keys: &[&[u8]], sizes: &[u64], skip: &mut [bool], multi_key: bool, done: usize) -> std::result::Result<(), LaneError> {
    let (prefix, value_format) = (cfg.namespace.prefix(), cfg.value_format);
    let fail = |error| LaneError { error, done, torn: false };
    let asking = conn.asking();
    let mut cmds = Vec::with_capacity((keys.len() - done).min(PROBE_WINDOW) * (64 + prefix.len()));
    // The answers are small and come within a round trip: a lane allowed to poll polls longer
    // here rather than sleeping and being woken once per batch.
    let spin = conn.spin();
    if !spin.is_zero() {
        conn.set_spin(spin.max(PROBE_SPIN));
    }
    let mut from = done;
    while from < keys.len() {
        let window = from..keys.len().min(from + PROBE_WINDOW);
        from = window.end;
        if multi_key && !asking {
            cmds.clear();
            push_array_header(&mut cmds, 1 + window.len());
            push_bulk(&mut cmds, &[b"EXISTS"]);
            for k in &keys[window.clone()] {
                push_bulk(&mut cmds, &[prefix, k]);
            }
            conn.write_all(&mut [IoSlice::new(&cmds)]).map_err(fail)?;
            match conn.read_reply().map_err(fail)? {
                Reply::Int(0) => continue,
                Reply::Int(_) | Reply::Error(_) => {}
                other => return Err(fail(Error::protocol(format!("{} answered EXISTS with {other:?}", conn.server())))),
            }
        }
        cmds.clear();
        for k in &keys[window.clone()] {
            if asking {
                cmds.extend_from_slice(ASKING);
            }
            push_array_header(&mut cmds, 4);
            push_bulk(&mut cmds, &[b"GETRANGE"]);
            push_bulk(&mut cmds, &[prefix, k]);
            push_bulk(&mut cmds, &[b"0"]);
            push_bulk(&mut cmds, &[b"31"]);
        }
        conn.write_all(&mut [IoSlice::new(&cmds)]).map_err(fail)?;
        for i in window {
            if asking {
                read_asking_ok(conn).map_err(fail)?;
            }
            skip[i] = match conn.read_reply().map_err(fail)? {
                Reply::Bulk(Some(len)) if len == HEADER_LEN as u64 => {
                    let mut head = [0u8; HEADER_LEN];
                    conn.read_exact(&mut head).and_then(|_| conn.read_crlf()).map_err(fail)?;
                    Header::decode(&head).is_some_and(|h| h.value_format == value_format && h.payload_len == sizes[i])
                }
                Reply::Bulk(Some(len)) => {
                    conn.skip(len).and_then(|_| conn.read_crlf()).map_err(fail)?;
                    false
                }
                Reply::Bulk(None) | Reply::Error(_) => false,
                other => return Err(fail(Error::protocol(format!("{} answered GETRANGE with {other:?}", conn.server())))),
            };
        }
    }
    conn.set_spin(spin);
    Ok(())
}

/// `SET prefix+key header+payload` for keys `done..`; `sizes[i]` is value i's payload length.
/// Keys with `shared.skip[i]` set are not sent: their outcome is `Ok`, and they are counted in
/// `shared.skipped`. Each write waits while a latency-sensitive call of the store runs.
#[allow(clippy::too_many_arguments)]
pub fn set(
    conn: &mut Conn,
    cfg: &Config,
    keys: &[&[u8]],
    values: &[&[IoSlice<'_>]],
    sizes: &[u64],
    shared: SetShared<'_>,
    outcomes: &mut [Outcome],
    done: usize,
) -> std::result::Result<Option<Error>, LaneError> {
    let (prefix, value_format, window) = (cfg.namespace.prefix(), cfg.value_format, cfg.set_window);
    let n = keys.len();
    let mut first_err = None;
    let mut q = WriteQueue::new();
    let mut in_flight: VecDeque<usize> = VecDeque::new();
    let mut unacked = 0u64;
    let mut next = done;
    let mut acked = done;
    let fail = |error, acked| LaneError { error, done: acked, torn: false };
    let asking = conn.asking();
    let SetShared { skip, skipped, urgent } = shared;
    let skips = |i: usize| skip.get(i).copied().unwrap_or(false);
    while acked < n {
        // Keys not sent get their outcome as soon as everything before them has one.
        if in_flight.is_empty() && next == acked && skips(acked) {
            outcomes[acked] = Outcome::Ok;
            skipped.pages.fetch_add(1, Relaxed);
            skipped.bytes.fetch_add(sizes[acked], Relaxed);
            acked += 1;
            next += 1;
            continue;
        }
        while next < n && (in_flight.is_empty() || unacked + sizes[next] <= window as u64) {
            if skips(next) {
                in_flight.push_back(next);
                next += 1;
                continue;
            }
            let payload = sizes[next];
            let header = Header {
                payload_len: payload,
                value_format,
                checksum: cfg.checksum.then(|| checksum_slices(values[next])),
            };
            q.push_set(asking, &[prefix, keys[next]], &header.encode(), values[next]);
            in_flight.push_back(next);
            unacked += payload;
            next += 1;
            if q.wants_flush() {
                yield_to_urgent(urgent);
                q.flush(conn).map_err(|e| fail(e, acked))?;
            }
        }
        if q.bytes > 0 {
            yield_to_urgent(urgent);
        }
        q.flush(conn).map_err(|e| fail(e, acked))?;
        let i = in_flight.pop_front().expect("a command is in flight");
        if skips(i) {
            outcomes[i] = Outcome::Ok;
            skipped.pages.fetch_add(1, Relaxed);
            skipped.bytes.fetch_add(sizes[i], Relaxed);
            acked += 1;
            continue;
        }
        if asking {
            read_asking_ok(conn).map_err(|e| fail(e, acked))?;
        }
        match conn.read_reply().map_err(|e| fail(e, acked))? {
            Reply::Ok => outcomes[i] = Outcome::Ok,
            Reply::Error(e) => {
                let (outcome, err) = key_error(&e, conn, i);
                outcomes[i] = outcome;
                first_err.get_or_insert(err);
            }
            other => {
                let e = Error::protocol(format!("{} answered SET with {other:?}", conn.server()));
                return Err(fail(e, acked));
            }
        }
        unacked -= sizes[i];
        acked += 1;
    }
    Ok(first_err)
}

/// `GET prefix+key` for keys `done..`, each payload read straight into the key's segments:
/// value i's segments are `segs[bounds[i]..bounds[i + 1]]` (`bounds` has n + 1 entries, the first
/// being 0) and `sizes[i]` their total length; a value of another length is not read into them.
///
/// The keys are dealt in turn over `conns` (key `done + j` on `conns[j % conns.len()]`), with up
/// to `get_window` bytes outstanding per connection (counted over all of them), and the replies
/// are read in key order on this one thread. With values as large as the window, one connection has one GET
/// outstanding and the server waits for our next request after each reply; over two, the
/// server is preparing the next value while the current one is read, and the reply of the
/// connection not being read waits in its socket buffer.
pub fn get(
    conns: &mut [Conn],
    cfg: &Config,
    keys: &[&[u8]],
    (segs, bounds): (&mut [&mut [u8]], &[usize]),
    sizes: &[u64],
    outcomes: &mut [Outcome],
    done: usize,
) -> std::result::Result<Option<Error>, LaneError> {
    let (prefix, value_format) = (cfg.namespace.prefix(), cfg.value_format);
    let n = keys.len();
    let fan = conns.len();
    let window = cfg.get_window as u64 * fan as u64;
    let mut first_err = None;
    let mut cmds: Vec<Vec<u8>> = (0..fan).map(|_| Vec::with_capacity(4096)).collect();
    let mut next = done;
    let mut received = done;
    let mut outstanding = 0u64;
    let fail = |error, done| LaneError { error, done, torn: false };
    let asking = conns[0].asking();
    // Length of the reply's `$len\r\n` plus our header, when the value is the expected one.
    let head_len = |i: usize| bulk_header_len(HEADER_LEN as u64 + sizes[i]) + HEADER_LEN;
    for (j, conn) in conns.iter_mut().enumerate() {
        conn.set_read_limit(head_len((done + j).min(n.saturating_sub(1))));
    }
    while received < n {
        while next < n && (next == received || outstanding + sizes[next] <= window) {
            let cmd = &mut cmds[(next - done) % fan];
            if asking {
                cmd.extend_from_slice(ASKING);
            }
            push_array_header(cmd, 2);
            push_bulk(cmd, &[b"GET"]);
            push_bulk(cmd, &[prefix, keys[next]]);
            outstanding += sizes[next];
            next += 1;
        }
        for (conn, cmd) in conns.iter_mut().zip(&mut cmds) {
            if !cmd.is_empty() {
                conn.write_all(&mut [IoSlice::new(cmd)]).map_err(|e| fail(e, received))?;
                cmd.clear();
            }
        }
        let i = received;
        let conn = &mut conns[(i - done) % fan];
        if asking {
            read_asking_ok(conn).map_err(|e| fail(e, received))?;
        }
        let result = read_value(conn, &mut segs[bounds[i]..bounds[i + 1]], sizes[i], value_format, i);
        // Header bytes of this connection's next reply (and this one's CRLF) may be read together.
        let after = if i + fan < n { 2 + head_len(i + fan) } else { 2 };
        conn.set_read_limit(after);
        match result.map_err(|(error, torn)| LaneError { error, done: received, torn })? {
            Ok(outcome) => outcomes[i] = outcome,
            Err((outcome, err)) => {
                outcomes[i] = outcome;
                first_err.get_or_insert(err);
            }
        }
        outstanding -= sizes[i];
        received += 1;
    }
    // Back to whole-buffer reads for whatever the connections are used for next.
    for conn in conns.iter_mut() {
        conn.set_read_limit(usize::MAX);
    }
    Ok(first_err)
}

type KeyResult = std::result::Result<Outcome, (Outcome, Error)>;

/// Reads one GET reply into `segments` (expected payload `size` bytes). A connection error comes
/// with whether payload bytes had already been written into the segments.
fn read_value(conn: &mut Conn, segments: &mut [&mut [u8]], size: u64, value_format: u64, i: usize) -> std::result::Result<KeyResult, (Error, bool)> {
    let clean = |e| (e, false);
    let stored = match conn.read_reply().map_err(clean)? {
        Reply::Bulk(None) => return Ok(Ok(Outcome::Miss)),
        Reply::Bulk(Some(len)) => len,
        Reply::Error(e) => return Ok(Err(key_error(&e, conn, i))),
        other => return Err(clean(Error::protocol(format!("{} answered GET with {other:?}", conn.server())))),
    };
    if stored < HEADER_LEN as u64 {
        conn.skip(stored).and_then(|_| conn.read_crlf()).map_err(clean)?;
        return Ok(Ok(Outcome::Foreign));
    }
    let mut head = [0u8; HEADER_LEN];
    conn.read_exact(&mut head).map_err(clean)?;
    let header = match Header::check(&head, stored, value_format, size) {
        Ok(h) => h,
        Err(rejection) => {
            conn.skip(stored - HEADER_LEN as u64).and_then(|_| conn.read_crlf()).map_err(clean)?;
            return Ok(Ok(match rejection {
                Rejection::Foreign => Outcome::Foreign,
                Rejection::OtherFormat => Outcome::FormatMismatch,
                Rejection::SizeMismatch => Outcome::SizeMismatch,
            }));
        }
    };
    // From here on the caller's segments are being overwritten.
    let torn = |e| (e, true);
    for seg in segments.iter_mut() {
        conn.read_exact(seg).map_err(torn)?;
    }
    conn.read_crlf().map_err(torn)?;
    if let Some(expected) = header.checksum {
        if checksum(segments.iter().map(|s| &**s)) != expected {
            return Ok(Ok(Outcome::ChecksumMismatch));
        }
    }
    Ok(Ok(Outcome::Ok))
}

/// Reads the `+OK` that answers an `ASKING`.
fn read_asking_ok(conn: &mut Conn) -> Result<()> {
    match conn.read_reply()? {
        Reply::Ok => Ok(()),
        other => Err(Error::protocol(format!("{} answered ASKING with {other:?}", conn.server()))),
    }
}

/// `EXISTS prefix+key` for keys `done..`, one command per key so each has its own answer:
/// `outcomes[i]` becomes `Ok` (exists), `Miss`, or the error the server answered for that key.
pub fn exists(
    conn: &mut Conn,
    prefix: &[u8],
    keys: &[&[u8]],
    outcomes: &mut [Outcome],
    done: usize,
) -> std::result::Result<Option<Error>, LaneError> {
    let n = keys.len();
    let mut first_err = None;
    // About 40 bytes a command, for at most one window of commands.
    let mut cmds = Vec::with_capacity((keys.len() - done).min(EXISTS_WINDOW) * (48 + prefix.len()));
    let mut next = done;
    let mut received = done;
    let fail = |error, done| LaneError { error, done, torn: false };
    let asking = conn.asking();
    while received < n {
        cmds.clear();
        while next < n && next - received < EXISTS_WINDOW {
            if asking {
                cmds.extend_from_slice(ASKING);
            }
            push_array_header(&mut cmds, 2);
            push_bulk(&mut cmds, &[b"EXISTS"]);
            push_bulk(&mut cmds, &[prefix, keys[next]]);
            next += 1;
        }
        if !cmds.is_empty() {
            conn.write_all(&mut [IoSlice::new(&cmds)]).map_err(|e| fail(e, received))?;
        }
        // Read what was sent, keeping the next batch of commands from waiting for all of it.
        let until = next.min(received + EXISTS_WINDOW / 2).max(received + 1);
        while received < until {
            if asking {
                read_asking_ok(conn).map_err(|e| fail(e, received))?;
            }
            outcomes[received] = match conn.read_reply().map_err(|e| fail(e, received))? {
                Reply::Int(v) if v > 0 => Outcome::Ok,
                Reply::Int(_) => Outcome::Miss,
                Reply::Error(e) => {
                    let (outcome, err) = key_error(&e, conn, received);
                    first_err.get_or_insert(err);
                    outcome
                }
                other => {
                    let e = Error::protocol(format!("{} answered EXISTS with {other:?}", conn.server()));
                    return Err(fail(e, received));
                }
            };
            received += 1;
        }
    }
    Ok(first_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_of_64_kib_are_written_four_at_a_time() {
        let payload = vec![7u8; 64 << 10];
        let value = [IoSlice::new(&payload)];
        let mut q = WriteQueue::new();
        let mut queued = 0;
        while !q.wants_flush() {
            q.push_set(false, &[b"k"], &[0; HEADER_LEN], &value);
            queued += 1;
            assert!(queued <= 16, "no write after 16 values of 64 KiB");
        }
        assert_eq!(queued, 4, "a write is issued after {queued} values of 64 KiB, not 4 (256 KiB)");
    }
}
