//! The bench where deployments live (issue 13): a server at maxmemory with allkeys-lru that
//! evicts on every write (steady state), with the references under the same conditions; a
//! prefetch's latency while a backup writes on the same handle; and what `skip_existing` saves
//! when several engines write the same prefix.
//!
//! Everything here runs after the fresh-server figures, on the same throwaway server, and only
//! when that server held no keys but the bench's (it is filled past maxmemory and emptied after).

use crate::bench::{best_median, measure_ours_steady, percentile, size_label, BenchArgs, Buffers, OpFigures, Plan};
use crate::client::{Batch, Handle, OpenOptions};
use crate::refs::{self, Target, VbRun};
use crate::report::{r3, ratio, Fig};
use crate::AnyResult;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// Everything this module measured, as it goes into the report's JSON (`deployment`).
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct DeployReport {
    pub maxmemory_bytes: u64,
    pub policy: String,
    /// Keys the server evicted during the steady-state figures.
    pub evicted_keys: u64,
    pub steady: Vec<SteadyRow>,
    pub latency_under_load: Option<LoadReport>,
    /// The same figure with backups of smaller pages (full runs only): how the prefetch's wait
    /// depends on the size of the backup's values.
    #[serde(default)]
    pub latency_by_backup_page: Vec<LoadReport>,
    pub dedup: Option<DedupReport>,
    #[serde(default)]
    pub notes: Vec<String>,
}

/// One page size at steady state: best GB/s of each contender, over interleaved repetitions.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct SteadyRow {
    pub page_bytes: usize,
    pub label: String,
    #[serde(rename = "ours_set_GBps")]
    pub ours_set: Fig,
    #[serde(rename = "ours_get_GBps")]
    pub ours_get: Fig,
    #[serde(rename = "ours_set_median_GBps")]
    pub ours_set_median: Fig,
    #[serde(rename = "ours_get_median_GBps")]
    pub ours_get_median: Fig,
    /// Pages batch_get found of the pages just written (the rest the server had evicted).
    pub ours_get_hits: u64,
    pub ours_get_pages: u64,
    /// GETs of valkey-benchmark that found their key (the server's keyspace_hits), of all.
    #[serde(default)]
    pub vb_get_hits: u64,
    #[serde(default)]
    pub vb_get_asked: u64,
    /// Keys valkey-benchmark's SETs created (the server's key count and evictions before and
    /// after), of its SETs: every SET should make a new key.
    #[serde(default)]
    pub vb_set_new_keys: u64,
    #[serde(default)]
    pub vb_set_requests: u64,
    pub ours_server_cpu_s_per_gb_get: Fig,
    pub ours_client_cpu_s_per_gb_get: Fig,
    #[serde(rename = "vb_set_GBps")]
    pub vb_set: Fig,
    #[serde(rename = "vb_get_GBps")]
    pub vb_get: Fig,
    pub vb_set_config: String,
    pub vb_get_config: String,
    #[serde(rename = "valkey_py_set_GBps")]
    pub py_set: Fig,
    #[serde(rename = "valkey_py_get_GBps")]
    pub py_get: Fig,
    pub set_vs_valkey_benchmark: Fig,
    pub get_vs_valkey_benchmark: Fig,
    /// The Python package on the same figure (bench/python_path.py), when it ran.
    #[serde(default)]
    pub python: Option<PythonPath>,
    /// Mooncake's store (bench/peer_mooncake.py), when it ran.
    #[serde(default)]
    pub mooncake: Option<serde_json::Value>,
    pub foreign_cores_max: Fig,
}

/// The Python package's figures for one page size (the JSON line bench/python_path.py prints).
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct PythonPath {
    #[serde(rename = "rows_set_GBps")]
    pub rows_set: Fig,
    #[serde(rename = "rows_get_GBps")]
    pub rows_get: Fig,
    #[serde(rename = "flat_set_GBps")]
    pub flat_set: Fig,
    #[serde(rename = "flat_get_GBps")]
    pub flat_get: Fig,
    #[serde(rename = "sglang_v1_set_GBps", default)]
    pub sglang_set: Fig,
    #[serde(rename = "sglang_v1_get_GBps", default)]
    pub sglang_get: Fig,
    #[serde(default)]
    pub hits: u64,
    #[serde(default)]
    pub pages: u64,
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Prefetch latency idle and while a 512 MiB batch_set runs on the same handle.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct LoadReport {
    /// Page size of the backup's batch_set (0 in reports from before it was recorded: 4 MiB).
    #[serde(default)]
    pub backup_page_bytes: usize,
    pub exists_keys: usize,
    pub get_pages: usize,
    pub get_page_bytes: usize,
    pub backup_bytes: u64,
    pub samples_idle: usize,
    pub samples_loaded: usize,
    pub exists_idle_us: (Fig, Fig),
    pub exists_loaded_us: (Fig, Fig),
    pub get_idle_us: (Fig, Fig),
    pub get_loaded_us: (Fig, Fig),
    /// p99 under load / p99 idle (goal <= 2).
    pub exists_p99_ratio: Fig,
    pub get_p99_ratio: Fig,
    #[serde(rename = "backup_GBps")]
    pub backup_gbps: Fig,
}

/// N engine processes writing the same prefix, with and without `skip_existing`.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct DedupReport {
    pub engines: usize,
    pub prefix_bytes: u64,
    pub page_bytes: usize,
    pub runs: Vec<DedupRun>,
    /// Page size of the all-new figure: best GB/s of batch_set with skip_existing and without,
    /// and the cost: 1 - the median, over back-to-back pairs, of with / without.
    pub new_pages_page_bytes: usize,
    #[serde(rename = "new_pages_plain_GBps")]
    pub new_pages_plain: Fig,
    #[serde(rename = "new_pages_skip_GBps")]
    pub new_pages_skip: Fig,
    pub new_pages_cost: Fig,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct DedupRun {
    /// "simultaneous" (all start together) or "staggered" (one after another).
    pub start: String,
    pub skip_existing: bool,
    pub server_input_bytes: u64,
    pub wall_s: Fig,
    pub client_cpu_s: Fig,
}

/// What the steady-state part needs from the bench around it.
pub struct Ctx<'a> {
    pub h: &'a Handle,
    pub opts: &'a OpenOptions,
    pub target: &'a Target,
    pub plan: &'a Plan,
    pub args: &'a BenchArgs,
    pub pid: Option<u32>,
    pub have_vb: bool,
    pub peer: Option<(&'a Path, &'a Path)>,
    pub python_path: Option<(PathBuf, PathBuf)>,
    pub mooncake: Option<(PathBuf, PathBuf)>,
    pub maxmemory: u64,
}

fn info_field(con: &mut redis::Connection, section: &str, name: &str) -> Option<u64> {
    let info: String = redis::cmd("INFO").arg(section).query(con).ok()?;
    info.lines().find_map(|l| l.strip_prefix(&format!("{name}:"))).and_then(|v| v.trim().parse().ok())
}

fn config_get(con: &mut redis::Connection, name: &str) -> Option<String> {
    redis::cmd("CONFIG").arg("GET").arg(name).query::<Vec<String>>(con).ok().and_then(|v| v.get(1).cloned())
}

/// Runs the deployment figures; `None` (with the reason on stderr) when the server holds other
/// keys than the bench's, which filling it past maxmemory would evict.
pub fn run(c: &Ctx<'_>) -> AnyResult<Option<DeployReport>> {
    let mut con = c.target.redis()?;
    let keys: u64 = redis::cmd("DBSIZE").query(&mut con)?;
    if keys > 0 {
        progress(&format!("steady-state figures skipped: the server holds {keys} keys that are not the bench's, and filling it past maxmemory would evict them"));
        return Ok(None);
    }
    let old_max = config_get(&mut con, "maxmemory").unwrap_or_else(|| "0".into());
    let old_policy = config_get(&mut con, "maxmemory-policy").unwrap_or_else(|| "noeviction".into());
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(c.maxmemory.to_string()).arg("maxmemory-policy").arg("allkeys-lru").query(&mut con)?;
    let result = run_steady(c, &mut con);
    // Leave the server as it was: empty, with its own memory settings.
    let _: redis::RedisResult<()> = redis::cmd("FLUSHDB").query(&mut con);
    let _: redis::RedisResult<()> = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(&old_max).arg("maxmemory-policy").arg(&old_policy).query(&mut con);
    result.map(Some)
}

fn run_steady(c: &Ctx<'_>, con: &mut redis::Connection) -> AnyResult<DeployReport> {
    let mut rep = DeployReport { maxmemory_bytes: c.maxmemory, policy: "allkeys-lru".into(), ..Default::default() };
    fill(c, 1 << 20)?;
    let evicted0 = info_field(con, "stats", "evicted_keys").unwrap_or(0);
    let used = info_field(con, "memory", "used_memory").unwrap_or(0);
    progress(&format!("steady state: server filled to {} MiB of {} MiB maxmemory, {evicted0} keys evicted so far", used >> 20, c.maxmemory >> 20));
    let one = Plan { reps: 1, ..c.plan.clone() };
    // Each repetition runs every contender once, in turn; 3 of them keep a full run in bounds.
    let reps = c.plan.reps.min(3);
    for (si, &size) in c.plan.sizes.iter().enumerate() {
        let pages_per_figure = c.plan.min_bytes.div_ceil((size * c.args.pages) as u64).max(1) * c.args.pages as u64;
        let (mut ours_set, mut ours_get) = (OpFigures::default(), OpFigures::default());
        let (mut hits, mut asked) = (0, 0);
        let (mut vb_hits, mut vb_asked) = (0u64, 0u64);
        let (mut vb_new, mut vb_sets) = (0u64, 0u64);
        let (mut vb_set, mut vb_get): (Vec<VbRun>, Vec<VbRun>) = (Vec::new(), Vec::new());
        let (mut py_set, mut py_get) = (Vec::new(), Vec::new());
        let mut python: Vec<PythonPath> = Vec::new();
        let mut mooncake: Option<serde_json::Value> = None;
        let mut foreign: f64 = 0.0;
        // The server is full of the previous size's pages: whoever writes while they are being
        // evicted for pages of another size pays for it (measured: our first 64 KiB repetition
        // after the 16 KiB figure at 0.9 GB/s, the next ones 2.1-2.4; valkey-benchmark's first
        // SET 1.3-1.6 against 2.0-2.7; a 256 MiB warm-up was not enough). So the server is filled
        // past maxmemory again with this size's pages, unmeasured, before any figure of it.
        progress(&format!("steady state: refilling the server with {} pages", size_label(size)));
        fill(c, size)?;
        for rep_i in 0..reps {
            let epoch = 1 + (si * 64 + rep_i) as u64;
            // A handle of its own per repetition, as every reference makes new connections each
            // run: on this loopback a connection's speed varies for its whole life (measured:
            // 1.9 to 3.4 GB/s of 64 KiB GET on four connections of one process, same calls).
            let h = Handle::open(c.opts)?;
            let r = measure_ours_steady(&h, size, &one, c.args, c.pid, "steady ours", epoch)?;
            hits += r.get_hits;
            asked += r.get_pages;
            foreign = foreign.max(r.set.foreign[0]).max(r.get.foreign[0]);
            merge(&mut ours_set, &r.set);
            merge(&mut ours_get, &r.get);
            if c.have_vb {
                let requests = pages_per_figure;
                // -P 16 suits small values; big values do better with shallow pipelines.
                let configs: &[(u32, u32)] = if size >= 256 << 10 { &[(1, 16), (2, 16), (2, 1)] } else { &[(1, 16), (2, 16)] };
                // GET: a keyspace as large as ours, every key present: written just before (the
                // server evicts the oldest keys first), hits counted by the server.
                refs::prefill(c.target, size, pages_per_figure).map_err(|e| format!("cannot prefill valkey-benchmark's keys: {e}"))?;
                for &(clients, pipeline) in configs {
                    let (h0, m0) = (info_field(con, "stats", "keyspace_hits").unwrap_or(0), info_field(con, "stats", "keyspace_misses").unwrap_or(0));
                    let mut g = refs::valkey_benchmark(c.target, "get", size, clients, pipeline, requests, pages_per_figure, c.pid)?;
                    let (h1, m1) = (info_field(con, "stats", "keyspace_hits").unwrap_or(0), info_field(con, "stats", "keyspace_misses").unwrap_or(0));
                    // GB/s of the bytes delivered, as for ours: a GET of an evicted key is a
                    // quick nil that valkey-benchmark counts as a request.
                    let asked = (h1 - h0) + (m1 - m0);
                    if asked > 0 {
                        g.gbps *= (h1 - h0) as f64 / asked as f64;
                    }
                    vb_hits += h1 - h0;
                    vb_asked += asked;
                    progress(&format!("steady valkey-benchmark {:>4} GET -c {clients} -P {pipeline}: {:.2} GB/s ({} of {asked} found)", size_label(size), g.gbps, h1 - h0));
                    vb_get.push(g);
                }
                for &(clients, pipeline) in configs {
                    // SET: a keyspace so large every key is new, which the server's counts check.
                    let keys_now = |con: &mut redis::Connection| -> u64 {
                        let dbsize: u64 = redis::cmd("DBSIZE").query(con).unwrap_or(0);
                        dbsize + info_field(con, "stats", "evicted_keys").unwrap_or(0)
                    };
                    let k0 = keys_now(con);
                    let s = refs::valkey_benchmark(c.target, "set", size, clients, pipeline, requests, refs::FRESH_KEYSPACE, c.pid)?;
                    let made = keys_now(con).saturating_sub(k0);
                    vb_new += made;
                    vb_sets += requests;
                    progress(&format!("steady valkey-benchmark {:>4} SET -c {clients} -P {pipeline}: {:.2} GB/s ({made} of {requests} SETs made a new key)", size_label(size), s.gbps));
                    vb_set.push(s);
                }
            }
            if let Some((python_bin, script)) = c.peer {
                match refs::peer(python_bin, script, c.target, c.args.pages, size, (pages_per_figure as usize / c.args.pages).max(1), true) {
                    Ok(p) => {
                        progress(&format!("steady valkey-py {:>4}: set {:.2} GB/s, get {:.2} GB/s", size_label(size), p.set_gbps, p.get_gbps));
                        py_set.push(p.set_gbps);
                        py_get.push(p.get_gbps);
                    }
                    Err(e) => rep.notes.push(format!("valkey-py steady {}: {e}", size_label(size))),
                }
            }
            if let Some((py, script)) = &c.python_path {
                match python_path(py, script, c, size, pages_per_figure, epoch, c.args.quick || rep_i > 0) {
                    Ok(p) => {
                        progress(&format!(
                            "steady python {:>4}: rows set {:.2} get {:.2}, flat set {:.2} get {:.2}, sglang v1 set {:.2} get {:.2} GB/s",
                            size_label(size),
                            p.rows_set.unwrap_or(f64::NAN),
                            p.rows_get.unwrap_or(f64::NAN),
                            p.flat_set.unwrap_or(f64::NAN),
                            p.flat_get.unwrap_or(f64::NAN),
                            p.sglang_set.unwrap_or(f64::NAN),
                            p.sglang_get.unwrap_or(f64::NAN)
                        ));
                        python.push(p);
                    }
                    Err(e) => rep.notes.push(format!("python path {}: {e}", size_label(size))),
                }
            }
            if rep_i == 0 {
                if let Some((py, script)) = &c.mooncake {
                    match run_json(Command::new(py).arg(script).args(["--page-bytes", &size.to_string(), "--pages", &c.args.pages.to_string(), "--bytes", &c.plan.min_bytes.to_string(), "--store-mib", &(c.maxmemory >> 20).to_string()]), Duration::from_secs(180)) {
                        Ok(v) => {
                            progress(&format!("mooncake {:>4}: {v}", size_label(size)));
                            mooncake = Some(v);
                        }
                        Err(e) => {
                            progress(&format!("mooncake peer failed: {e}"));
                            rep.notes.push(format!("mooncake {}: {e}", size_label(size)));
                        }
                    }
                }
            }
        }
        if vb_sets > 0 && vb_new * 10 < vb_sets * 9 {
            rep.notes.push(format!("{}: only {vb_new} of valkey-benchmark's {vb_sets} SETs made a new key: its SET figure is not on fresh keys", size_label(size)));
        }
        let best_vb = |v: &[VbRun]| v.iter().max_by(|a, b| a.gbps.total_cmp(&b.gbps)).cloned();
        let (bs, bg) = (best_vb(&vb_set), best_vb(&vb_get));
        let (os, osm) = best_median(&ours_set.gbps);
        let (og, ogm) = best_median(&ours_get.gbps);
        let per_gb = |cpu: &[f64], gbps: &[f64]| -> Fig {
            // CPU cores over GB/s = CPU seconds per GB; the median over repetitions.
            let v: Vec<f64> = cpu.iter().zip(gbps).map(|(c, g)| c / g).collect();
            r3(best_median(&v).1)
        };
        let best_of = |f: fn(&PythonPath) -> Fig| -> Fig { python.iter().filter_map(f).fold(None, |a: Fig, b| Some(a.map_or(b, |a| a.max(b)))) };
        let py_row = (!python.is_empty()).then(|| PythonPath {
            rows_set: best_of(|p| p.rows_set),
            rows_get: best_of(|p| p.rows_get),
            flat_set: best_of(|p| p.flat_set),
            flat_get: best_of(|p| p.flat_get),
            sglang_set: best_of(|p| p.sglang_set),
            sglang_get: best_of(|p| p.sglang_get),
            hits: python.iter().map(|p| p.hits).sum(),
            pages: python.iter().map(|p| p.pages).sum(),
            notes: python.iter().flat_map(|p| p.notes.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect(),
        });
        let row = SteadyRow {
            page_bytes: size,
            label: size_label(size),
            ours_set: r3(os),
            ours_get: r3(og),
            ours_set_median: r3(osm),
            ours_get_median: r3(ogm),
            ours_get_hits: hits,
            ours_get_pages: asked,
            vb_get_hits: vb_hits,
            vb_get_asked: vb_asked,
            vb_set_new_keys: vb_new,
            vb_set_requests: vb_sets,
            ours_server_cpu_s_per_gb_get: per_gb(&ours_get.server_cpu, &ours_get.gbps),
            ours_client_cpu_s_per_gb_get: per_gb(&ours_get.client_cpu, &ours_get.gbps),
            vb_set: bs.as_ref().and_then(|r| r3(r.gbps)),
            vb_get: bg.as_ref().and_then(|r| r3(r.gbps)),
            vb_set_config: bs.as_ref().map(|r| format!("-c {} -P {}", r.clients, r.pipeline)).unwrap_or_default(),
            vb_get_config: bg.as_ref().map(|r| format!("-c {} -P {}", r.clients, r.pipeline)).unwrap_or_default(),
            py_set: r3(best_median(&py_set).0),
            py_get: r3(best_median(&py_get).0),
            set_vs_valkey_benchmark: r3(ratio(os, bs.as_ref().map(|r| r.gbps))),
            get_vs_valkey_benchmark: r3(ratio(og, bg.as_ref().map(|r| r.gbps))),
            python: py_row,
            mooncake,
            foreign_cores_max: r3(foreign),
        };
        progress(&format!(
            "steady {:>4}: ours set {:.2} get {:.2} GB/s ({hits} of {asked} pages found) | valkey-benchmark SET {:.2} GET {:.2}",
            size_label(size),
            os,
            og,
            row.vb_set.unwrap_or(f64::NAN),
            row.vb_get.unwrap_or(f64::NAN)
        ));
        rep.steady.push(row);
    }
    rep.evicted_keys = info_field(con, "stats", "evicted_keys").unwrap_or(0) - evicted0;
    // The next figures on an empty server (maxmemory kept): the backup rewrites its own keys,
    // so nothing is evicted and the prefetch's keys stay.
    let _: () = redis::cmd("FLUSHDB").query(con)?;
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("0").query(con)?;
    let load = latency_under_load(c, 4 << 20);
    if load.is_ok() && !c.args.quick {
        for page in [64usize << 10, 256 << 10, 1 << 20] {
            rep.latency_by_backup_page.push(latency_under_load(c, page)?);
        }
    }
    let _: () = redis::cmd("FLUSHDB").query(con)?;
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(c.maxmemory.to_string()).query(con)?;
    rep.latency_under_load = Some(load?);
    rep.dedup = Some(dedup(c, con)?);
    Ok(rep)
}

fn merge(into: &mut OpFigures, from: &OpFigures) {
    into.gbps.extend(&from.gbps);
    into.foreign.extend(&from.foreign);
    into.server_cpu.extend(&from.server_cpu);
    into.client_cpu.extend(&from.client_cpu);
}

/// Writes 1.25 × maxmemory of filler pages of `size` bytes, so every later write evicts (and
/// evicts pages of that size).
fn fill(c: &Ctx<'_>, size: usize) -> AnyResult<()> {
    let pages = ((64 << 20) / size).clamp(1, 128);
    let buf = Buffers::new(size, pages, 1, 3);
    let segs = Buffers::segs(buf.src.as_ptr() as *mut u8, size, pages, 1);
    let batches = (c.maxmemory * 5 / 4).div_ceil((size * pages) as u64);
    let mut out = vec![0i32; pages];
    for b in 0..batches {
        let keys: Vec<Vec<u8>> = (0..pages).map(|i| format!("filler-{size}-{b:08}-{i:04}").into_bytes()).collect();
        c.h.batch_set(&Batch::new(&keys, &segs), &mut out)?;
    }
    Ok(())
}

/// bench/python_path.py: the Python package (ValkeyStore with numpy rows, with flat pointer
/// arrays, and the SGLang backend's v1 path when SGLang imports) on fresh keys.
fn python_path(py: &Path, script: &Path, c: &Ctx<'_>, size: usize, pages: u64, epoch: u64, no_sglang: bool) -> Result<PythonPath, String> {
    let mut cmd = Command::new(py);
    // The library next to this binary (scripts/bench.sh builds it), not an installed copy.
    if let Some(lib) = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("libhicache_valkey.so"))).filter(|l| l.exists()) {
        cmd.env("HICACHE_VALKEY_LIB", lib);
    }
    cmd.arg(script).args([
        "--port",
        &c.target.port.to_string(),
        "--host",
        &c.target.host,
        "--page-bytes",
        &size.to_string(),
        "--pages",
        &c.args.pages.to_string(),
        "--batches",
        &(pages as usize / c.args.pages).max(1).to_string(),
        "--epoch",
        &epoch.to_string(),
    ]);
    if no_sglang {
        cmd.arg("--no-sglang");
    }
    let v = run_json(&mut cmd, Duration::from_secs(240))?;
    serde_json::from_value(v).map_err(|e| format!("python_path.py printed unexpected JSON: {e}"))
}

/// Runs a script that prints one JSON object as its last `{` line.
fn run_json(cmd: &mut Command, limit: Duration) -> Result<serde_json::Value, String> {
    let out = refs::run_bounded(cmd, limit)?;
    let line = out.lines().rev().find(|l| l.trim_start().starts_with('{')).ok_or_else(|| format!("printed no JSON: {}", out.trim()))?;
    serde_json::from_str(line).map_err(|e| format!("printed unexpected JSON ({e}): {line}"))
}

/// Prefetch latency (batch_exists of 16 keys, batch_get of 4 pages of 64 KiB) idle and while
/// another thread runs a 512 MiB batch_set (pages of `bsize` bytes) on the same handle.
fn latency_under_load(c: &Ctx<'_>, bsize: usize) -> AnyResult<LoadReport> {
    let q = c.args.quick;
    let (gsize, gpages, ekeys) = (64 << 10, 4, 16);
    let small = Buffers::new(gsize, ekeys, 1, 21);
    let small_src = Buffers::segs(small.src.as_ptr() as *mut u8, gsize, ekeys, 1);
    let small_dst = Buffers::segs(small.dst.as_ptr() as *mut u8, gsize, gpages, 1);
    let keys: Vec<Vec<u8>> = (0..ekeys).map(|i| format!("prefetch-{i:04}").into_bytes()).collect();
    let mut out = vec![0i32; ekeys];
    c.h.batch_set(&Batch::new(&keys, &small_src), &mut out)?;
    let exists = Batch::new(&keys, &small_src);
    let get = Batch::new(&keys[..gpages], &small_dst);
    let bpages = (if q { 128usize << 20 } else { 512 << 20 }) / bsize;
    // Every page of the backup is the same `bsize` bytes of memory: the bytes sent are what matter.
    let backup_buf = Buffers::new(bsize, 1, 1, 5);
    let one = Buffers::segs(backup_buf.src.as_ptr() as *mut u8, bsize, 1, 2);
    let backup_segs = Shared((0..bpages).map(|_| one[0].clone()).collect());
    let (cycles, idle_per_cycle) = if q { (3, 60) } else { (4, 250) };
    let sample = |lat_e: &mut Vec<f64>, lat_g: &mut Vec<f64>| -> AnyResult<()> {
        let mut found = vec![0u8; ekeys];
        let mut out = vec![0i32; gpages];
        let t0 = Instant::now();
        let n = c.h.batch_exists(&exists, &mut found)?;
        lat_e.push(t0.elapsed().as_nanos() as f64 / 1e3);
        let t0 = Instant::now();
        c.h.batch_get(&get, &mut out)?;
        lat_g.push(t0.elapsed().as_nanos() as f64 / 1e3);
        if n != ekeys || out.iter().any(|o| *o != 0) {
            return Err(format!("prefetch keys went missing ({n} of {ekeys} found)").into());
        }
        Ok(())
    };
    let (mut ie, mut ig) = (Vec::new(), Vec::new());
    let (mut le, mut lg) = (Vec::new(), Vec::new());
    let mut backup_bytes = 0u64;
    let mut backup_secs = 0f64;
    // Idle and loaded phases alternate, so a change in the machine's load hits both alike.
    for _ in 0..cycles {
        for _ in 0..idle_per_cycle {
            sample(&mut ie, &mut ig)?;
            std::thread::sleep(Duration::from_micros(500));
        }
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| -> AnyResult<()> {
            let writer = s.spawn(|| -> Result<f64, String> {
                let mut out = vec![0i32; bpages];
                // The same keys every time: the backup overwrites, nothing is evicted.
                let keys: Vec<Vec<u8>> = (0..bpages).map(|i| format!("backup-{i:04}").into_bytes()).collect();
                let t0 = Instant::now();
                let r = c.h.batch_set(&Batch::new(&keys, backup_segs.get()), &mut out).map_err(|e| e.to_string());
                stop.store(true, Ordering::Relaxed);
                r.map(|_| t0.elapsed().as_secs_f64())
            });
            // Let the backup start, then sample while it runs (bounded: it ends within its timeout).
            std::thread::sleep(Duration::from_millis(5));
            let mut err = None;
            while !stop.load(Ordering::Relaxed) && le.len() < 100_000 {
                if let Err(e) = sample(&mut le, &mut lg) {
                    err = Some(e);
                    break;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            backup_secs += writer.join().expect("writer thread")?;
            backup_bytes += (bsize * bpages) as u64;
            err.map_or(Ok(()), Err)
        })?;
    }
    let p = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (r3(percentile(v, 0.5)), r3(percentile(v, 0.99)))
    };
    let (ie_p, ig_p, le_p, lg_p) = (p(&mut ie), p(&mut ig), p(&mut le), p(&mut lg));
    let rat = |a: Fig, b: Fig| r3(ratio(a.unwrap_or(f64::NAN), b));
    let r = LoadReport {
        backup_page_bytes: bsize,
        exists_keys: ekeys,
        get_pages: gpages,
        get_page_bytes: gsize,
        backup_bytes: (bsize * bpages) as u64,
        samples_idle: ie.len(),
        samples_loaded: le.len(),
        exists_idle_us: ie_p,
        exists_loaded_us: le_p,
        get_idle_us: ig_p,
        get_loaded_us: lg_p,
        exists_p99_ratio: rat(le_p.1, ie_p.1),
        get_p99_ratio: rat(lg_p.1, ig_p.1),
        backup_gbps: r3(backup_bytes as f64 / backup_secs / 1e9),
    };
    progress(&format!(
        "prefetch under a {} MiB backup of {} pages: exists p50/p99 idle {:.0}/{:.0} µs, loaded {:.0}/{:.0} µs; 4x64K get idle {:.0}/{:.0} µs, loaded {:.0}/{:.0} µs ({} loaded samples; backup {:.2} GB/s)",
        r.backup_bytes >> 20,
        size_label(bsize),
        ie_p.0.unwrap_or(f64::NAN),
        ie_p.1.unwrap_or(f64::NAN),
        le_p.0.unwrap_or(f64::NAN),
        le_p.1.unwrap_or(f64::NAN),
        ig_p.0.unwrap_or(f64::NAN),
        ig_p.1.unwrap_or(f64::NAN),
        lg_p.0.unwrap_or(f64::NAN),
        lg_p.1.unwrap_or(f64::NAN),
        r.samples_loaded,
        r.backup_gbps.unwrap_or(f64::NAN)
    ));
    Ok(r)
}

/// Segment pointers into a buffer that outlives the threads using them (read only).
struct Shared(Vec<Vec<(*mut u8, usize)>>);
// SAFETY: the pointers are only read through (batch_set sends the bytes); the buffer outlives
// the scope of the threads.
unsafe impl Sync for Shared {}

impl Shared {
    fn get(&self) -> &Vec<Vec<(*mut u8, usize)>> {
        &self.0
    }
}

/// `ENGINES` processes (this binary's hidden `bench-writer`) writing the same prefix, with and
/// without skip_existing, started together and one after another; plus the cost of
/// skip_existing on a batch of all-new pages.
fn dedup(c: &Ctx<'_>, con: &mut redis::Connection) -> AnyResult<DedupReport> {
    let q = c.args.quick;
    let engines = 4;
    let size = 64usize << 10;
    let prefix: u64 = if q { 32 << 20 } else { 256 << 20 };
    let mut rep = DedupReport { engines, prefix_bytes: prefix, page_bytes: size, new_pages_page_bytes: size, ..Default::default() };
    let exe = std::env::current_exe()?;
    let model = "hicache-bench-dedup";
    let clear = Handle::open(&OpenOptions { model: Some(model.into()), ..c.opts.clone() })?;
    for start in ["simultaneous", "staggered"] {
        for skip in [false, true] {
            clear.clear()?;
            let in0 = info_field(con, "stats", "total_net_input_bytes").unwrap_or(0);
            let t0 = Instant::now();
            let mut cpu = 0f64;
            let spawn = || -> AnyResult<std::process::Child> {
                let mut cmd = Command::new(&exe);
                cmd.args(["--host", &c.target.host, "--port", &c.target.port.to_string(), "--db", &c.target.db.to_string(), "--model", model]);
                cmd.args(["bench-writer", "--bytes", &prefix.to_string(), "--page-bytes", &size.to_string(), "--pages", &c.args.pages.to_string()]);
                if skip {
                    cmd.arg("--skip-existing");
                }
                refs::die_with_bench(&mut cmd);
                Ok(cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::inherit()).spawn()?)
            };
            let wait = |child: std::process::Child| -> AnyResult<f64> {
                let out = child.wait_with_output()?;
                if !out.status.success() {
                    return Err(format!("bench-writer failed ({})", out.status).into());
                }
                let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
                Ok(v["cpu_s"].as_f64().unwrap_or(f64::NAN))
            };
            if start == "simultaneous" {
                let children: Vec<_> = (0..engines).map(|_| spawn()).collect::<AnyResult<_>>()?;
                for ch in children {
                    cpu += wait(ch)?;
                }
            } else {
                for _ in 0..engines {
                    cpu += wait(spawn()?)?;
                }
            }
            let wall = t0.elapsed().as_secs_f64();
            let input = info_field(con, "stats", "total_net_input_bytes").unwrap_or(0) - in0;
            progress(&format!(
                "dedup: {engines} engines {start}, skip_existing {}: server received {} MiB, {wall:.2} s, client CPU {cpu:.2} s",
                if skip { "on" } else { "off" },
                input >> 20
            ));
            rep.runs.push(DedupRun { start: start.into(), skip_existing: skip, server_input_bytes: input, wall_s: r3(wall), client_cpu_s: r3(cpu) });
        }
    }
    clear.clear()?;
    // The cost on all-new pages: with and without, interleaved, fresh keys every time, and a
    // handle of its own for each figure: a handle kept for all of them carries its connection's
    // speed into every one (the same A/B with two long-lived handles gave -4 %, 2 % and 5 % in
    // three runs of one minute; the probe itself costs 5-30 us a batch of 128 new keys).
    let open = |skip: bool| Handle::open(&OpenOptions { skip_existing: Some(skip), ..c.opts.clone() });
    let one = Plan { reps: 1, sizes: vec![size], ..c.plan.clone() };
    let (mut plain, mut skip) = (Vec::new(), Vec::new());
    // The server has just been cleared: while its memory grows back to maxmemory (page faults,
    // no eviction yet) writes ran at half speed, whichever handle went first. Fill it past
    // maxmemory again, then one unmeasured pass of each.
    fill(c, 1 << 20)?;
    for (k, with_skip) in [false, true].into_iter().enumerate() {
        measure_ours_steady(&open(with_skip)?, size, &one, c.args, c.pid, "new pages, warm-up", 4990 + k as u64)?;
    }
    // A B B A: neither goes first every time.
    for rep_i in 0..c.plan.reps.max(4) {
        let epoch = 5000 + 2 * rep_i as u64;
        let order = if rep_i % 2 == 0 { [false, true] } else { [true, false] };
        for (k, with_skip) in order.into_iter().enumerate() {
            let label = if with_skip { "new pages, skip_existing" } else { "new pages, plain" };
            let r = measure_ours_steady(&open(with_skip)?, size, &one, c.args, c.pid, label, epoch + k as u64)?;
            if with_skip { skip.push(r.set.gbps[0]) } else { plain.push(r.set.gbps[0]) }
        }
    }
    let (pb, sb) = (best_median(&plain).0, best_median(&skip).0);
    // The cost from the pairs run back to back (the median of their ratios), which a drift of
    // the machine over the figure moves less than a ratio of bests.
    let ratios: Vec<f64> = skip.iter().zip(&plain).map(|(s, p)| s / p).collect();
    let cost = 1.0 - best_median(&ratios).1;
    rep.new_pages_plain = r3(pb);
    rep.new_pages_skip = r3(sb);
    rep.new_pages_cost = r3(cost);
    progress(&format!("skip_existing on all-new {} pages: {sb:.2} vs {pb:.2} GB/s without (best); cost {:.1}% (median of {} back-to-back pairs)", size_label(size), 100.0 * cost, ratios.len()));
    Ok(rep)
}

/// The hidden `bench-writer` subcommand: one engine process writing `bytes` of pages (the same
/// keys and bytes in every process), then printing `{"seconds": .., "cpu_s": ..}`.
pub fn writer(opts: &OpenOptions, bytes: u64, size: usize, pages: usize) -> AnyResult<()> {
    let h = Handle::open(opts)?;
    let buf = Buffers::new(size, pages, 1, 99);
    let segs = Buffers::segs(buf.src.as_ptr() as *mut u8, size, pages, 1);
    let batches = bytes.div_ceil((size * pages) as u64);
    let mut out = vec![0i32; pages];
    let c0 = refs::self_cpu_ns();
    let t0 = Instant::now();
    for b in 0..batches {
        let keys: Vec<Vec<u8>> = (0..pages).map(|i| format!("prefix-{b:06}-{i:04}").into_bytes()).collect();
        h.batch_set(&Batch::new(&keys, &segs), &mut out)?;
        if out.iter().any(|o| *o != 0) {
            return Err("bench-writer: a page was not stored".into());
        }
    }
    println!("{{\"seconds\": {:.4}, \"cpu_s\": {:.4}}}", t0.elapsed().as_secs_f64(), (refs::self_cpu_ns() - c0) as f64 / 1e9);
    Ok(())
}

fn f(v: Fig, prec: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.prec$}"))
}

/// The deployment tables on stdout.
pub fn print(d: &DeployReport) {
    println!();
    println!(
        "STEADY STATE (the headline): server at maxmemory {} MiB, {}, filled past it first; every figure writes keys never written before (evicting) and reads back what it just wrote. Best GB/s of interleaved repetitions.",
        d.maxmemory_bytes >> 20,
        d.policy
    );
    println!(
        "{:>5} | {:>9} {:>9} {:>6} | {:>8} {:>8} | {:>6} {:>6} | {:>7} {:>7} | {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} | {:>12}",
        "page", "ours set", "ours get", "hits%", "vb SET", "vb GET", "set/vb", "get/vb", "py set", "py get", "rows set", "rows get", "flat set", "flat get", "sgl set", "sgl get", "srv/cli s/GB"
    );
    println!("{}", "-".repeat(168));
    for r in &d.steady {
        let py = r.python.clone().unwrap_or_default();
        println!(
            "{:>5} | {:>9} {:>9} {:>6} | {:>8} {:>8} | {:>6} {:>6} | {:>7} {:>7} | {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} | {:>5}/{:<6}",
            r.label,
            f(r.ours_set, 2),
            f(r.ours_get, 2),
            if r.ours_get_pages > 0 { format!("{:.1}", 100.0 * r.ours_get_hits as f64 / r.ours_get_pages as f64) } else { "-".into() },
            f(r.vb_set, 2),
            f(r.vb_get, 2),
            f(r.set_vs_valkey_benchmark, 2),
            f(r.get_vs_valkey_benchmark, 2),
            f(r.py_set, 2),
            f(r.py_get, 2),
            f(py.rows_set, 2),
            f(py.rows_get, 2),
            f(py.flat_set, 2),
            f(py.flat_get, 2),
            f(py.sglang_set, 2),
            f(py.sglang_get, 2),
            f(r.ours_server_cpu_s_per_gb_get, 2),
            f(r.ours_client_cpu_s_per_gb_get, 2),
        );
    }
    println!("vb = valkey-benchmark (SET: random keys of a 2e9 keyspace, new ones counted by the server; GET: a prefilled keyspace as large as ours); py = valkey-py peer on fresh keys;");
    println!("rows / flat = the Python package's ValkeyStore with numpy rows / flat pointer arrays; sgl = the SGLang backend's v1 path; srv/cli s/GB = server / client CPU seconds per GB of our get.");
    let fresh: Vec<String> = d
        .steady
        .iter()
        .filter(|r| r.vb_set_requests > 0)
        .map(|r| format!("{} {:.1}%", r.label, 100.0 * r.vb_set_new_keys as f64 / r.vb_set_requests as f64))
        .collect();
    if !fresh.is_empty() {
        println!("valkey-benchmark SETs that made a new key (server's key count + evictions): {}.", fresh.join(", "));
    }
    println!("{} keys evicted during the steady-state figures.", d.evicted_keys);
    let moon: Vec<_> = d.steady.iter().filter_map(|r| r.mooncake.as_ref().map(|m| (r.label.clone(), m))).collect();
    if !moon.is_empty() {
        println!("\nMooncake store (TCP on loopback, driven like SGLang: setup, register_buffer, batch_put_from, batch_get_into), GB/s and CPU s/GB, next to ours at steady state:");
        for (label, m) in moon {
            let g = |layout: &str, k: &str| m.get(layout).and_then(|l| l.get(k)).and_then(|v| v.as_f64()).map_or("-".into(), |v| format!("{v:.2}"));
            let cpu = |layout: &str, op: &str| format!("{}+{}", g(layout, &format!("client_cpu_s_per_gb_{op}")), g(layout, &format!("store_cpu_s_per_gb_{op}")));
            println!(
                "{label:>5} | two engines: put {} get {} (CPU s/GB engine+store put {} get {}) | store in a third process: put {} get {} (CPU s/GB client+store put {} get {})",
                g("two_engines", "put_GBps"),
                g("two_engines", "get_GBps"),
                cpu("two_engines", "put"),
                cpu("two_engines", "get"),
                g("third_process", "put_GBps"),
                g("third_process", "get_GBps"),
                cpu("third_process", "put"),
                cpu("third_process", "get"),
            );
        }
    }
    if let Some(l) = &d.latency_under_load {
        println!(
            "\nPREFETCH UNDER A BACKUP: batch_exists of {} keys and batch_get of {} x {} pages, idle and while another thread on the same handle runs a {} MiB batch_set (backup ran at {} GB/s)",
            l.exists_keys,
            l.get_pages,
            size_label(l.get_page_bytes),
            l.backup_bytes >> 20,
            f(l.backup_gbps, 2)
        );
        println!("  batch_exists p50/p99 µs: idle {}/{}, under load {}/{} -> p99 ratio {} (goal <= 2)", f(l.exists_idle_us.0, 0), f(l.exists_idle_us.1, 0), f(l.exists_loaded_us.0, 0), f(l.exists_loaded_us.1, 0), f(l.exists_p99_ratio, 2));
        println!("  batch_get    p50/p99 µs: idle {}/{}, under load {}/{} -> p99 ratio {} (goal <= 2)", f(l.get_idle_us.0, 0), f(l.get_idle_us.1, 0), f(l.get_loaded_us.0, 0), f(l.get_loaded_us.1, 0), f(l.get_p99_ratio, 2));
        println!("  ({} idle samples, {} under load)", l.samples_idle, l.samples_loaded);
    }
    if !d.latency_by_backup_page.is_empty() {
        println!("  by the backup's page size (p99 loaded / p99 idle; the server reads a large value in one read, which the prefetch waits behind):");
        for l in d.latency_by_backup_page.iter().chain(&d.latency_under_load) {
            println!(
                "  {:>5} pages: exists p99 {} -> {} µs (x{}), get p99 {} -> {} µs (x{}), backup {} GB/s",
                size_label(l.backup_page_bytes),
                f(l.exists_idle_us.1, 0),
                f(l.exists_loaded_us.1, 0),
                f(l.exists_p99_ratio, 2),
                f(l.get_idle_us.1, 0),
                f(l.get_loaded_us.1, 0),
                f(l.get_p99_ratio, 2),
                f(l.backup_gbps, 2)
            );
        }
    }
    if let Some(dd) = &d.dedup {
        println!("\nDEDUP: {} engine processes writing the same {} MiB prefix ({} pages), skip_existing off / on:", dd.engines, dd.prefix_bytes >> 20, size_label(dd.page_bytes));
        for r in &dd.runs {
            println!(
                "  {:>12}, skip_existing {:>3}: server received {:>6} MiB, wall {} s, client CPU {} s",
                r.start,
                if r.skip_existing { "on" } else { "off" },
                r.server_input_bytes >> 20,
                f(r.wall_s, 2),
                f(r.client_cpu_s, 2)
            );
        }
        println!(
            "  all-new {} pages: batch_set {} GB/s with skip_existing vs {} without (best); cost {}% (median of back-to-back pairs; goal <= 5%)",
            size_label(dd.new_pages_page_bytes),
            f(dd.new_pages_skip, 2),
            f(dd.new_pages_plain, 2),
            f(dd.new_pages_cost.map(|c| c * 100.0), 1)
        );
    }
    for n in &d.notes {
        println!("note: {n}");
    }
}
