//! `hicache-valkey bench --transports`: batch_set / batch_get over loopback TCP, a Unix domain
//! socket and TLS, side by side in one run, each next to valkey-benchmark over the same transport
//! (`-h/-p`, `-s PATH`, `--tls --cacert CA` with the AES-128-GCM suite the library negotiates). It starts its own valkey-server listening on all
//! three (a throwaway CA and server certificate made with the `openssl` command in a temp dir),
//! so the figures compare transports and nothing else. Kept apart from the main bench (bench.rs).

use crate::client::{Batch, Handle, OpenOptions};
use crate::refs::{self, Target};
use crate::AnyResult;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Params {
    pub quick: bool,
    pub sizes: Vec<usize>,
    pub pages: usize,
    pub segments: usize,
    pub min_mib: Option<u64>,
    pub reps: Option<usize>,
    pub connections: Option<u32>,
}

/// The valkey-server of the run: plaintext port, TLS port, Unix socket; killed on drop.
struct LocalServer {
    child: Child,
    port: u16,
    tls_port: u16,
    socket: PathBuf,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> AnyResult<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn openssl(dir: &Path, args: &[&str]) -> AnyResult<()> {
    let out = Command::new("openssl").args(args).current_dir(dir).output().map_err(|e| format!("cannot run openssl: {e}"))?;
    if !out.status.success() {
        return Err(format!("openssl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

impl LocalServer {
    fn start() -> AnyResult<LocalServer> {
        let dir = tempfile::Builder::new().prefix("hicache-bench-transports-").tempdir()?;
        let d = dir.path();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        openssl(d, &[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=bench CA"]].concat())?;
        openssl(d, &[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]].concat())?;
        std::fs::write(d.join("ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n")?;
        openssl(d, &["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext"])?;
        let (port, tls_port) = (free_port()?, free_port()?);
        let socket = d.join("valkey.sock");
        let p = |f: &str| d.join(f).to_string_lossy().into_owned();
        let mut cmd = Command::new("valkey-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--dir", &p(""), "--logfile", &p("valkey.log"), "--unixsocket", &p("valkey.sock"), "--unixsocketperm", "700"])
            .args(["--tls-port", &tls_port.to_string(), "--tls-cert-file", &p("server.crt"), "--tls-key-file", &p("server.key")])
            .args(["--tls-ca-cert-file", &p("ca.crt"), "--tls-auth-clients", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        refs::die_with_bench(&mut cmd);
        let child = cmd.spawn().map_err(|e| format!("cannot start valkey-server: {e}"))?;
        let server = LocalServer { child, port, tls_port, socket, ca: d.join("ca.crt"), _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = server.target().redis().is_ok() && server.socket.exists() && std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok();
            if up {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err("the bench's valkey-server did not come up within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn target(&self) -> Target {
        Target { host: "127.0.0.1".into(), port: self.port, db: 0, username: None, password: None }
    }

    fn pid(&self) -> Option<u32> {
        Some(self.child.id()).filter(|p| refs::task_cpu_ns(*p).is_some())
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Tcp,
    Unix,
    Tls,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Unix => "Unix socket",
            Transport::Tls => "TLS",
        }
    }

    fn options(self, s: &LocalServer, connections: Option<u32>) -> OpenOptions {
        let base = OpenOptions { host: Some("127.0.0.1".into()), port: Some(s.port), model: Some("bench-transports".into()), connections, ..Default::default() };
        match self {
            Transport::Tcp => base,
            Transport::Unix => OpenOptions { socket: Some(s.socket.to_string_lossy().into_owned()), ..base },
            Transport::Tls => OpenOptions { port: Some(s.tls_port), tls: true, tls_ca_cert: Some(s.ca.to_string_lossy().into_owned()), ..base },
        }
    }

    /// valkey-benchmark's arguments for this transport (after `-h 127.0.0.1 -p PORT`).
    fn vb_args(self, s: &LocalServer) -> Vec<String> {
        match self {
            Transport::Tcp => vec![],
            Transport::Unix => vec!["-s".into(), s.socket.to_string_lossy().into_owned()],
            // The suite the library negotiates (AES-128-GCM): the same cipher on both sides.
            Transport::Tls => vec![
                "-p".into(),
                s.tls_port.to_string(),
                "--tls".into(),
                "--cacert".into(),
                s.ca.to_string_lossy().into_owned(),
                "--tls-ciphersuites".into(),
                "TLS_AES_128_GCM_SHA256".into(),
            ],
        }
    }
}

/// Best GB/s of batch_set and of batch_get over `reps` repetitions of `bytes` bytes each.
fn measure_ours(h: &Handle, size: usize, p: &Params, bytes: u64, reps: usize) -> AnyResult<(f64, f64)> {
    let pages = p.pages.max(1);
    let segments = p.segments.clamp(1, 16);
    let mut src: Vec<u8> = (0..size * pages).map(|i| (i as u32).wrapping_mul(2654435761).rotate_left(9) as u8).collect();
    let mut dst = vec![0u8; size * pages];
    let seg_len = size.div_ceil(segments);
    let segs = |base: *mut u8| -> Vec<Vec<(*mut u8, usize)>> {
        (0..pages)
            .map(|i| (0..size).step_by(seg_len).map(|o| (base.wrapping_add(i * size + o), seg_len.min(size - o))).collect())
            .collect()
    };
    let (src_segs, dst_segs) = (segs(src.as_mut_ptr()), segs(dst.as_mut_ptr()));
    let batches = bytes.div_ceil((size * pages) as u64).max(1) as usize;
    let keys: Vec<Vec<Vec<u8>>> = (0..batches).map(|b| (0..pages).map(|i| format!("t{size:x}:{b:06}:{i:04}").into_bytes()).collect()).collect();
    let mut out = vec![0i32; pages];
    let (mut best_set, mut best_get) = (0f64, 0f64);
    let moved = (batches * pages * size) as f64;
    for _ in 0..reps {
        let t = Instant::now();
        for k in &keys {
            h.batch_set(&Batch::new(k, &src_segs), &mut out)?;
            if out.iter().any(|o| *o != 0) {
                return Err(format!("batch_set failed for a page of {size} bytes: {out:?}").into());
            }
        }
        best_set = best_set.max(moved / t.elapsed().as_secs_f64() / 1e9);
        let t = Instant::now();
        for k in &keys {
            h.batch_get(&Batch::new(k, &dst_segs), &mut out)?;
            if out.iter().any(|o| *o != 0) {
                return Err(format!("batch_get failed for a page of {size} bytes: {out:?}").into());
            }
        }
        best_get = best_get.max(moved / t.elapsed().as_secs_f64() / 1e9);
        if dst != src {
            return Err(format!("batch_get returned other bytes than were set ({size}-byte pages)").into());
        }
    }
    h.clear()?;
    Ok((best_set, best_get))
}

/// Best GB/s of valkey-benchmark SET and GET over a small grid of clients and pipelines.
fn measure_vb(s: &LocalServer, via: &[String], size: usize, bytes: u64, quick: bool) -> Result<(f64, f64), String> {
    let t = s.target();
    let requests = (bytes / size as u64).max(256);
    let keyspace = requests.clamp(16, 4096);
    refs::prefill(&t, size, keyspace).map_err(|e| format!("cannot prefill valkey-benchmark's keys: {e}"))?;
    let clients: &[u32] = if quick { &[1, 2] } else { &[1, 2, 4] };
    let pipelines: &[u32] = if quick { &[16] } else { &[1, 16] };
    let mut best = [0f64; 2];
    for (i, test) in ["set", "get"].into_iter().enumerate() {
        for &c in clients {
            for &pl in pipelines {
                let r = refs::valkey_benchmark_via(&t, via, test, size, c, pl, requests, keyspace, s.pid())?;
                best[i] = best[i].max(r.gbps);
            }
        }
    }
    refs::unlink_keyspace(&t, keyspace).map_err(|e| e.to_string())?;
    Ok((best[0], best[1]))
}

fn size_label(b: usize) -> String {
    if b >= 1 << 20 && b % (1 << 20) == 0 {
        format!("{} MiB", b >> 20)
    } else if b >= 1 << 10 && b % (1 << 10) == 0 {
        format!("{} KiB", b >> 10)
    } else {
        format!("{b} B")
    }
}

pub fn run(p: &Params) -> AnyResult<()> {
    let sizes = if p.sizes.is_empty() { if p.quick { vec![64 << 10, 1 << 20] } else { vec![64 << 10, 1 << 20, 4 << 20] } } else { p.sizes.clone() };
    let bytes = p.min_mib.unwrap_or(if p.quick { 16 } else { 128 }) << 20;
    let reps = p.reps.unwrap_or(if p.quick { 2 } else { 3 }).max(1);
    let server = LocalServer::start()?;
    eprintln!(
        "bench --transports: valkey-server {} on 127.0.0.1:{} (TLS :{}, socket {}); {} pages x {} segments per batch, {} MiB per figure, best of {reps}",
        server.child.id(),
        server.port,
        server.tls_port,
        server.socket.display(),
        p.pages,
        p.segments,
        bytes >> 20
    );
    let transports = [Transport::Tcp, Transport::Unix, Transport::Tls];
    let handles = transports.iter().map(|t| Handle::open(&t.options(&server, p.connections)).map_err(|e| e.to_string())).collect::<Result<Vec<_>, _>>()?;
    println!("| page | transport | batch_set GB/s | valkey-benchmark SET GB/s | ratio | batch_get GB/s | valkey-benchmark GET GB/s | ratio |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut tcp = (0f64, 0f64);
    let mut cost = Vec::new();
    for &size in &sizes {
        for (t, h) in transports.iter().zip(&handles) {
            let (set, get) = measure_ours(h, size, p, bytes, reps)?;
            let (vset, vget) = measure_vb(&server, &t.vb_args(&server), size, bytes, p.quick)?;
            println!("| {} | {} | {set:.2} | {vset:.2} | {:.2}x | {get:.2} | {vget:.2} | {:.2}x |", size_label(size), t.name(), set / vset, get / vget);
            match t {
                Transport::Tcp => tcp = (set, get),
                Transport::Tls => cost.push((size, set / tcp.0, get / tcp.1)),
                Transport::Unix => {}
            }
        }
    }
    println!();
    for (size, set, get) in cost {
        println!("TLS vs TCP at {}: batch_set {:.0}%, batch_get {:.0}% of the TCP figure", size_label(size), set * 100.0, get * 100.0);
    }
    Ok(())
}
