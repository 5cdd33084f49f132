//! One connection to a Valkey server: the handshake, deadlines, and buffered reads that let bulk
//! payloads go straight into the caller's memory.
//!
//! Why not the `redis` crate here: its API takes values as owned buffers and returns them as
//! owned `Vec<u8>`s, which means copying every page at least once on each side (see
//! docs/design.md). Commands go out as vectored writes straight from the caller's segments and
//! bulk replies are read straight into them. Only the bytes of reply *headers* go through a small
//! buffer; reads are bounded so a header read does not pull payload bytes into it. The control
//! commands (INFO, SCAN, CLUSTER SLOTS) use the same connection type, so every request of the
//! library, data or control, has one deadline and one transport.

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::resp::{parse_reply_line, push_command, Reply, Value};
use crate::socket::{Endpoint, Ready, SendTo, Socket};
use crate::tls::{self, TlsStream};
use std::io::{self, IoSlice, Read, Write};
use std::time::{Duration, Instant};

mod setup;

/// Size of the reply-header buffer.
const READ_BUF: usize = 64 << 10;
/// Longest reply line accepted (error messages, integers, bulk headers).
const MAX_LINE: usize = 16 << 10;
/// The server's largest bulk string when it does not say (`proto-max-bulk-len`'s default).
pub const DEFAULT_MAX_BULK: u64 = 512 << 20;
/// Largest control reply read whole (INFO, a SCAN page, CLUSTER SLOTS) and its deepest nesting.
const MAX_CONTROL_BULK: u64 = 64 << 20;
const MAX_DEPTH: usize = 8;

/// Cluster redirections a lane's keys received (indices into the lane's keys).
#[derive(Debug, Default)]
pub struct Redirects {
    /// Some key got `MOVED`: the slot map is stale.
    pub moved: bool,
    /// Keys that got `ASK host:port`, with that node.
    pub asks: Vec<(usize, String)>,
}

/// An open, authenticated connection.
pub struct Conn {
    sock: Socket,
    /// The TLS session over `sock`, when TLS is on: every byte in and out goes through it.
    tls: Option<Box<TlsStream>>,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// The most a single socket read may take into `buf` (see [`Conn::set_read_limit`]).
    read_limit: usize,
    deadline: Option<Instant>,
    server: String,
    /// How long a read polls the socket without blocking before it sleeps (see [`Conn::set_spin`]).
    spin: Duration,
    /// The server's `proto-max-bulk-len`.
    max_bulk: u64,
    /// Redirections seen by the current lane.
    pub redirects: Redirects,
    /// Every command of the current lane follows an `ASK` redirection: send `ASKING` first.
    asking: bool,
}

impl Conn {
    /// A connection over `sock` before its handshake: empty buffers, the defaults, `deadline`
    /// for the handshake's reads and writes.
    fn new(sock: Socket, tls: Option<Box<TlsStream>>, server: String, deadline: Instant) -> Conn {
        Conn {
            sock,
            tls,
            buf: vec![0; READ_BUF].into_boxed_slice(),
            pos: 0,
            end: 0,
            read_limit: READ_BUF,
            deadline: Some(deadline),
            server,
            spin: Duration::ZERO,
            max_bulk: DEFAULT_MAX_BULK,
            redirects: Redirects::default(),
            asking: false,
        }
    }

    /// `host:port` (or `unix:PATH`) of the server, for messages.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The largest bulk string the server accepts (`proto-max-bulk-len`).
    pub fn max_bulk(&self) -> u64 {
        self.max_bulk
    }

    /// Makes the current lane send `ASKING` before each command (keys redirected by `ASK`).
    pub fn set_asking(&mut self, asking: bool) {
        self.asking = asking;
    }

    /// Whether the current lane's commands follow an `ASK` redirection.
    pub fn asking(&self) -> bool {
        self.asking
    }

    /// Sets the time by which the current request must be done; `None` for no limit.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// Lets reads poll the socket (non-blocking `recv`) for up to `spin` before blocking. A reader
    /// that never sleeps is never woken: on loopback the server's own send path does the wake-up
    /// of a sleeping reader, so polling saves server CPU and a scheduler round trip per reply.
    /// Measured on 2 cores: batch_exists of 128 keys +15% keys/s, 16 KiB GET +15% GB/s, large
    /// values unchanged (server-bound). Only worth it while this thread has a core to itself.
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// The polling time set by [`Conn::set_spin`].
    pub fn spin(&self) -> Duration {
        self.spin
    }

    /// Bounds how many bytes one socket read may take into the header buffer. A caller that knows
    /// the next reply header is `n` bytes long sets `n`, so the payload behind it stays in the
    /// socket and is read straight into the caller's memory.
    pub fn set_read_limit(&mut self, n: usize) {
        self.read_limit = n.clamp(1, READ_BUF);
    }

    /// Whether the connection can go back to a pool: nothing buffered or waiting unread, and the
    /// server has not closed it. A connection with a stray reply would hand it to the next call.
    pub fn is_idle(&mut self) -> bool {
        if self.pos != self.end {
            return false;
        }
        let Some(tls) = self.tls.as_mut() else { return self.sock.is_idle() };
        // Records the server sent unasked (session tickets) are read here; plaintext or a
        // close_notify among them means the connection is not idle.
        for _ in 0..64 {
            if tls.pos == tls.end {
                match self.sock.recv(&mut tls.cipher, false) {
                    Ok(0) => return false,
                    Ok(n) => (tls.pos, tls.end) = (0, n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => return false,
                }
            }
            match tls.conn.read_tls(&mut &tls.cipher[tls.pos..tls.end]) {
                Ok(n) => tls.pos += n,
                Err(_) => return false,
            }
            match tls.conn.process_new_packets() {
                Ok(state) if state.peer_has_closed() || state.plaintext_bytes_to_read() > 0 => return false,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        match tls.conn.process_new_packets() {
            Ok(state) => tls.pos == tls.end && !state.peer_has_closed() && state.plaintext_bytes_to_read() == 0,
            Err(_) => false,
        }
    }

    fn timeout_error(&self, what: &str) -> Error {
        Error::new(ErrorKind::Timeout, format!("{what} {} timed out (server busy, overloaded or unreachable?)", self.server))
    }

    fn closed_error(&self) -> Error {
        Error::new(ErrorKind::Connection, format!("{} closed the connection (server restarted, client killed or idle timeout?)", self.server))
    }

    fn io_error(&self, what: &str, e: io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => self.closed_error(),
            io::ErrorKind::TimedOut => self.timeout_error(what),
            _ => Error::new(ErrorKind::Connection, format!("{what} {} failed: {e}", self.server)),
        }
    }

    /// Gives buffered ciphertext to rustls (at least one piece) and processes it.
    fn feed_tls(&mut self) -> Result<()> {
        let tls = self.tls.as_mut().expect("TLS is on");
        let n = tls.conn.read_tls(&mut &tls.cipher[tls.pos..tls.end]).map_err(|e| Error::new(ErrorKind::Tls, format!("TLS with {} failed: {e}", self.server)))?;
        tls.pos += n;
        if let Err(e) = tls.conn.process_new_packets() {
            let err = tls::error(&self.server, &tls.name, &e);
            // Tell the server why (an alert), best effort.
            let _ = tls.conn.write_tls(&mut SendTo(&self.sock));
            return Err(err);
        }
        Ok(())
    }

    /// Sends every TLS record rustls has ready, waiting (by the deadline) for room in the socket.
    fn flush_tls(&mut self) -> Result<()> {
        while self.tls.as_ref().is_some_and(|t| t.conn.wants_write()) {
            let tls = self.tls.as_mut().expect("TLS is on");
            match tls.conn.write_tls(&mut SendTo(&self.sock)) {
                Ok(0) => return Err(self.io_error("writing to", io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait(Ready::Write, "writing to")?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error("writing to", e)),
            }
        }
        Ok(())
    }

    /// Waits for the socket to be ready by the deadline.
    fn wait(&self, ready: Ready, what: &str) -> Result<()> {
        match self.sock.wait(ready, self.deadline) {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.timeout_error(what)),
            Err(e) => Err(self.io_error(what, e)),
        }
    }

    /// Writes all of `bufs` (a vectored write; partial writes are continued).
    pub fn write_all(&mut self, mut bufs: &mut [IoSlice<'_>]) -> Result<()> {
        IoSlice::advance_slices(&mut bufs, 0);
        if self.tls.is_some() {
            // Encrypted into records (rustls takes a bounded amount at a time), then sent.
            while !bufs.is_empty() {
                let tls = self.tls.as_mut().expect("TLS is on");
                let written = tls.conn.writer().write_vectored(bufs);
                let n = written.map_err(|e| self.io_error("writing to", e))?;
                IoSlice::advance_slices(&mut bufs, n);
                self.flush_tls()?;
            }
            return Ok(());
        }
        while !bufs.is_empty() {
            match self.sock.send(bufs) {
                Ok(0) => return Err(self.io_error("writing to", io::ErrorKind::WriteZero.into())),
                Ok(n) => IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait(Ready::Write, "writing to")?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error("writing to", e)),
            }
        }
        Ok(())
    }

    /// Reads from the connection into `dst`, returning how many bytes came (never 0): straight
    /// from the socket (at most `Socket::read_max` at once), or through TLS (ciphertext in large
    /// reads, decrypted by rustls, copied out into `dst`).
    fn read_socket(&mut self, dst: &mut [u8]) -> Result<usize> {
        if self.tls.is_none() {
            let len = dst.len().min(self.sock.read_max());
            return self.recv(&mut dst[..len]);
        }
        loop {
            let tls = self.tls.as_mut().expect("TLS is on");
            match tls.conn.reader().read(dst) {
                Ok(0) if !dst.is_empty() => return Err(self.closed_error()), // close_notify
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Err(self.closed_error()), // closed without close_notify
            }
            if tls.pos == tls.end {
                let mut cipher = std::mem::take(&mut tls.cipher);
                let got = self.recv(&mut cipher);
                let tls = self.tls.as_mut().expect("TLS is on");
                tls.cipher = cipher;
                (tls.pos, tls.end) = (0, got?);
            }
            self.feed_tls()?;
        }
    }

    /// Reads from the socket into `dst`, returning how many bytes came (never 0).
    fn recv(&mut self, dst: &mut [u8]) -> Result<usize> {
        let spin_until = (!self.spin.is_zero()).then(|| Instant::now() + self.spin);
        let mut tries = 0u32;
        loop {
            match self.sock.recv(dst, false) {
                Ok(0) => return Err(self.closed_error()),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tries += 1;
                    let spinning = spin_until.is_some_and(|until| tries % 16 != 0 || Instant::now() < until);
                    if spinning && self.deadline.is_none_or(|d| Instant::now() < d) {
                        std::hint::spin_loop();
                    } else {
                        self.wait(Ready::Read, "reading from")?;
                    }
                }
                Err(e) => return Err(self.io_error("reading from", e)),
            }
        }
    }

    /// Reads more bytes into the header buffer (at most `read_limit`).
    fn fill(&mut self) -> Result<()> {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        let room = (self.buf.len() - self.end).min(self.read_limit);
        let mut buf = std::mem::take(&mut self.buf);
        let got = self.read_socket(&mut buf[self.end..self.end + room]);
        self.buf = buf;
        self.end += got?;
        Ok(())
    }

    /// Reads one line (without its CRLF).
    fn read_line(&mut self) -> Result<&[u8]> {
        // Bytes after `pos` already searched; relative, because `fill` may move the data.
        let mut searched = 0;
        loop {
            let from = self.pos + searched;
            if let Some(i) = self.buf[from..self.end].windows(2).position(|w| w == b"\r\n") {
                let start = self.pos;
                self.pos = from + i + 2;
                return Ok(&self.buf[start..from + i]);
            }
            searched = (self.end - self.pos).saturating_sub(1);
            if searched > MAX_LINE {
                return Err(Error::protocol(format!("{} sent a reply line longer than {MAX_LINE} bytes", self.server)));
            }
            self.fill()?;
        }
    }

    /// Reads one reply; for a bulk string or an array only its header.
    pub fn read_reply(&mut self) -> Result<Reply> {
        // Parsed without allocating on the hot path (one reply per key): the server name is only
        // formatted into a message when the line is bad.
        let line = self.read_line()?;
        match parse_reply_line(line) {
            Some(reply) => Ok(reply),
            None => {
                let shown = String::from_utf8_lossy(line).into_owned();
                Err(Error::protocol(format!("{} sent an unexpected reply: {shown:?}", self.server)))
            }
        }
    }

    /// Reads one whole reply (control commands: bounded in size and depth).
    pub fn read_value(&mut self) -> Result<Value> {
        self.read_value_at(0)
    }

    fn read_value_at(&mut self, depth: usize) -> Result<Value> {
        let too_big = |conn: &Conn| Error::protocol(format!("{} sent a control reply larger than this library reads", conn.server));
        Ok(match self.read_reply()? {
            Reply::Ok => Value::Ok,
            Reply::Simple(s) => Value::Simple(s),
            Reply::Int(i) => Value::Int(i),
            Reply::Error(e) => Value::Error(e),
            Reply::Bulk(None) | Reply::Array(None) => Value::Nil,
            Reply::Bulk(Some(n)) if n > MAX_CONTROL_BULK => return Err(too_big(self)),
            Reply::Bulk(Some(n)) => {
                let limit = self.read_limit;
                self.read_limit = READ_BUF;
                let mut bytes = vec![0; n as usize];
                let read = self.read_exact(&mut bytes).and_then(|_| self.read_crlf());
                self.read_limit = limit;
                read?;
                Value::Bulk(bytes)
            }
            Reply::Array(Some(n)) if depth >= MAX_DEPTH || n > MAX_CONTROL_BULK / 4 => return Err(too_big(self)),
            Reply::Array(Some(n)) => {
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(self.read_value_at(depth + 1)?);
                }
                Value::Array(items)
            }
        })
    }

    /// Reads exactly `dst.len()` bytes: first what is buffered, then straight from the socket.
    pub fn read_exact(&mut self, dst: &mut [u8]) -> Result<()> {
        let buffered = (self.end - self.pos).min(dst.len());
        dst[..buffered].copy_from_slice(&self.buf[self.pos..self.pos + buffered]);
        self.pos += buffered;
        let mut done = buffered;
        while done < dst.len() {
            done += self.read_socket(&mut dst[done..])?;
        }
        Ok(())
    }

    /// Reads and discards `n` bytes (the payload of a value we will not use).
    pub fn skip(&mut self, mut n: u64) -> Result<()> {
        let limit = self.read_limit;
        self.read_limit = READ_BUF;
        while n > 0 {
            if self.pos == self.end {
                if let Err(e) = self.fill() {
                    self.read_limit = limit;
                    return Err(e);
                }
            }
            let take = ((self.end - self.pos) as u64).min(n) as usize;
            self.pos += take;
            n -= take as u64;
        }
        self.read_limit = limit;
        Ok(())
    }

    /// Consumes the CRLF that ends a bulk payload.
    pub fn read_crlf(&mut self) -> Result<()> {
        while self.end - self.pos < 2 {
            self.fill()?;
        }
        let ok = &self.buf[self.pos..self.pos + 2] == b"\r\n";
        self.pos += 2;
        if !ok {
            return Err(Error::protocol(format!("{} sent a bulk string without its CRLF", self.server)));
        }
        Ok(())
    }

    /// Runs one command by `deadline` and returns its whole reply (control commands).
    pub fn command(&mut self, args: &[&[u8]], deadline: Instant) -> Result<Value> {
        let mut cmd = Vec::new();
        push_command(&mut cmd, args);
        Ok(self.pipeline(&cmd, 1, deadline)?.pop().expect("one reply"))
    }

    /// Sends `count` encoded commands in one write and reads their whole replies, all by
    /// `deadline` (control commands). The first error ends the round trip.
    pub fn pipeline(&mut self, cmds: &[u8], count: usize, deadline: Instant) -> Result<Vec<Value>> {
        self.deadline = Some(deadline);
        let replies = self.write_all(&mut [IoSlice::new(cmds)]).and_then(|_| (0..count).map(|_| self.read_value()).collect());
        self.deadline = None;
        replies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection to `endpoint` without the handshake (the peer is a plain socket here).
    fn bare(endpoint: &Endpoint) -> Conn {
        let deadline = Instant::now() + Duration::from_secs(10);
        Conn::new(Socket::connect(endpoint, deadline, "test peer").unwrap(), None, "test peer".into(), deadline)
    }

    /// The first read of a value's bytes once `sent` bytes are waiting in the socket; checks
    /// that the rest then reads in full and in order.
    fn first_read(conn: &mut Conn, mut peer: impl std::io::Write + Send + 'static, sent: usize) -> usize {
        let data: Vec<u8> = (0..sent).map(|i| i as u8).collect();
        let expect = data.clone();
        let writer = std::thread::spawn(move || peer.write_all(&data).unwrap());
        // Let the socket fill (the writer blocks once it is full) before the first read.
        std::thread::sleep(Duration::from_millis(200));
        let mut dst = vec![0u8; sent];
        let first = conn.read_socket(&mut dst).unwrap();
        conn.read_exact(&mut dst[first..]).unwrap();
        writer.join().unwrap();
        assert!(dst == expect, "the value's bytes arrived out of order");
        first
    }

    #[test]
    fn a_large_value_is_read_from_tcp_in_reads_of_at_most_64_kib() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut conn = bare(&Endpoint::Tcp { host: "127.0.0.1".into(), port });
        let (peer, _) = listener.accept().unwrap();
        let first = first_read(&mut conn, peer, 4 << 20);
        assert!(first > 0 && first <= 64 << 10, "first TCP read took {first} bytes");
    }

    #[test]
    fn a_unix_socket_is_read_without_that_limit() {
        let dir = std::env::temp_dir().join(format!("hicache-conn-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("peer.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut conn = bare(&Endpoint::Unix(path.to_string_lossy().into_owned()));
        let (peer, _) = listener.accept().unwrap();
        let first = first_read(&mut conn, peer, 4 << 20);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(first > 64 << 10, "first Unix socket read took only {first} bytes");
    }
}
