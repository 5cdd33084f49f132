//! The socket under a connection: TCP or a Unix domain socket, non-blocking, with every wait
//! bounded by a deadline (`poll`), and writes that never raise SIGPIPE.
//!
//! Why not `std`'s blocking streams with `set_read_timeout`: a timeout per syscall cannot bound a
//! whole request, costs a `setsockopt` per read, and `write_vectored` on a socket whose peer has
//! gone raises SIGPIPE, which kills a C or C++ host with the default disposition (Rust ignores
//! SIGPIPE only in Rust executables). `sendmsg(MSG_NOSIGNAL)` keeps the vectored write and turns
//! that case into `EPIPE`.

use crate::error::{Error, ErrorKind, Result};
use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `host:port` over TCP.
    Tcp { host: String, port: u16 },
    /// A Unix domain socket path.
    Unix(String),
}

impl Endpoint {
    /// The endpoint as shown in messages: `host:port` (IPv6 in brackets) or `unix:PATH`.
    pub fn name(&self) -> String {
        match self {
            Endpoint::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            Endpoint::Tcp { host, port } => format!("{host}:{port}"),
            Endpoint::Unix(path) => format!("unix:{path}"),
        }
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// The most one read of a value's bytes takes from a plaintext TCP socket. A large value is read
/// straight into the caller's memory, and one `recv` of megabytes holds the socket for the whole
/// copy; the kernel sends the window update that lets the server go on sending only when it
/// returns (likely why): the server's sends stall, then burst. Measured on loopback, 512 MiB of
/// values per run read into fresh memory, capped and uncapped runs interleaved: 4 MiB values
/// 2.38-2.54 -> 2.83-3.11 GB/s at 64 KiB (16 KiB 2.6-2.8, 32 KiB 2.6-3.2, 128 KiB 2.5-2.6,
/// 256 KiB 2.4-2.6), 2 MiB values 2.51-2.62 -> 2.93-3.07, 1 MiB 2.46-2.72 -> 2.59-2.80, 256 KiB
/// unchanged. Not for Unix sockets, where it cost 3-5 %; TLS reads its ciphertext in buffers of
/// its own (`tls::CIPHER_BUF`).
const TCP_READ_MAX: usize = 64 << 10;

/// The send buffer asked for on a Unix socket (the kernel doubles it, up to
/// `net.core.wmem_max`). A Unix stream socket does not grow its buffer as TCP does: it keeps
/// `net.core.wmem_default` (208 KiB here), and a writer waits for the server to drain each
/// 208 KiB. Measured at steady state, 1 MiB against the default, interleaved, medians of 8:
/// batch_set of 64 KiB pages 1.8-2.2 -> 2.9-3.0 GB/s, 256 KiB pages 2.0 -> 3.7, 16 KiB
/// 1.4 -> 1.7, 1 MiB 3.6 -> 3.8 (512 KiB: 2.9 at 64 KiB; 4 MiB no better than 1 MiB).
const UNIX_SNDBUF: libc::c_int = 1 << 20;

/// A connected, non-blocking socket.
pub struct Socket {
    stream: Stream,
}

/// What to wait for.
#[derive(Clone, Copy)]
pub enum Ready {
    Read,
    Write,
}

impl Socket {
    /// Connects to `endpoint` by `deadline`. `server` names it in messages.
    pub fn connect(endpoint: &Endpoint, deadline: Instant, server: &str) -> Result<Socket> {
        let stream = match endpoint {
            Endpoint::Tcp { host, port } => Stream::Tcp(connect_tcp(host, *port, deadline, server)?),
            Endpoint::Unix(path) => Stream::Unix(UnixStream::connect(path).map_err(|e| {
                Error::new(ErrorKind::Connection, format!("cannot connect to {server}: {} (is valkey-server listening on that socket?)", plain(&e)))
            })?),
        };
        let socket = Socket { stream };
        let setup = match &socket.stream {
            Stream::Tcp(s) => s.set_nodelay(true).and_then(|_| s.set_nonblocking(true)),
            Stream::Unix(s) => s.set_nonblocking(true),
        };
        setup.map_err(|e| Error::new(ErrorKind::Connection, format!("{server}: cannot set up the socket: {e}")))?;
        if let Stream::Unix(s) = &socket.stream {
            // Only speed depends on it: a refusal is logged, not a failed connection.
            if let Err(e) = set_sndbuf(s.as_raw_fd(), UNIX_SNDBUF) {
                tracing::debug!(server, error = %e, "cannot enlarge the Unix socket's send buffer");
            }
        }
        Ok(socket)
    }

    /// The kernel's send buffer of this socket, in bytes (`SO_SNDBUF`).
    #[cfg(test)]
    pub fn sndbuf(&self) -> io::Result<usize> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are valid for writes of their sizes; the fd is our open socket.
        let r = unsafe { libc::getsockopt(self.fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, (&mut v as *mut libc::c_int).cast(), &mut len) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(v as usize)
        }
    }

    fn fd(&self) -> RawFd {
        match &self.stream {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    /// One non-blocking vectored write; `WouldBlock` when the socket buffer is full. Never raises
    /// SIGPIPE: a closed peer is `EPIPE`.
    pub fn send(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: an all-zero msghdr is valid (no name, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // IoSlice is guaranteed ABI-compatible with iovec on Unix; sendmsg only reads them.
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = bufs.len() as _;
        // SAFETY: `msg` points to `bufs`, valid for the call; the fd is our open socket.
        let n = unsafe { libc::sendmsg(self.fd(), &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// The most a read of a value's bytes should ask of this socket at once ([`TCP_READ_MAX`]
    /// for TCP, no limit for a Unix socket).
    pub fn read_max(&self) -> usize {
        match self.stream {
            Stream::Tcp(_) => TCP_READ_MAX,
            Stream::Unix(_) => usize::MAX,
        }
    }

    /// One non-blocking read into `dst` (`peek`: leave the bytes in the socket). `Ok(0)` is the
    /// peer's end of stream; `WouldBlock` when nothing is there.
    pub fn recv(&self, dst: &mut [u8], peek: bool) -> io::Result<usize> {
        let flags = libc::MSG_DONTWAIT | if peek { libc::MSG_PEEK } else { 0 };
        // SAFETY: `dst` is writable for its length; the fd is our open socket.
        let n = unsafe { libc::recv(self.fd(), dst.as_mut_ptr().cast(), dst.len(), flags) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Waits until the socket is ready for `what` or `deadline` passes; `false` on the deadline.
    pub fn wait(&self, what: Ready, deadline: Option<Instant>) -> io::Result<bool> {
        let events = match what {
            Ready::Read => libc::POLLIN,
            Ready::Write => libc::POLLOUT,
        };
        loop {
            let timeout_ms = match deadline {
                None => -1,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
                    _ => return Ok(false),
                },
            };
            let mut pfd = libc::pollfd { fd: self.fd(), events, revents: 0 };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
            match n {
                n if n > 0 => return Ok(true),
                0 => continue, // re-checks the deadline (poll may return a little early)
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Whether the connection is idle and usable: nothing unread is waiting and the peer has not
    /// closed it.
    pub fn is_idle(&self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.recv(&mut byte, true), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

fn connect_tcp(host: &str, port: u16, deadline: Instant, server: &str) -> Result<TcpStream> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::new(ErrorKind::Connection, format!("cannot resolve host '{host}': {e}")))?
        .collect();
    let mut last_err = None;
    for addr in &addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(addr, left) {
            Ok(s) => return Ok(s),
            Err(e) => last_err = Some((addr, e)),
        }
    }
    Err(match last_err {
        Some((addr, e)) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => {
            Error::new(ErrorKind::Timeout, format!("connecting to {server} ({addr}) timed out"))
        }
        Some((addr, e)) => {
            // Name the resolved address only when it says more than `server` does.
            let via = if addr.to_string() == server { String::new() } else { format!(" ({addr})") };
            Error::new(ErrorKind::Connection, format!("cannot connect to {server}{via}: {} (is valkey-server running there?)", plain(&e)))
        }
        None if addrs.is_empty() => Error::new(ErrorKind::Connection, format!("no address found for {server}")),
        None => Error::new(ErrorKind::Timeout, format!("connecting to {server} timed out")),
    })
}

/// An OS error as words, without the errno noise ("connection refused").
fn plain(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(_) => e.kind().to_string(),
        None => e.to_string(),
    }
}

/// `io::Write` over [`Socket::send`] (non-blocking, `MSG_NOSIGNAL`), for TLS records.
pub struct SendTo<'a>(pub &'a Socket);

impl io::Write for SendTo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.send(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Asks for a send buffer of `bytes` on `fd` (`SO_SNDBUF`).
fn set_sndbuf(fd: RawFd, bytes: libc::c_int) -> io::Result<()> {
    // SAFETY: the option value is a c_int that lives for the call; the fd is our open socket.
    let r = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, (&bytes as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_unix_socket_asks_for_a_send_buffer_larger_than_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let path = path.to_string_lossy().into_owned();
        let deadline = Instant::now() + Duration::from_secs(10);
        let ours = Socket::connect(&Endpoint::Unix(path.clone()), deadline, "test peer").unwrap().sndbuf().unwrap();
        let plain = Socket { stream: Stream::Unix(UnixStream::connect(&path).unwrap()) }.sndbuf().unwrap();
        // The kernel doubles what is asked, up to twice net.core.wmem_max.
        let max = std::fs::read_to_string("/proc/sys/net/core/wmem_max").ok().and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(usize::MAX);
        let want = 2 * (UNIX_SNDBUF as usize).min(max);
        assert!(ours >= want, "send buffer {ours} bytes, asked for {UNIX_SNDBUF} (at least {want} expected)");
        assert!(ours > plain || plain >= want, "send buffer {ours} bytes, no larger than a plain Unix socket's {plain}");
    }
}
