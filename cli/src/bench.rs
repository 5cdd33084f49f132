//! `hicache-valkey bench`: batch_set / batch_get / batch_exists through the C ABI against a local
//! valkey-server, side by side with valkey-benchmark (the server's ceiling) and the valkey-py
//! peer script (the plain Python approach), with RSS, CPU and latency figures; prints a table and
//! writes JSON and a PNG plot.

use crate::client::{outcome_name, version, Batch, Handle, OpenOptions};
use crate::plot;
use crate::refs::{self, Peer, Target, VbRun};
use crate::{human_bytes, AnyResult};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xxhash_rust::xxh3::xxh3_64;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A short smoke run (2 page sizes, 16 MiB per figure, 2 repetitions, fewer reference runs).
    #[arg(long)]
    quick: bool,
    /// Page sizes, e.g. 16K,64K,256K,1M,4M [default: those five; --quick: 64K,1M].
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<String>,
    /// Pages per batch call.
    #[arg(long, default_value_t = 128)]
    pages: usize,
    /// Segments per page (a KV page is often a K half and a V half).
    #[arg(long, default_value_t = 2)]
    segments: usize,
    /// MiB moved per figure and repetition [default: 256; --quick: 16].
    #[arg(long)]
    min_mib: Option<u64>,
    /// Repetitions of each figure; best and median are reported [default: 5; --quick: 2].
    #[arg(long)]
    reps: Option<usize>,
    /// Connections per handle (the library's `connections` option) [default: the library's].
    #[arg(long)]
    connections: Option<u32>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "hicache-valkey-bench.json")]
    json: PathBuf,
    /// Where to write the PNG plot.
    #[arg(long, default_value = "hicache-valkey-bench.png")]
    plot: PathBuf,
    /// Skip the valkey-benchmark reference.
    #[arg(long)]
    no_valkey_benchmark: bool,
    /// Skip the valkey-py reference.
    #[arg(long)]
    no_peer: bool,
    /// Python with `valkey` and `numpy` for the peer script [default: $HICACHE_VALKEY_PEER_PYTHON, else python3].
    #[arg(long)]
    peer_python: Option<PathBuf>,
    /// The peer script [default: ../shared/bench/peer_valkey_py.py next to the source tree].
    #[arg(long)]
    peer_script: Option<PathBuf>,
    /// Skip measuring the cost of the xxh3 payload checksum.
    #[arg(long)]
    no_checksum_cost: bool,
    /// Round trips for the small-page latency figure [default: 5000; --quick: 300].
    #[arg(long)]
    latency_samples: Option<usize>,
}

struct Plan {
    sizes: Vec<usize>,
    min_bytes: u64,
    reps: usize,
    latency_samples: usize,
    vb_clients: Vec<u32>,
    vb_pipelines: Vec<u32>,
    exists_calls: usize,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (s, 1),
        Some((i, _)) => {
            let unit = s[i..].trim().to_ascii_lowercase();
            let m = match unit.as_str() {
                "b" => 1,
                "k" | "kb" | "kib" => 1 << 10,
                "m" | "mb" | "mib" => 1 << 20,
                _ => return Err(format!("page size '{s}': unknown unit (use K or M)")),
            };
            (&s[..i], m)
        }
    };
    let n: usize = num.parse().map_err(|_| format!("page size '{s}' is not a size"))?;
    let bytes = n * mult;
    if !(64..=(64 << 20)).contains(&bytes) {
        return Err(format!("page size '{s}' must be between 64 B and 64 MiB"));
    }
    Ok(bytes)
}

pub fn size_label(b: usize) -> String {
    if b >= 1 << 20 && b % (1 << 20) == 0 {
        format!("{}M", b >> 20)
    } else if b >= 1 << 10 && b % (1 << 10) == 0 {
        format!("{}K", b >> 10)
    } else {
        format!("{b}")
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// best (max) and median of throughput samples.
fn best_median(v: &[f64]) -> (f64, f64) {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    if s.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let med = if s.len() % 2 == 1 { s[s.len() / 2] } else { (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0 };
    (s[s.len() - 1], med)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Caller-side host buffers for one page size: `pages` pages of `size` bytes, each split in
/// `segments` segments, one for writing and one for reading back.
struct Buffers {
    src: Vec<u8>,
    dst: Vec<u8>,
    size: usize,
    pages: usize,
    segments: usize,
}

impl Buffers {
    fn new(size: usize, pages: usize, segments: usize, seed: u64) -> Buffers {
        let mut src = vec![0u8; size * pages];
        let mut x = seed | 1;
        for chunk in src.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let mut dst = vec![0u8; size * pages];
        dst.fill(0x5a); // touch it: the caller's buffers are resident before we measure
        Buffers { src, dst, size, pages, segments }
    }

    fn segs(base: *mut u8, size: usize, pages: usize, segments: usize) -> Vec<Vec<(*mut u8, usize)>> {
        (0..pages)
            .map(|p| {
                let page = p * size;
                let cut: Vec<usize> = (0..=segments).map(|s| s * size / segments).collect();
                // SAFETY: offsets are within the page.
                cut.windows(2).map(|w| (unsafe { base.add(page + w[0]) }, w[1] - w[0])).collect()
            })
            .collect()
    }

    fn total(&self) -> u64 {
        (self.size * self.pages) as u64
    }
}

/// Stamps page identity (batch, page, rep) at both ends of every page, so a value read back
/// under the wrong key, or half of it, cannot pass verification; returns each page's xxh3.
fn stamp(base: *mut u8, size: usize, pages: usize, batch: usize, rep: usize) -> Vec<u64> {
    (0..pages)
        .map(|p| {
            // SAFETY: within the buffer of size * pages bytes; no reference to it is alive.
            let page = unsafe { std::slice::from_raw_parts_mut(base.add(p * size), size) };
            let id = [(batch as u64) << 32 | p as u64, rep as u64 ^ 0x9e37_79b9_7f4a_7c15];
            let tag: Vec<u8> = id.iter().flat_map(|v| v.to_le_bytes()).collect();
            let n = tag.len().min(size / 2);
            page[..n].copy_from_slice(&tag[..n]);
            let end = size - n;
            page[end..].copy_from_slice(&tag[..n]);
            xxh3_64(page)
        })
        .collect()
}

#[derive(Default, Clone)]
struct OpFigures {
    gbps: Vec<f64>,
    /// Cores' worth of CPU used by other processes during each repetition.
    foreign: Vec<f64>,
    server_cpu: Vec<f64>,
    client_cpu: Vec<f64>,
}

impl OpFigures {
    fn json(&self) -> Value {
        let (best, med) = best_median(&self.gbps);
        json!({
            "best_GBps": r3(best), "median_GBps": r3(med), "runs_GBps": self.gbps.iter().map(|v| r3(*v)).collect::<Vec<_>>(),
            "server_cpu": r3(best_median(&self.server_cpu).1), "client_cpu": r3(best_median(&self.client_cpu).1),
            "foreign_cores": self.foreign.iter().map(|v| r3(*v)).collect::<Vec<_>>(),
        })
    }
}

fn r3(v: f64) -> Value {
    if v.is_finite() {
        json!((v * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

struct OursResult {
    set: OpFigures,
    get: OpFigures,
    /// VmHWM growth over the buffers' RSS while the figure ran.
    rss_growth: u64,
    hwm_reset: bool,
}

/// A timed call: wall time, plus server and client CPU over the same interval.
struct Timer {
    wall: Duration,
    server: u64,
    client: u64,
    pid: Option<u32>,
}

impl Timer {
    fn new(pid: Option<u32>) -> Timer {
        Timer { wall: Duration::ZERO, server: 0, client: 0, pid }
    }

    fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let s0 = self.pid.and_then(refs::task_cpu_ns);
        let c0 = refs::self_cpu_ns();
        let t0 = Instant::now();
        let r = f();
        self.wall += t0.elapsed();
        self.client += refs::self_cpu_ns() - c0;
        if let (Some(a), Some(b)) = (s0, self.pid.and_then(refs::task_cpu_ns)) {
            self.server += b - a;
        }
        r
    }

    fn record(&self, bytes: u64, into: &mut OpFigures) {
        let w = self.wall.as_nanos() as f64;
        into.gbps.push(bytes as f64 / w);
        into.client_cpu.push(self.client as f64 / w);
        into.server_cpu.push(if self.pid.is_some() { self.server as f64 / w } else { f64::NAN });
    }
}

fn check_outcomes(op: &str, out: &[i32]) -> AnyResult<()> {
    if let Some((i, o)) = out.iter().enumerate().find(|(_, o)| **o != 0) {
        let failed = out.iter().filter(|o| **o != 0).count();
        return Err(format!("{op}: {failed} of {} keys failed, key {i}: {}", out.len(), outcome_name(*o)).into());
    }
    Ok(())
}

fn page_key(size: usize, batch: usize, page: usize) -> Vec<u8> {
    // 64 hex characters, like SGLang's page hashes.
    format!("{:016x}{:016x}{:032x}", size, batch, xxh3_64(&(page as u64).to_le_bytes()) as u128 * 0x1_0000_0001 + page as u128).into_bytes()
}

/// Measures batch_set and batch_get of `batches` batches of `pages` pages of `size` bytes.
fn measure_ours(h: &Handle, size: usize, p: &Plan, args: &BenchArgs, pid: Option<u32>, label: &str) -> AnyResult<OursResult> {
    let mut buf = Buffers::new(size, args.pages, args.segments, (size as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let batches = p.min_bytes.div_ceil(buf.total()).max(1) as usize;
    let (src, dst) = (buf.src.as_mut_ptr(), buf.dst.as_mut_ptr());
    let (src_segs, dst_segs) = (Buffers::segs(src, size, buf.pages, buf.segments), Buffers::segs(dst, size, buf.pages, buf.segments));
    let keys: Vec<Vec<Vec<u8>>> = (0..batches).map(|b| (0..buf.pages).map(|i| page_key(size, b, i)).collect()).collect();
    let set_batches: Vec<Batch> = keys.iter().map(|k| Batch::new(k, &src_segs)).collect();
    let get_batches: Vec<Batch> = keys.iter().map(|k| Batch::new(k, &dst_segs)).collect();
    let mut out = vec![0i32; buf.pages];
    let (rss_base, _) = refs::rss();
    let hwm_reset = refs::reset_hwm();
    let (rss_base, hwm_base) = if hwm_reset { (rss_base, rss_base) } else { (rss_base, refs::rss().1) };
    let mut res = OursResult { set: OpFigures::default(), get: OpFigures::default(), rss_growth: 0, hwm_reset };
    let bytes = batches as u64 * buf.total();
    for rep in 0..p.reps {
        let mut expected = Vec::with_capacity(batches);
        let foreign = refs::Foreign::start(pid);
        let mut t = Timer::new(pid);
        for (b, batch) in set_batches.iter().enumerate() {
            expected.push(stamp(src, size, buf.pages, b, rep));
            t.time(|| h.batch_set(batch, &mut out))?;
            check_outcomes("batch_set", &out)?;
        }
        t.record(bytes, &mut res.set);
        res.set.foreign.push(foreign.cores());
        let foreign = refs::Foreign::start(pid);
        let mut t = Timer::new(pid);
        for (b, batch) in get_batches.iter().enumerate() {
            // SAFETY: dst is ours; no reference to it is alive.
            unsafe { std::ptr::write_bytes(dst, 0, size * buf.pages) };
            t.time(|| h.batch_get(batch, &mut out))?;
            check_outcomes("batch_get", &out)?;
            for (i, want) in expected[b].iter().enumerate() {
                // SAFETY: within dst; the call has returned.
                let page = unsafe { std::slice::from_raw_parts(dst.add(i * size), size) };
                if xxh3_64(page) != *want {
                    return Err(format!("batch_get returned wrong bytes for page {i} of batch {b} ({} pages)", size_label(size)).into());
                }
            }
        }
        t.record(bytes, &mut res.get);
        res.get.foreign.push(foreign.cores());
        let busy = res.set.foreign.last().unwrap().max(*res.get.foreign.last().unwrap());
        progress(&format!(
            "{label} {:>4}: rep {}/{}: set {:.2} GB/s, get {:.2} GB/s ({} batches of {}){}",
            size_label(size),
            rep + 1,
            p.reps,
            res.set.gbps.last().unwrap(),
            res.get.gbps.last().unwrap(),
            batches,
            buf.pages,
            if busy > 0.15 { format!(" [other processes used {:.0}% of a core: figure disturbed]", busy * 100.0) } else { String::new() }
        ));
    }
    let (_, hwm) = refs::rss();
    res.rss_growth = hwm.saturating_sub(hwm_base.max(rss_base));
    drop((set_batches, get_batches));
    buf.src.clear();
    Ok(res)
}

struct VbBest {
    set: Option<VbRun>,
    get: Option<VbRun>,
    runs: Vec<VbRun>,
}

fn measure_vb(t: &Target, size: usize, p: &Plan, keyspace: u64, pid: Option<u32>) -> Result<VbBest, String> {
    let requests = (p.min_bytes / size as u64).max(256);
    prefill(t, size, keyspace)?;
    let mut runs = Vec::new();
    for test in ["set", "get"] {
        for &c in &p.vb_clients {
            for &pl in &p.vb_pipelines {
                let r = refs::valkey_benchmark(t, test, size, c, pl, requests, keyspace, pid)?;
                progress(&format!(
                    "valkey-benchmark {:>4}: {} -c {c} -P {pl}: {:.2} GB/s (server CPU {:.0}%)",
                    size_label(size),
                    test.to_uppercase(),
                    r.gbps,
                    100.0 * r.server_cpu
                ));
                runs.push(r);
            }
        }
    }
    refs::unlink_keyspace(t, keyspace).map_err(|e| e.to_string())?;
    let best = |test: &str| runs.iter().filter(|r| r.test == test).max_by(|a, b| a.gbps.total_cmp(&b.gbps)).cloned();
    Ok(VbBest { set: best("set"), get: best("get"), runs })
}

fn prefill(t: &Target, size: usize, keyspace: u64) -> Result<(), String> {
    refs::prefill(t, size, keyspace).map_err(|e| format!("cannot prefill valkey-benchmark's keys: {e}"))
}

fn vb_json(r: &VbRun) -> Value {
    json!({"test": r.test, "clients": r.clients, "pipeline": r.pipeline, "requests": r.requests, "rps": r3(r.rps),
           "GBps": r3(r.gbps), "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "server_cpu": r3(r.server_cpu)})
}

struct SizeResult {
    size: usize,
    ours: OursResult,
    checksum: Option<OursResult>,
    vb: Option<VbBest>,
    peer: Option<Peer>,
    notes: Vec<String>,
}

fn ratio(a: f64, b: Option<f64>) -> f64 {
    match b {
        Some(b) if b > 0.0 => a / b,
        _ => f64::NAN,
    }
}

fn fmt_opt(v: f64, width: usize, prec: usize) -> String {
    if v.is_finite() {
        format!("{v:>width$.prec$}")
    } else {
        format!("{:>width$}", "-")
    }
}

pub fn run(opts: &OpenOptions, settings: &hicache_valkey::Settings, args: &BenchArgs) -> AnyResult<()> {
    let started = Instant::now();
    let mut settings = settings.clone();
    let model = settings.model_name.clone().unwrap_or_else(|| "hicache-bench".into());
    settings.model_name = Some(model.clone());
    let cfg = settings.resolve()?;
    if !is_loopback(&cfg.host) {
        return Err(format!("bench runs against a local server only (loopback), not {}", cfg.server()).into());
    }
    if args.pages == 0 || args.segments == 0 || args.segments > 64 {
        return Err("--pages must be positive and --segments between 1 and 64".into());
    }
    let q = args.quick;
    let sizes = if args.sizes.is_empty() {
        if q {
            vec![64 << 10, 1 << 20]
        } else {
            vec![16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20]
        }
    } else {
        args.sizes.iter().map(|s| parse_size(s)).collect::<Result<Vec<_>, _>>()?
    };
    let plan = Plan {
        sizes,
        min_bytes: args.min_mib.unwrap_or(if q { 16 } else { 256 }) << 20,
        reps: args.reps.unwrap_or(if q { 2 } else { 5 }).max(1),
        latency_samples: args.latency_samples.unwrap_or(if q { 300 } else { 5000 }).max(10),
        vb_clients: if q { vec![1, 2] } else { vec![1, 2, 3, 4] },
        vb_pipelines: if q { vec![1, 16] } else { vec![1, 4, 16] },
        exists_calls: if q { 200 } else { 4000 },
    };
    let target = Target { host: cfg.host.clone(), port: cfg.port, db: cfg.db, username: cfg.username.clone(), password: cfg.password.clone() };
    let mut o = opts.clone();
    o.model = Some(model.clone());
    o.connections = args.connections.or(o.connections);
    o.checksum = Some(false);
    o.timeout_ms = Some(30_000);
    let h = Handle::open(&o)?;
    let hc = if args.no_checksum_cost { None } else { Some(Handle::open(&OpenOptions { checksum: Some(true), ..o.clone() })?) };
    h.clear()?;

    // Server facts: version, pid (for its CPU time when it runs on this machine), io-threads.
    let mut info_con = target.redis().map_err(|e| format!("cannot connect to {}: {e}", cfg.server()))?;
    let info: String = redis::cmd("INFO").arg("server").query(&mut info_con)?;
    let field = |name: &str| info.lines().find_map(|l| l.strip_prefix(&format!("{name}:")).map(|v| v.trim().to_string()));
    let server_version = field("valkey_version").or_else(|| field("redis_version")).unwrap_or_default();
    let pid = field("process_id").and_then(|p| p.parse::<u32>().ok()).filter(|p| refs::task_cpu_ns(*p).is_some());
    let io_threads: String = redis::cmd("CONFIG").arg("GET").arg("io-threads").query::<Vec<String>>(&mut info_con).ok().and_then(|v| v.get(1).cloned()).unwrap_or_default();
    drop(info_con);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    progress(&format!(
        "{} {} against valkey {server_version} at {} (io-threads {io_threads}), {cores} cores; model '{model}'; {} pages x {} segments per batch, >= {} MiB per figure, {} reps",
        if q { "quick run" } else { "full run" },
        version(),
        cfg.server(),
        args.pages,
        args.segments,
        plan.min_bytes >> 20,
        plan.reps
    ));
    if pid.is_none() {
        progress("server CPU is not measured (its process is not visible from here)");
    }

    // References available?
    let have_vb = !args.no_valkey_benchmark && refs::run_bounded(std::process::Command::new("valkey-benchmark").arg("--version"), Duration::from_secs(10)).is_ok();
    if !args.no_valkey_benchmark && !have_vb {
        progress("valkey-benchmark not found: skipping that reference (scripts/install-deps.sh installs it)");
    }
    let peer_script = args.peer_script.clone().unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/bench/peer_valkey_py.py")));
    let peer_python = args
        .peer_python
        .clone()
        .or_else(|| std::env::var_os("HICACHE_VALKEY_PEER_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"));
    let mut have_peer = !args.no_peer;
    if have_peer && (cfg.password.is_some() || cfg.db != 0) {
        progress("valkey-py peer skipped: its script connects to db 0 without a password");
        have_peer = false;
    }
    if have_peer && !peer_script.exists() {
        progress(&format!("valkey-py peer skipped: {} not found (--peer-script)", peer_script.display()));
        have_peer = false;
    }
    if have_peer && !refs::python_has_peer_deps(&peer_python) {
        progress(&format!("valkey-py peer skipped: {} cannot import valkey and numpy (--peer-python)", peer_python.display()));
        have_peer = false;
    }

    let mut results = Vec::new();
    for (si, &size) in plan.sizes.iter().enumerate() {
        progress(&format!("page size {} ({}/{})", size_label(size), si + 1, plan.sizes.len()));
        let mut notes = Vec::new();
        let ours = measure_ours(&h, size, &plan, args, pid, "ours")?;
        let checksum = match &hc {
            Some(hc) => Some(measure_ours(hc, size, &plan, args, pid, "ours+xxh3")?),
            None => None,
        };
        h.clear()?;
        let total_pages = plan.min_bytes.div_ceil((size * args.pages) as u64).max(1) * args.pages as u64;
        let vb = if have_vb {
            match measure_vb(&target, size, &plan, total_pages, pid) {
                Ok(v) => Some(v),
                Err(e) => {
                    progress(&format!("valkey-benchmark failed: {e}"));
                    notes.push(format!("valkey-benchmark failed: {e}"));
                    None
                }
            }
        } else {
            None
        };
        let peer = if have_peer {
            let repeat = (plan.min_bytes / (size * args.pages) as u64).clamp(if q { 1 } else { 3 }, 64) as usize;
            match refs::peer(&peer_python, &peer_script, cfg.port, args.pages, size, repeat) {
                Ok(p) => {
                    progress(&format!("valkey-py {:>4}: set {:.2} GB/s, get {:.2} GB/s (best of {repeat})", size_label(size), p.set_gbps, p.get_gbps));
                    Some(p)
                }
                Err(e) => {
                    progress(&format!("valkey-py peer failed: {e}"));
                    notes.push(format!("valkey-py peer failed: {e}"));
                    None
                }
            }
        } else {
            None
        };
        results.push(SizeResult { size, ours, checksum, vb, peer, notes });
    }

    let exists = measure_exists(&h, &plan, args.pages, pid)?;
    let latency = measure_latency(&h, &plan, &target, have_vb, pid)?;
    h.clear()?;

    let doc = report(&results, &exists, &latency, &plan, args, &cfg.server(), &server_version, &io_threads, cores, started.elapsed());
    std::fs::write(&args.json, serde_json::to_string_pretty(&doc)? + "\n").map_err(|e| format!("cannot write {}: {e}", args.json.display()))?;
    draw(&results, &doc).save(&args.plot).map_err(|e| format!("cannot write {}: {e}", args.plot.display()))?;
    println!("\nwrote {} and {}", args.json.display(), args.plot.display());
    Ok(())
}

struct ExistsResult {
    keys_per_s: Vec<f64>,
    p50_us: f64,
    p99_us: f64,
    batch: usize,
}

fn measure_exists(h: &Handle, p: &Plan, pages: usize, pid: Option<u32>) -> AnyResult<ExistsResult> {
    let size = 4096;
    let buf = Buffers::new(size, pages, 1, 7);
    let segs = Buffers::segs(buf.src.as_ptr() as *mut u8, size, pages, 1);
    let keys: Vec<Vec<u8>> = (0..pages).map(|i| page_key(size, 999, i)).collect();
    let batch = Batch::new(&keys, &segs);
    let mut out = vec![0i32; pages];
    h.batch_set(&batch, &mut out)?;
    check_outcomes("batch_set", &out)?;
    let mut found = vec![0u8; pages];
    let mut res = ExistsResult { keys_per_s: Vec::new(), p50_us: 0.0, p99_us: 0.0, batch: pages };
    let mut lat = Vec::with_capacity(p.exists_calls * p.reps);
    for rep in 0..p.reps {
        let mut t = Timer::new(pid);
        for _ in 0..p.exists_calls {
            let t0 = Instant::now();
            let leading = t.time(|| h.batch_exists(&batch, &mut found))?;
            lat.push(t0.elapsed().as_nanos() as f64 / 1e3);
            if leading != pages {
                return Err(format!("batch_exists found {leading} of {pages} leading keys").into());
            }
        }
        res.keys_per_s.push((p.exists_calls * pages) as f64 / t.wall.as_secs_f64());
        progress(&format!("exists: rep {}/{}: {:.0} keys/s in {pages}-key batches", rep + 1, p.reps, res.keys_per_s.last().unwrap()));
    }
    lat.sort_by(f64::total_cmp);
    res.p50_us = percentile(&lat, 0.5);
    res.p99_us = percentile(&lat, 0.99);
    Ok(res)
}

struct LatencyResult {
    set_us: (f64, f64),
    get_us: (f64, f64),
    vb_set_ms: Option<(f64, f64)>,
    vb_get_ms: Option<(f64, f64)>,
    samples: usize,
}

fn measure_latency(h: &Handle, p: &Plan, t: &Target, have_vb: bool, pid: Option<u32>) -> AnyResult<LatencyResult> {
    let size = 4096;
    let mut buf = Buffers::new(size, 1, 1, 11);
    let (src, dst) = (buf.src.as_mut_ptr(), buf.dst.as_mut_ptr());
    let keys = vec![page_key(size, 777, 0)];
    let set = Batch::new(&keys, &Buffers::segs(src, size, 1, 1));
    let get = Batch::new(&keys, &Buffers::segs(dst, size, 1, 1));
    let mut out = [0i32; 1];
    let (mut s, mut g) = (Vec::with_capacity(p.latency_samples), Vec::with_capacity(p.latency_samples));
    for i in 0..p.latency_samples + 50 {
        let t0 = Instant::now();
        h.batch_set(&set, &mut out)?;
        let ts = t0.elapsed();
        check_outcomes("batch_set", &out)?;
        let t0 = Instant::now();
        h.batch_get(&get, &mut out)?;
        let tg = t0.elapsed();
        check_outcomes("batch_get", &out)?;
        if i >= 50 {
            s.push(ts.as_nanos() as f64 / 1e3);
            g.push(tg.as_nanos() as f64 / 1e3);
        }
    }
    // SAFETY: both buffers are ours and 4096 bytes long; no call is running.
    if unsafe { std::slice::from_raw_parts(src, size) != std::slice::from_raw_parts(dst, size) } {
        return Err("batch_get of a 4 KiB page returned wrong bytes".into());
    }
    s.sort_by(f64::total_cmp);
    g.sort_by(f64::total_cmp);
    let mut res = LatencyResult {
        set_us: (percentile(&s, 0.5), percentile(&s, 0.99)),
        get_us: (percentile(&g, 0.5), percentile(&g, 0.99)),
        vb_set_ms: None,
        vb_get_ms: None,
        samples: p.latency_samples,
    };
    progress(&format!(
        "latency 4K x1: set p50 {:.0} µs p99 {:.0} µs, get p50 {:.0} µs p99 {:.0} µs",
        res.set_us.0, res.set_us.1, res.get_us.0, res.get_us.1
    ));
    if have_vb {
        let n = (p.latency_samples as u64 * 4).max(1000);
        let run = || -> Result<(VbRun, VbRun), String> {
            prefill(t, size, 1000)?;
            let set = refs::valkey_benchmark(t, "set", size, 1, 1, n, 1000, pid)?;
            let get = refs::valkey_benchmark(t, "get", size, 1, 1, n, 1000, pid)?;
            refs::unlink_keyspace(t, 1000).map_err(|e| e.to_string())?;
            Ok((set, get))
        };
        match run() {
            Ok((s, g)) => {
                progress(&format!(
                    "valkey-benchmark -c 1 4K: SET p50 {:.3} ms p99 {:.3} ms, GET p50 {:.3} ms p99 {:.3} ms",
                    s.p50_ms, s.p99_ms, g.p50_ms, g.p99_ms
                ));
                res.vb_set_ms = Some((s.p50_ms, s.p99_ms));
                res.vb_get_ms = Some((g.p50_ms, g.p99_ms));
            }
            Err(e) => progress(&format!("valkey-benchmark latency run failed: {e}")),
        }
    }
    drop((set, get));
    buf.src.clear();
    Ok(res)
}

#[allow(clippy::too_many_arguments)]
fn report(
    results: &[SizeResult],
    exists: &ExistsResult,
    lat: &LatencyResult,
    p: &Plan,
    args: &BenchArgs,
    server: &str,
    server_version: &str,
    io_threads: &str,
    cores: usize,
    took: Duration,
) -> Value {
    // Table.
    println!();
    println!(
        "{:>5} | {:>13} {:>13} | {:>11} {:>11} | {:>7} {:>7} | {:>6} {:>6} | {:>6} {:>6} | {:>6} {:>6} | {:>8}",
        "page", "set best/med", "get best/med", "vb SET best", "vb GET best", "py set", "py get", "set/vb", "get/vb", "set/py", "get/py", "srvCPU", "cliCPU", "RSS+"
    );
    println!("{}", "-".repeat(150));
    let mut sizes_json = Vec::new();
    for r in results {
        let (sb, sm) = best_median(&r.ours.set.gbps);
        let (gb, gm) = best_median(&r.ours.get.gbps);
        let vbs = r.vb.as_ref().and_then(|v| v.set.as_ref()).map(|x| x.gbps);
        let vbg = r.vb.as_ref().and_then(|v| v.get.as_ref()).map(|x| x.gbps);
        let (ps, pg) = (r.peer.as_ref().map(|x| x.set_gbps), r.peer.as_ref().map(|x| x.get_gbps));
        let srv = format!("{:.0}/{:.0}%", 100.0 * best_median(&r.ours.set.server_cpu).1, 100.0 * best_median(&r.ours.get.server_cpu).1);
        let cli = format!("{:.0}/{:.0}%", 100.0 * best_median(&r.ours.set.client_cpu).1, 100.0 * best_median(&r.ours.get.client_cpu).1);
        println!(
            "{:>5} | {:>6.2}/{:<6.2} {:>6.2}/{:<6.2} | {} {} | {} {} | {} {} | {} {} | {:>6} {:>6} | {:>8}",
            size_label(r.size),
            sb,
            sm,
            gb,
            gm,
            fmt_opt(vbs.unwrap_or(f64::NAN), 11, 2),
            fmt_opt(vbg.unwrap_or(f64::NAN), 11, 2),
            fmt_opt(ps.unwrap_or(f64::NAN), 7, 2),
            fmt_opt(pg.unwrap_or(f64::NAN), 7, 2),
            fmt_opt(ratio(sb, vbs), 6, 2),
            fmt_opt(ratio(gb, vbg), 6, 2),
            fmt_opt(ratio(sb, ps), 6, 1),
            fmt_opt(ratio(gb, pg), 6, 1),
            srv,
            cli,
            human_bytes(r.ours.rss_growth)
        );
        let mut j = json!({
            "page_bytes": r.size,
            "label": size_label(r.size),
            "ours": {"set": r.ours.set.json(), "get": r.ours.get.json(), "rss_growth_bytes": r.ours.rss_growth, "hwm_reset": r.ours.hwm_reset},
            "ratios": {"set_vs_valkey_benchmark": r3(ratio(sb, vbs)), "get_vs_valkey_benchmark": r3(ratio(gb, vbg)),
                        "set_vs_valkey_py": r3(ratio(sb, ps)), "get_vs_valkey_py": r3(ratio(gb, pg))},
            "notes": r.notes,
        });
        if let Some(c) = &r.checksum {
            let (cs, _) = best_median(&c.set.gbps);
            let (cg, _) = best_median(&c.get.gbps);
            j["ours_checksum"] = json!({"set": c.set.json(), "get": c.get.json(), "set_cost": r3(1.0 - cs / sb), "get_cost": r3(1.0 - cg / gb)});
        }
        if let Some(v) = &r.vb {
            j["valkey_benchmark"] = json!({
                "set": v.set.as_ref().map(vb_json), "get": v.get.as_ref().map(vb_json),
                "runs": v.runs.iter().map(vb_json).collect::<Vec<_>>(),
            });
        }
        if let Some(pe) = &r.peer {
            j["valkey_py"] = json!({"set_GBps": pe.set_gbps, "get_GBps": pe.get_gbps, "exists_per_s": pe.exists_per_s});
        }
        sizes_json.push(j);
    }
    println!("GB/s = 1e9 bytes/s of page payload. vb = valkey-benchmark best of -c {:?} x -P {:?}; py = valkey-py peer (best).", p.vb_clients, p.vb_pipelines);
    println!("srvCPU / cliCPU = valkey-server / this process CPU time over wall time during set/get (100% = one core). RSS+ = VmHWM growth beyond the caller's buffers.");
    if results.iter().any(|r| r.checksum.is_some()) {
        println!("\nxxh3 checksum cost (checksum=1 vs 0, best GB/s):");
        for r in results {
            if let Some(c) = &r.checksum {
                let (sb, gb) = (best_median(&r.ours.set.gbps).0, best_median(&r.ours.get.gbps).0);
                let (cs, cg) = (best_median(&c.set.gbps).0, best_median(&c.get.gbps).0);
                println!(
                    "  {:>4}: set {:.2} -> {:.2} GB/s ({:+.0}%), get {:.2} -> {:.2} GB/s ({:+.0}%)",
                    size_label(r.size),
                    sb,
                    cs,
                    100.0 * (cs / sb - 1.0),
                    gb,
                    cg,
                    100.0 * (cg / gb - 1.0)
                );
            }
        }
    }
    let (eb, em) = best_median(&exists.keys_per_s);
    println!("\nbatch_exists ({}-key batches): best {:.0} keys/s, median {:.0} keys/s; per call p50 {:.0} µs, p99 {:.0} µs", exists.batch, eb, em, exists.p50_us, exists.p99_us);
    let vb_lat = |v: Option<(f64, f64)>| v.map_or("-".to_string(), |(a, b)| format!("p50 {:.0} µs, p99 {:.0} µs", a * 1e3, b * 1e3));
    println!(
        "one 4 KiB page, batch of 1 ({} round trips): set p50 {:.0} µs, p99 {:.0} µs; get p50 {:.0} µs, p99 {:.0} µs",
        lat.samples, lat.set_us.0, lat.set_us.1, lat.get_us.0, lat.get_us.1
    );
    println!("  valkey-benchmark -c 1 -P 1 -d 4096: SET {}; GET {}", vb_lat(lat.vb_set_ms), vb_lat(lat.vb_get_ms));
    let max_rss = results.iter().map(|r| r.ours.rss_growth).max().unwrap_or(0);
    println!("peak RSS growth beyond the caller's buffers (VmHWM): {} at most over all page sizes", human_bytes(max_rss));

    // Targets.
    let mut targets = Vec::new();
    let mut check = |name: String, value: f64, goal: f64| {
        let ok = value.is_finite() && value >= goal;
        targets.push(json!({"target": name, "value": r3(value), "goal": goal, "met": value.is_finite().then_some(ok)}));
    };
    for r in results {
        let goal = if r.size < 64 << 10 { 0.6 } else { 0.8 };
        let vbs = r.vb.as_ref().and_then(|v| v.set.as_ref()).map(|x| x.gbps);
        let vbg = r.vb.as_ref().and_then(|v| v.get.as_ref()).map(|x| x.gbps);
        check(format!("{} set / valkey-benchmark SET", size_label(r.size)), ratio(best_median(&r.ours.set.gbps).0, vbs), goal);
        check(format!("{} get / valkey-benchmark GET", size_label(r.size)), ratio(best_median(&r.ours.get.gbps).0, vbg), goal);
        if r.size >= 256 << 10 {
            check(format!("{} get / valkey-py get", size_label(r.size)), ratio(best_median(&r.ours.get.gbps).0, r.peer.as_ref().map(|x| x.get_gbps)), 5.0);
            check(format!("{} set / valkey-py set", size_label(r.size)), ratio(best_median(&r.ours.set.gbps).0, r.peer.as_ref().map(|x| x.set_gbps)), 2.0);
        }
    }
    check(format!("batch_exists keys/s ({}-key batches)", exists.batch), eb, 1e6);
    check("RSS growth MiB (goal: < 32, shown as 32 - growth >= 0)".into(), 32.0 - max_rss as f64 / (1u64 << 20) as f64, 0.0);
    if let (Some(s), Some(g)) = (lat.vb_set_ms, lat.vb_get_ms) {
        check("4K set p50 within 2x of valkey-benchmark -c 1 (2 - ours/vb)".into(), 2.0 - lat.set_us.0 / (s.0 * 1e3), 0.0);
        check("4K get p50 within 2x of valkey-benchmark -c 1 (2 - ours/vb)".into(), 2.0 - lat.get_us.0 / (g.0 * 1e3), 0.0);
        check("4K set p99 within 2x of valkey-benchmark -c 1 (2 - ours/vb)".into(), 2.0 - lat.set_us.1 / (s.1 * 1e3), 0.0);
        check("4K get p99 within 2x of valkey-benchmark -c 1 (2 - ours/vb)".into(), 2.0 - lat.get_us.1 / (g.1 * 1e3), 0.0);
    }
    let missed: Vec<&Value> = targets.iter().filter(|t| t["met"] == json!(false)).collect();
    println!("\ntargets: {} of {} met", targets.iter().filter(|t| t["met"] == json!(true)).count(), targets.len());
    for t in &missed {
        println!("  MISSED: {} = {} (goal {})", t["target"].as_str().unwrap_or(""), t["value"], t["goal"]);
    }
    println!("took {:.1} s", took.as_secs_f64());

    json!({
        "tool": "hicache-valkey bench",
        "library_version": version(),
        "quick": args.quick,
        "server": server,
        "server_version": server_version,
        "server_io_threads": io_threads,
        "cores": cores,
        "pages_per_batch": args.pages,
        "segments_per_page": args.segments,
        "min_bytes_per_figure": p.min_bytes,
        "repetitions": p.reps,
        "connections": args.connections,
        "valkey_benchmark_clients": p.vb_clients,
        "valkey_benchmark_pipelines": p.vb_pipelines,
        "sizes": sizes_json,
        "exists": {"batch": exists.batch, "best_keys_per_s": r3(eb), "median_keys_per_s": r3(em), "p50_us": r3(exists.p50_us), "p99_us": r3(exists.p99_us)},
        "latency_4k_batch_of_1": {
            "samples": lat.samples,
            "set_p50_us": r3(lat.set_us.0), "set_p99_us": r3(lat.set_us.1), "get_p50_us": r3(lat.get_us.0), "get_p99_us": r3(lat.get_us.1),
            "valkey_benchmark_c1_set_p50_ms": lat.vb_set_ms.map(|v| v.0), "valkey_benchmark_c1_set_p99_ms": lat.vb_set_ms.map(|v| v.1),
            "valkey_benchmark_c1_get_p50_ms": lat.vb_get_ms.map(|v| v.0), "valkey_benchmark_c1_get_p99_ms": lat.vb_get_ms.map(|v| v.1),
        },
        "max_rss_growth_bytes": max_rss,
        "targets": targets,
        "seconds": r3(took.as_secs_f64()),
    })
}

fn draw(results: &[SizeResult], doc: &Value) -> plot::Canvas {
    let ticks: Vec<String> = results.iter().map(|r| size_label(r.size)).collect();
    let mut panels = Vec::new();
    for op in ["set", "get"] {
        let mut series = Vec::new();
        let pts = |f: &dyn Fn(&SizeResult) -> Option<f64>| -> Vec<(f64, f64)> {
            results.iter().enumerate().filter_map(|(i, r)| f(r).filter(|v| v.is_finite()).map(|v| (i as f64, v))).collect()
        };
        let ours = pts(&|r| Some(best_median(if op == "set" { &r.ours.set.gbps } else { &r.ours.get.gbps }).0));
        series.push(plot::Series { label: "hicache-valkey (C ABI)".into(), color: plot::SERIES[0], dash: 0, points: ours });
        let ck = pts(&|r| r.checksum.as_ref().map(|c| best_median(if op == "set" { &c.set.gbps } else { &c.get.gbps }).0));
        if !ck.is_empty() {
            series.push(plot::Series { label: "hicache-valkey + xxh3".into(), color: plot::SERIES[5], dash: 8, points: ck });
        }
        let vb = pts(&|r| r.vb.as_ref().and_then(|v| if op == "set" { v.set.as_ref() } else { v.get.as_ref() }).map(|x| x.gbps));
        if !vb.is_empty() {
            series.push(plot::Series { label: "valkey-benchmark (best)".into(), color: plot::SERIES[1], dash: 0, points: vb });
        }
        let py = pts(&|r| r.peer.as_ref().map(|p| if op == "set" { p.set_gbps } else { p.get_gbps }));
        if !py.is_empty() {
            series.push(plot::Series { label: "valkey-py pipeline".into(), color: plot::SERIES[2], dash: 0, points: py });
        }
        panels.push(plot::Panel { title: format!("batch_{op}"), x_ticks: ticks.clone(), series });
    }
    let footer = vec![format!(
        "valkey {} on {} cores, loopback; {} pages per batch, {} segments per page; best of {} reps; hicache-valkey {}",
        doc["server_version"].as_str().unwrap_or(""),
        doc["cores"],
        doc["pages_per_batch"],
        doc["segments_per_page"],
        doc["repetitions"],
        doc["library_version"].as_str().unwrap_or("")
    )];
    plot::chart("HICACHE-VALKEY THROUGHPUT BY PAGE SIZE", "GB/S", "PAGE SIZE (BYTES)", &panels, &footer)
}
