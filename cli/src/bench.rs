//! `hicache-valkey bench`: batch_set / batch_get / batch_exists through the C ABI against a local
//! valkey-server, side by side with valkey-benchmark (the server's ceiling) and the valkey-py
//! peer script (the plain Python approach, `bench/peer_valkey_py.py`), with RSS, CPU and latency
//! figures. The report (`report.rs`) is printed as a table and written as JSON and an SVG chart
//! (`chart.rs`).

use crate::client::{outcome_name, version, Batch, Handle, OpenOptions};
use crate::refs::{self, Peer, Target, VbRun};
use crate::report::{self, Report, RunFacts};
use crate::{chart, deploy, AnyResult};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xxhash_rust::xxh3::xxh3_64;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A short smoke run (2 page sizes, 16 MiB per figure, 2 repetitions, fewer reference runs).
    #[arg(long)]
    pub quick: bool,
    /// Measure only the transports: loopback TCP, a Unix socket and TLS side by side, each with
    /// valkey-benchmark over the same transport, on a valkey-server this run starts itself
    /// (see cli/src/transports.rs).
    #[arg(long)]
    transports: bool,
    /// Page sizes, e.g. 16K,64K,256K,1M,4M [default: those five; --quick: 64K,1M].
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<String>,
    /// Pages per batch call.
    #[arg(long, default_value_t = 128)]
    pub pages: usize,
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
    /// Where to write the SVG chart.
    #[arg(long, default_value = "hicache-valkey-bench.svg")]
    plot: PathBuf,
    /// Measure nothing: draw the chart (--plot) and print the table of a saved report (a --json
    /// file of an earlier run).
    #[arg(long, value_name = "REPORT.json")]
    replot: Option<PathBuf>,
    /// Skip the valkey-benchmark reference.
    #[arg(long)]
    no_valkey_benchmark: bool,
    /// Skip the valkey-py reference.
    #[arg(long)]
    no_peer: bool,
    /// Python with `valkey` and `numpy` for the peer script [default: $HICACHE_VALKEY_PEER_PYTHON, else python3].
    #[arg(long)]
    peer_python: Option<PathBuf>,
    /// The peer script [default: bench/peer_valkey_py.py of the source tree].
    #[arg(long)]
    peer_script: Option<PathBuf>,
    /// Skip measuring the cost of the xxh3 payload checksum.
    #[arg(long)]
    no_checksum_cost: bool,
    /// Round trips for the small-page latency figure [default: 5000; --quick: 300].
    #[arg(long)]
    latency_samples: Option<usize>,
    /// Skip the steady-state figures (server at maxmemory, evicting), the prefetch-under-load
    /// figure and the dedup figure.
    #[arg(long)]
    no_steady: bool,
    /// Skip the fresh-server table (only the steady-state figures).
    #[arg(long)]
    no_fresh: bool,
    /// The server's maxmemory for the steady-state figures, MiB [default: 1024; --quick: 192].
    #[arg(long)]
    steady_maxmemory_mib: Option<u64>,
    /// Python with the hicache_valkey package and numpy for bench/python_path.py (the Python
    /// path next to the C path) [default: --peer-python].
    #[arg(long)]
    python_path_python: Option<PathBuf>,
    /// Python with Mooncake's store (mooncake-transfer-engine-non-cuda) for bench/peer_mooncake.py.
    #[arg(long)]
    mooncake_python: Option<PathBuf>,
}

#[derive(Clone)]
pub struct Plan {
    pub sizes: Vec<usize>,
    pub min_bytes: u64,
    pub reps: usize,
    pub latency_samples: usize,
    pub vb_clients: Vec<u32>,
    pub vb_pipelines: Vec<u32>,
    pub exists_calls: usize,
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

/// A reference measurement's result; a failure is reported, noted in the report and `None`
/// (the bench goes on without that reference).
fn reference<T>(what: &str, result: Result<T, String>, notes: &mut Vec<String>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            let message = format!("{what} failed: {e}");
            progress(&message);
            notes.push(message);
            None
        }
    }
}

fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// best (max) and median of throughput samples.
pub fn best_median(v: &[f64]) -> (f64, f64) {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    if s.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let med = if s.len() % 2 == 1 { s[s.len() / 2] } else { (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0 };
    (s[s.len() - 1], med)
}

pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Caller-side host buffers for one page size: `pages` pages of `size` bytes, each split in
/// `segments` segments, one for writing and one for reading back.
pub struct Buffers {
    pub src: Vec<u8>,
    pub dst: Vec<u8>,
    size: usize,
    pages: usize,
    segments: usize,
}

impl Buffers {
    pub fn new(size: usize, pages: usize, segments: usize, seed: u64) -> Buffers {
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

    pub fn segs(base: *mut u8, size: usize, pages: usize, segments: usize) -> Vec<Vec<(*mut u8, usize)>> {
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

/// One operation's samples, one per repetition.
#[derive(Default, Clone)]
pub struct OpFigures {
    pub gbps: Vec<f64>,
    /// Cores' worth of CPU used by other processes during each repetition.
    pub foreign: Vec<f64>,
    pub server_cpu: Vec<f64>,
    pub client_cpu: Vec<f64>,
}

pub struct OursResult {
    pub set: OpFigures,
    pub get: OpFigures,
    /// Pages batch_get found, of the pages it asked for (over every repetition).
    pub get_hits: u64,
    pub get_pages: u64,
    /// VmHWM growth over the buffers' RSS while the figure ran.
    pub rss_growth: u64,
    pub hwm_reset: bool,
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

/// HICACHE_OUTCOME_MISS.
const MISS: i32 = crate::client::OUTCOME_MISS;

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
    measure_ours_with(h, size, p, args, pid, label, None)
}

/// [`measure_ours`] at steady state: every repetition writes keys never written before (epoch
/// `epoch`), on a server at maxmemory that evicts, and reads back what it just wrote; a page
/// the server already evicted is counted as a miss, not an error.
pub fn measure_ours_steady(h: &Handle, size: usize, p: &Plan, args: &BenchArgs, pid: Option<u32>, label: &str, epoch: u64) -> AnyResult<OursResult> {
    measure_ours_with(h, size, p, args, pid, label, Some(epoch))
}

fn measure_ours_with(h: &Handle, size: usize, p: &Plan, args: &BenchArgs, pid: Option<u32>, label: &str, steady: Option<u64>) -> AnyResult<OursResult> {
    let mut buf = Buffers::new(size, args.pages, args.segments, (size as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let batches = p.min_bytes.div_ceil(buf.total()).max(1) as usize;
    let (src, dst) = (buf.src.as_mut_ptr(), buf.dst.as_mut_ptr());
    let (src_segs, dst_segs) = (Buffers::segs(src, size, buf.pages, buf.segments), Buffers::segs(dst, size, buf.pages, buf.segments));
    let keys_of = |rep: usize| -> Vec<Vec<Vec<u8>>> {
        let batch_id = |b: usize| match steady {
            Some(epoch) => (epoch as usize) << 40 | rep << 24 | b,
            None => b,
        };
        (0..batches).map(|b| (0..buf.pages).map(|i| page_key(size, batch_id(b), i)).collect()).collect()
    };
    let mut keys = keys_of(0);
    let mut set_batches: Vec<Batch> = keys.iter().map(|k| Batch::new(k, &src_segs)).collect();
    let mut get_batches: Vec<Batch> = keys.iter().map(|k| Batch::new(k, &dst_segs)).collect();
    let mut out = vec![0i32; buf.pages];
    let (rss_base, _) = refs::rss();
    let hwm_reset = refs::reset_hwm();
    let (rss_base, hwm_base) = if hwm_reset { (rss_base, rss_base) } else { (rss_base, refs::rss().1) };
    let mut res = OursResult { set: OpFigures::default(), get: OpFigures::default(), rss_growth: 0, hwm_reset, get_hits: 0, get_pages: 0 };
    let bytes = batches as u64 * buf.total();
    for rep in 0..p.reps {
        if steady.is_some() && rep > 0 {
            keys = keys_of(rep);
            set_batches = keys.iter().map(|k| Batch::new(k, &src_segs)).collect();
            get_batches = keys.iter().map(|k| Batch::new(k, &dst_segs)).collect();
        }
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
        let hits_before = res.get_hits;
        for (b, batch) in get_batches.iter().enumerate() {
            // SAFETY: dst is ours; no reference to it is alive.
            unsafe { std::ptr::write_bytes(dst, 0, size * buf.pages) };
            t.time(|| h.batch_get(batch, &mut out))?;
            if steady.is_some() {
                // An evicted page (MISS) is counted; any other failure is still an error.
                let failed: Vec<i32> = out.iter().map(|o| if *o == MISS { 0 } else { *o }).collect();
                check_outcomes("batch_get", &failed)?;
            } else {
                check_outcomes("batch_get", &out)?;
            }
            res.get_pages += out.len() as u64;
            res.get_hits += out.iter().filter(|o| **o == 0).count() as u64;
            for (i, want) in expected[b].iter().enumerate() {
                if out[i] != 0 {
                    continue;
                }
                // SAFETY: within dst; the call has returned.
                let page = unsafe { std::slice::from_raw_parts(dst.add(i * size), size) };
                if xxh3_64(page) != *want {
                    return Err(format!("batch_get returned wrong bytes for page {i} of batch {b} ({} pages)", size_label(size)).into());
                }
            }
        }
        // GB/s of the bytes delivered: a page the server had evicted (a quick miss) is not.
        t.record((res.get_hits - hits_before) * size as u64, &mut res.get);
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

pub struct VbBest {
    pub set: Option<VbRun>,
    pub get: Option<VbRun>,
    pub runs: Vec<VbRun>,
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

pub struct SizeResult {
    pub size: usize,
    pub ours: OursResult,
    pub checksum: Option<OursResult>,
    pub vb: Option<VbBest>,
    pub peer: Option<Peer>,
    pub notes: Vec<String>,
}

/// `bench --replot REPORT.json`: the table and the chart of a saved report.
fn replot(from: &Path, args: &BenchArgs) -> AnyResult<()> {
    let text = std::fs::read_to_string(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    let rep: Report = serde_json::from_str(&text).map_err(|e| format!("{} is not a bench report: {e}", from.display()))?;
    report::print(&rep);
    chart::write_svg(&rep, &args.plot).map_err(|e| format!("cannot write {}: {e}", args.plot.display()))?;
    println!("\nwrote {}", args.plot.display());
    Ok(())
}

pub fn run(opts: &OpenOptions, settings: &hicache_valkey::Settings, args: &BenchArgs) -> AnyResult<()> {
    if let Some(from) = &args.replot {
        return replot(from, args);
    }
    if args.transports {
        let sizes = args.sizes.iter().map(|s| parse_size(s)).collect::<Result<Vec<_>, _>>()?;
        let params = crate::transports::Params { quick: args.quick, sizes, pages: args.pages, segments: args.segments, min_mib: args.min_mib, reps: args.reps, connections: args.connections };
        return crate::transports::run(&params);
    }
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

    // References available? What is skipped is said on stderr now and in the report's notes.
    let mut notes = Vec::new();
    let mut skip = |what: String| {
        progress(&what);
        notes.push(what);
    };
    let mut have_vb = !args.no_valkey_benchmark;
    if have_vb && refs::run_bounded(std::process::Command::new("valkey-benchmark").arg("--version"), Duration::from_secs(10)).is_err() {
        skip("valkey-benchmark not found: that reference is skipped (scripts/install-deps.sh installs it)".into());
        have_vb = false;
    }
    if have_vb && target.password.is_some() {
        if let Err(e) = refs::valkey_benchmark_can_auth(&target) {
            skip(format!(
                "valkey-benchmark reference skipped: the server needs a password, which is never put on a command line, \
                 and this valkey-benchmark does not take it from VALKEYCLI_AUTH / REDISCLI_AUTH ({e}); \
                 bench a server without one (scripts/bench.sh starts a throwaway server)"
            ));
            have_vb = false;
        }
    }
    let peer_script = args.peer_script.clone().unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/peer_valkey_py.py")));
    let peer_python = args
        .peer_python
        .clone()
        .or_else(|| std::env::var_os("HICACHE_VALKEY_PEER_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"));
    let mut have_peer = !args.no_peer;
    if have_peer && !peer_script.exists() {
        skip(format!("valkey-py peer skipped: {} not found (--peer-script)", peer_script.display()));
        have_peer = false;
    }
    if have_peer && !refs::python_has_peer_deps(&peer_python) {
        skip(format!("valkey-py peer skipped: {} cannot import valkey and numpy (--peer-python)", peer_python.display()));
        have_peer = false;
    }

    let mut results = Vec::new();
    for (si, &size) in plan.sizes.iter().enumerate().filter(|_| !args.no_fresh) {
        progress(&format!("page size {} ({}/{})", size_label(size), si + 1, plan.sizes.len()));
        let mut notes = Vec::new();
        let ours = measure_ours(&h, size, &plan, args, pid, "ours")?;
        let checksum = match &hc {
            Some(hc) => Some(measure_ours(hc, size, &plan, args, pid, "ours+xxh3")?),
            None => None,
        };
        h.clear()?;
        let total_pages = plan.min_bytes.div_ceil((size * args.pages) as u64).max(1) * args.pages as u64;
        let vb = if have_vb { reference("valkey-benchmark", measure_vb(&target, size, &plan, total_pages, pid), &mut notes) } else { None };
        let peer = if have_peer {
            let repeat = (plan.min_bytes / (size * args.pages) as u64).clamp(if q { 1 } else { 3 }, 64) as usize;
            let p = reference("valkey-py peer", refs::peer(&peer_python, &peer_script, &target, args.pages, size, repeat, false), &mut notes);
            if let Some(p) = &p {
                progress(&format!("valkey-py {:>4}: set {:.2} GB/s, get {:.2} GB/s (best of {repeat})", size_label(size), p.set_gbps, p.get_gbps));
            }
            p
        } else {
            None
        };
        results.push(SizeResult { size, ours, checksum, vb, peer, notes });
    }

    let exists = measure_exists(&h, &plan, args.pages, pid)?;
    let latency = measure_latency(&h, &plan, &target, have_vb, pid)?;
    h.clear()?;
    let deployment = if args.no_steady { None } else { steady(&h, &o, &target, &plan, args, pid, have_vb, have_peer.then_some((peer_python.as_path(), peer_script.as_path())))? };

    let facts = RunFacts {
        plan: &plan,
        quick: q,
        pages: args.pages,
        segments: args.segments,
        connections: args.connections,
        server: cfg.server(),
        server_version,
        io_threads,
        cores,
        library_version: version(),
        notes,
    };
    let mut rep = report::build(&results, &exists, &latency, facts, started.elapsed().as_secs_f64());
    if let Some(d) = deployment {
        report::add_deployment(&mut rep, d);
    }
    report::print(&rep);
    std::fs::write(&args.json, serde_json::to_string_pretty(&rep)? + "\n").map_err(|e| format!("cannot write {}: {e}", args.json.display()))?;
    chart::write_svg(&rep, &args.plot).map_err(|e| format!("cannot write {}: {e}", args.plot.display()))?;
    println!("\nwrote {} and {}", args.json.display(), args.plot.display());
    Ok(())
}

/// The steady-state figures, the prefetch-under-load figure and the dedup figure (`deploy.rs`).
#[allow(clippy::too_many_arguments)]
fn steady(h: &Handle, o: &OpenOptions, target: &Target, plan: &Plan, args: &BenchArgs, pid: Option<u32>, have_vb: bool, peer: Option<(&Path, &Path)>) -> AnyResult<Option<deploy::DeployReport>> {
    let here = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../bench"));
    let usable = |py: &Path, import: &str| {
        std::process::Command::new(py)
            .args(["-c", import])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let py_path = args.python_path_python.clone().or_else(|| peer.map(|(p, _)| p.to_path_buf()));
    let python_path = py_path.filter(|p| usable(p, "import numpy")).map(|p| (p, here.join("python_path.py")));
    if python_path.is_none() {
        progress("python path figures skipped: no python with numpy (--python-path-python)");
    }
    let mooncake = match &args.mooncake_python {
        Some(p) if usable(p, "from mooncake.store import MooncakeDistributedStore") => Some((p.clone(), here.join("peer_mooncake.py"))),
        Some(p) => {
            progress(&format!("mooncake peer skipped: {} cannot import mooncake.store", p.display()));
            None
        }
        None => None,
    };
    let maxmemory = args.steady_maxmemory_mib.unwrap_or(if args.quick { 192 } else { 1024 }) << 20;
    let ctx = deploy::Ctx { h, opts: o, target, plan, args, pid, have_vb, peer, python_path, mooncake, maxmemory };
    deploy::run(&ctx)
}

pub struct ExistsResult {
    pub keys_per_s: Vec<f64>,
    pub p50_us: f64,
    pub p99_us: f64,
    pub batch: usize,
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

pub struct LatencyResult {
    pub set_us: (f64, f64),
    pub get_us: (f64, f64),
    pub vb_set_ms: Option<(f64, f64)>,
    pub vb_get_ms: Option<(f64, f64)>,
    pub samples: usize,
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
