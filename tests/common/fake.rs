//! A scripted fake RESP server for fault tests: a loopback listener on a thread of its own that
//! reads RESP commands (arrays of bulk strings), answers the connection handshake generically
//! (AUTH, SELECT, CLIENT, PING, CONFIG, INFO, HELLO, CLUSTER, COMMAND) and hands every other
//! command to the test's script, which answers with raw bytes and actions (send, pause, close,
//! stall). So a test can send a truncated payload and close, answer twice, or send garbage.
//!
//! Bounded: accepts and reads poll with short timeouts, writes time out, every connection and
//! the server itself live at most [`LIFETIME`]; dropping the [`Fake`] stops it and joins its
//! threads.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest the fake server, or one of its connections, stays up.
pub const LIFETIME: Duration = Duration::from_secs(120);
/// How often blocked reads, accepts, pauses and stalls look at the stop flag.
const POLL: Duration = Duration::from_millis(10);
/// Longest a reply may take to be written (the client may not be reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest command accepted (a SET of a large page).
const MAX_COMMAND: usize = 64 << 20;

/// One command received, with where it came from.
#[derive(Debug, Clone)]
pub struct Cmd {
    /// Accept order of the connection, from 0.
    pub conn: usize,
    /// Commands received before this one on the same connection.
    pub seq: usize,
    /// The arguments, the command name first.
    pub args: Vec<Vec<u8>>,
}

impl Cmd {
    /// The command name in upper case (`"GET"`).
    pub fn name(&self) -> String {
        self.args.first().map(|a| String::from_utf8_lossy(a).to_ascii_uppercase()).unwrap_or_default()
    }

    /// Argument `i` (0 is the name); empty when missing.
    pub fn arg(&self, i: usize) -> &[u8] {
        self.args.get(i).map_or(&[], |a| a.as_slice())
    }

    /// The first argument after the name (the key of GET / SET / EXISTS).
    pub fn key(&self) -> &[u8] {
        self.arg(1)
    }

    /// Whether the key ends with `suffix` (test keys are distinctive; the library adds its
    /// namespace in front).
    pub fn key_is(&self, suffix: &str) -> bool {
        self.key().ends_with(suffix.as_bytes())
    }
}

/// What the server does in answer to a command, in order.
#[derive(Debug, Clone)]
pub enum Step {
    /// Writes these bytes.
    Send(Vec<u8>),
    /// Waits (bounded by the server's lifetime and its stop flag).
    Sleep(Duration),
    /// Closes the connection (the rest of the steps are ignored).
    Close,
    /// Neither reads nor writes again on this connection, but keeps it open until the fake
    /// server is dropped.
    Stall,
}

/// The test's script: the steps answering one (non-handshake) command.
pub type Script = dyn Fn(&Cmd) -> Vec<Step> + Send + Sync + 'static;

/// A running fake server.
pub struct Fake {
    pub port: u16,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<Cmd>>>,
    thread: Option<JoinHandle<()>>,
}

impl Fake {
    /// Listens on a free loopback port and answers with `script`.
    pub fn start(script: impl Fn(&Cmd) -> Vec<Step> + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let thread = {
            let (stop, accepted, log) = (stop.clone(), accepted.clone(), log.clone());
            std::thread::Builder::new()
                .name(format!("fake-resp-{port}"))
                .spawn(move || accept_loop(listener, port, script, stop, accepted, log))
                .expect("spawn the fake server")
        };
        Fake { port, stop, accepted, log, thread: Some(thread) }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(SeqCst)
    }

    /// The commands given to the script so far (handshake commands are not logged).
    pub fn commands(&self) -> Vec<Cmd> {
        self.log.lock().unwrap().clone()
    }

    /// How many script commands named `name` (e.g. "GET") were received.
    pub fn count(&self, name: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|c| c.name() == name).count()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    port: u16,
    script: Arc<Script>,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<Cmd>>>,
) {
    let started = Instant::now();
    let mut handlers = Vec::new();
    while !stop.load(SeqCst) && started.elapsed() < LIFETIME {
        match listener.accept() {
            Ok((stream, _)) => {
                let conn = accepted.fetch_add(1, SeqCst);
                let (script, stop, log) = (script.clone(), stop.clone(), log.clone());
                handlers.push(std::thread::spawn(move || {
                    let _ = serve(stream, conn, port, &*script, &stop, &log);
                }));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => std::thread::sleep(POLL),
            Err(_) => std::thread::sleep(POLL),
        }
    }
    drop(listener);
    stop.store(true, SeqCst);
    for h in handlers {
        let _ = h.join();
    }
}

/// Serves one connection until the client closes it, the script closes it or the server stops.
fn serve(mut stream: TcpStream, conn: usize, port: u16, script: &Script, stop: &AtomicBool, log: &Mutex<Vec<Cmd>>) -> Result<(), ()> {
    let started = Instant::now();
    let alive = || !stop.load(SeqCst) && started.elapsed() < LIFETIME;
    stream.set_read_timeout(Some(POLL)).map_err(|_| ())?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT)).map_err(|_| ())?;
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut chunk = vec![0u8; 256 << 10];
    let mut seq = 0;
    while alive() {
        // Every complete command in the buffer, in order.
        loop {
            let (args, used) = match parse_command(&buf) {
                Parsed::Command(args, used) => (args, used),
                Parsed::Incomplete => break,
                Parsed::Invalid => return Err(()),
            };
            buf.drain(..used);
            let cmd = Cmd { conn, seq, args };
            seq += 1;
            let steps = match handshake_reply(&cmd, conn, port) {
                Some(bytes) => vec![Step::Send(bytes)],
                None => {
                    log.lock().unwrap().push(cmd.clone());
                    script(&cmd)
                }
            };
            for step in steps {
                match step {
                    Step::Send(bytes) => stream.write_all(&bytes).map_err(|_| ())?,
                    Step::Sleep(d) => {
                        let until = Instant::now() + d;
                        while alive() && Instant::now() < until {
                            std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
                        }
                    }
                    Step::Close => return Err(()),
                    Step::Stall => {
                        while alive() {
                            std::thread::sleep(POLL);
                        }
                        return Err(());
                    }
                }
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_COMMAND {
                    return Err(());
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(_) => return Err(()),
        }
    }
    Ok(())
}

enum Parsed {
    Command(Vec<Vec<u8>>, usize),
    Incomplete,
    Invalid,
}

/// Parses one `*N\r\n($len\r\nbytes\r\n){N}` command at the start of `buf`.
fn parse_command(buf: &[u8]) -> Parsed {
    fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
        let i = buf.get(from..)?.windows(2).position(|w| w == b"\r\n")?;
        Some((&buf[from..from + i], from + i + 2))
    }
    fn number(text: &[u8]) -> Option<usize> {
        std::str::from_utf8(text).ok()?.parse().ok()
    }
    if buf.is_empty() {
        return Parsed::Incomplete;
    }
    if buf[0] != b'*' {
        return Parsed::Invalid;
    }
    let Some((head, mut at)) = line(buf, 0) else {
        return if buf.len() > 64 { Parsed::Invalid } else { Parsed::Incomplete };
    };
    let Some(argc) = number(&head[1..]).filter(|n| *n <= 1 << 20) else { return Parsed::Invalid };
    let mut args = Vec::with_capacity(argc);
    for _ in 0..argc {
        let Some((h, next)) = line(buf, at) else { return Parsed::Incomplete };
        if h.first() != Some(&b'$') {
            return Parsed::Invalid;
        }
        let Some(len) = number(&h[1..]).filter(|n| *n <= MAX_COMMAND) else { return Parsed::Invalid };
        if buf.len() < next + len + 2 {
            return Parsed::Incomplete;
        }
        if &buf[next + len..next + len + 2] != b"\r\n" {
            return Parsed::Invalid;
        }
        args.push(buf[next..next + len].to_vec());
        at = next + len + 2;
    }
    Parsed::Command(args, at)
}

/// The generic answer to a connection-setup or introspection command; `None` for the others.
fn handshake_reply(cmd: &Cmd, conn: usize, port: u16) -> Option<Vec<u8>> {
    let sub = String::from_utf8_lossy(cmd.arg(1)).to_ascii_uppercase();
    Some(match cmd.name().as_str() {
        "AUTH" | "SELECT" | "READONLY" | "READWRITE" | "ASKING" => ok(),
        "PING" if cmd.args.len() > 1 => bulk(cmd.arg(1)),
        "PING" => b"+PONG\r\n".to_vec(),
        "CLIENT" => match sub.as_str() {
            "ID" => int(conn as i64 + 1),
            "GETNAME" => NIL.to_vec(),
            "INFO" | "LIST" => bulk(format!("id={} addr=127.0.0.1:0 laddr=127.0.0.1:{port} fd=8 name= db=0\n", conn + 1).as_bytes()),
            _ => ok(),
        },
        "CONFIG" => match sub.as_str() {
            "GET" => {
                let mut pairs: Vec<(&str, &str)> = Vec::new();
                for pattern in &cmd.args[2..] {
                    let p = String::from_utf8_lossy(pattern).to_ascii_lowercase();
                    for (name, value) in CONFIG {
                        if p == *name || p == "*" {
                            pairs.push((name, value));
                        }
                    }
                }
                let mut out = format!("*{}\r\n", pairs.len() * 2).into_bytes();
                for (name, value) in pairs {
                    out.extend(bulk(name.as_bytes()));
                    out.extend(bulk(value.as_bytes()));
                }
                out
            }
            _ => ok(),
        },
        "INFO" => bulk(info(port).as_bytes()),
        "HELLO" if sub == "3" => b"-NOPROTO sorry, this protocol version is not supported\r\n".to_vec(),
        "HELLO" => {
            let mut out = b"*14\r\n".to_vec();
            for (k, v) in [("server", "valkey"), ("version", "8.0.1")] {
                out.extend(bulk(k.as_bytes()));
                out.extend(bulk(v.as_bytes()));
            }
            out.extend(bulk(b"proto"));
            out.extend(int(2));
            out.extend(bulk(b"id"));
            out.extend(int(conn as i64 + 1));
            for (k, v) in [("mode", "standalone"), ("role", "master")] {
                out.extend(bulk(k.as_bytes()));
                out.extend(bulk(v.as_bytes()));
            }
            out.extend(bulk(b"modules"));
            out.extend(b"*0\r\n");
            out
        }
        "CLUSTER" => b"-ERR This instance has cluster support disabled\r\n".to_vec(),
        "COMMAND" => b"*0\r\n".to_vec(),
        _ => return None,
    })
}

const CONFIG: &[(&str, &str)] = &[
    ("proto-max-bulk-len", "536870912"),
    ("maxmemory", "0"),
    ("maxmemory-policy", "noeviction"),
    ("timeout", "0"),
    ("databases", "16"),
];

fn info(port: u16) -> String {
    [
        "# Server",
        "redis_version:7.2.4",
        "server_name:valkey",
        "valkey_version:8.0.1",
        "redis_mode:standalone",
        &format!("process_id:{}", std::process::id()),
        "run_id:fa4efa4efa4efa4efa4efa4efa4efa4efa4efa4e",
        &format!("tcp_port:{port}"),
        "",
        "# Clients",
        "connected_clients:1",
        "",
        "# Memory",
        "used_memory:1048576",
        "used_memory_human:1.00M",
        "maxmemory:0",
        "maxmemory_human:0B",
        "maxmemory_policy:noeviction",
        "",
        "# Stats",
        "keyspace_hits:0",
        "keyspace_misses:0",
        "evicted_keys:0",
        "",
        "# Replication",
        "role:master",
        "connected_slaves:0",
        "",
        "# Keyspace",
        "",
    ]
    .join("\r\n")
}

// ---- reply bytes --------------------------------------------------------------------------

/// The null bulk string (a GET miss).
pub const NIL: &[u8] = b"$-1\r\n";

/// `+OK`.
pub fn ok() -> Vec<u8> {
    b"+OK\r\n".to_vec()
}

/// `:n`.
pub fn int(n: i64) -> Vec<u8> {
    format!(":{n}\r\n").into_bytes()
}

/// A whole bulk string.
pub fn bulk(bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    out
}

/// The 32-byte header the library writes in front of a payload of `payload_len` bytes (see
/// src/format.rs): magic "HCVK", version 1, flags (bit 0: checksum), payload length, the
/// value-format fingerprint, the checksum (0 without one), all little-endian.
pub fn value_header(payload_len: u64, value_format: u64) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[0..4].copy_from_slice(b"HCVK");
    h[4..6].copy_from_slice(&1u16.to_le_bytes());
    h[6..8].copy_from_slice(&0u16.to_le_bytes());
    h[8..16].copy_from_slice(&payload_len.to_le_bytes());
    h[16..24].copy_from_slice(&value_format.to_le_bytes());
    h[24..32].copy_from_slice(&0u64.to_le_bytes());
    h
}

/// The stored value of `payload` (header + payload, no checksum).
pub fn stored_value(payload: &[u8], value_format: u64) -> Vec<u8> {
    let mut v = value_header(payload.len() as u64, value_format).to_vec();
    v.extend_from_slice(payload);
    v
}

/// The complete GET reply for a stored `payload`.
pub fn get_reply(payload: &[u8], value_format: u64) -> Vec<u8> {
    bulk(&stored_value(payload, value_format))
}

/// The first `payload_bytes` bytes of that GET reply: its `$len` line, the header and part of
/// the payload (a torn reply).
pub fn torn_get_reply(payload: &[u8], value_format: u64, payload_bytes: usize) -> Vec<u8> {
    let mut out = format!("${}\r\n", 32 + payload.len()).into_bytes();
    out.extend_from_slice(&value_header(payload.len() as u64, value_format));
    out.extend_from_slice(&payload[..payload_bytes]);
    out
}

/// A minimal key-value store for scripts: SET / GET / EXISTS / DEL / UNLINK answered as a
/// server would, for the commands a test does not script specially.
#[derive(Default)]
pub struct Memory {
    map: Mutex<std::collections::HashMap<Vec<u8>, Vec<u8>>>,
}

impl Memory {
    /// The value stored under the key that ends with `suffix`.
    pub fn get(&self, suffix: &str) -> Option<Vec<u8>> {
        self.map.lock().unwrap().iter().find(|(k, _)| k.ends_with(suffix.as_bytes())).map(|(_, v)| v.clone())
    }

    /// Answers `cmd`.
    pub fn answer(&self, cmd: &Cmd) -> Vec<Step> {
        let mut map = self.map.lock().unwrap();
        let reply = match cmd.name().as_str() {
            "SET" => {
                map.insert(cmd.arg(1).to_vec(), cmd.arg(2).to_vec());
                ok()
            }
            "GET" => map.get(cmd.key()).map_or(NIL.to_vec(), |v| bulk(v)),
            "EXISTS" => int(cmd.args[1..].iter().filter(|k| map.contains_key(*k)).count() as i64),
            "DEL" | "UNLINK" => int(cmd.args[1..].iter().filter(|k| map.remove(*k).is_some()).count() as i64),
            "DBSIZE" => int(map.len() as i64),
            other => format!("-ERR unknown command '{other}' (fake server)\r\n").into_bytes(),
        };
        vec![Step::Send(reply)]
    }
}
