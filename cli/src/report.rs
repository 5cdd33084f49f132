//! The bench report: typed structs that are the JSON file (`--json`), built once from the
//! measurements; the table on stdout and the chart are drawn from the same structs, so the three
//! cannot disagree. A saved report reads back into them (`bench --replot`).
//!
//! Figures are rounded to 3 decimals; a figure that was not measured, or is not a number, is
//! `null` (`None`). GB/s are 1e9 bytes of page payload per second.

use crate::bench::{best_median, size_label, ExistsResult, LatencyResult, OpFigures, OursResult, Plan, SizeResult};
use crate::human_bytes;
use crate::refs::VbRun;
use serde::{Deserialize, Serialize};

/// A measured figure, rounded to 3 decimals; `None` when unknown.
pub type Fig = Option<f64>;

/// Rounds to 3 decimals; `None` for NaN and infinities.
pub fn r3(v: f64) -> Fig {
    v.is_finite().then(|| (v * 1000.0).round() / 1000.0)
}

/// `a / b`, NaN when `b` is unknown or zero.
pub fn ratio(a: f64, b: Option<f64>) -> f64 {
    match b {
        Some(b) if b > 0.0 => a / b,
        _ => f64::NAN,
    }
}

/// The whole run.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Report {
    pub tool: String,
    pub library_version: String,
    pub quick: bool,
    pub server: String,
    pub server_version: String,
    pub server_io_threads: String,
    pub cores: usize,
    pub pages_per_batch: usize,
    pub segments_per_page: usize,
    pub min_bytes_per_figure: u64,
    pub repetitions: usize,
    /// The `connections` option given, `None` for the library's default.
    pub connections: Option<u32>,
    pub valkey_benchmark_clients: Vec<u32>,
    pub valkey_benchmark_pipelines: Vec<u32>,
    /// What was skipped and why (e.g. a reference that could not run).
    #[serde(default)]
    pub notes: Vec<String>,
    pub sizes: Vec<SizeReport>,
    pub exists: ExistsReport,
    pub latency_4k_batch_of_1: LatencyReport,
    pub max_rss_growth_bytes: u64,
    pub targets: Vec<TargetReport>,
    pub seconds: Fig,
}

/// One page size.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SizeReport {
    pub page_bytes: usize,
    pub label: String,
    pub ours: OursReport,
    /// The same with `checksum=1` (xxh3 of every payload), unless `--no-checksum-cost`.
    pub ours_checksum: Option<ChecksumReport>,
    pub ratios: Ratios,
    pub notes: Vec<String>,
    pub valkey_benchmark: Option<VbReport>,
    pub valkey_py: Option<PeerReport>,
}

/// batch_set and batch_get through the C ABI.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct OursReport {
    pub set: OpReport,
    pub get: OpReport,
    /// VmHWM growth beyond the caller's buffers while the figure ran.
    pub rss_growth_bytes: u64,
    /// Whether VmHWM could be reset before the figure (else the growth is an upper bound).
    pub hwm_reset: bool,
}

/// One operation at one page size, over the repetitions.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct OpReport {
    #[serde(rename = "best_GBps")]
    pub best_gbps: Fig,
    #[serde(rename = "median_GBps")]
    pub median_gbps: Fig,
    #[serde(rename = "runs_GBps")]
    pub runs_gbps: Vec<Fig>,
    /// Median valkey-server CPU time over wall time (1.0 = one core).
    pub server_cpu: Fig,
    /// Median CPU time of this process over wall time.
    pub client_cpu: Fig,
    /// Cores' worth of CPU used by other processes during each repetition.
    pub foreign_cores: Vec<Fig>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ChecksumReport {
    pub set: OpReport,
    pub get: OpReport,
    /// 1 - best with checksum / best without.
    pub set_cost: Fig,
    pub get_cost: Fig,
}

/// Ours (best) over the references (best).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Ratios {
    pub set_vs_valkey_benchmark: Fig,
    pub get_vs_valkey_benchmark: Fig,
    pub set_vs_valkey_py: Fig,
    pub get_vs_valkey_py: Fig,
}

/// valkey-benchmark at one page size: the best SET and GET run, and every run.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct VbReport {
    pub set: Option<VbRunReport>,
    pub get: Option<VbRunReport>,
    pub runs: Vec<VbRunReport>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct VbRunReport {
    pub test: String,
    pub clients: u32,
    pub pipeline: u32,
    pub requests: u64,
    pub rps: Fig,
    #[serde(rename = "GBps")]
    pub gbps: Fig,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub server_cpu: Fig,
}

impl From<&VbRun> for VbRunReport {
    fn from(r: &VbRun) -> Self {
        VbRunReport {
            test: r.test.to_string(),
            clients: r.clients,
            pipeline: r.pipeline,
            requests: r.requests,
            rps: r3(r.rps),
            gbps: r3(r.gbps),
            p50_ms: r.p50_ms,
            p99_ms: r.p99_ms,
            server_cpu: r3(r.server_cpu),
        }
    }
}

/// The valkey-py peer script's best figures.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PeerReport {
    #[serde(rename = "set_GBps")]
    pub set_gbps: f64,
    #[serde(rename = "get_GBps")]
    pub get_gbps: f64,
    pub exists_per_s: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ExistsReport {
    /// Keys per batch_exists call.
    pub batch: usize,
    pub best_keys_per_s: Fig,
    pub median_keys_per_s: Fig,
    pub p50_us: Fig,
    pub p99_us: Fig,
}

/// One 4 KiB page, batch of 1: round-trip latency, and valkey-benchmark `-c 1 -P 1` beside it.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct LatencyReport {
    pub samples: usize,
    pub set_p50_us: Fig,
    pub set_p99_us: Fig,
    pub get_p50_us: Fig,
    pub get_p99_us: Fig,
    pub valkey_benchmark_c1_set_p50_ms: Option<f64>,
    pub valkey_benchmark_c1_set_p99_ms: Option<f64>,
    pub valkey_benchmark_c1_get_p50_ms: Option<f64>,
    pub valkey_benchmark_c1_get_p99_ms: Option<f64>,
}

/// A performance target: `met` is `None` when the figure is unknown (a reference was skipped).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct TargetReport {
    pub target: String,
    pub value: Fig,
    pub goal: f64,
    pub met: Option<bool>,
}

impl OpReport {
    fn new(f: &OpFigures) -> OpReport {
        let (best, med) = best_median(&f.gbps);
        OpReport {
            best_gbps: r3(best),
            median_gbps: r3(med),
            runs_gbps: f.gbps.iter().map(|v| r3(*v)).collect(),
            server_cpu: r3(best_median(&f.server_cpu).1),
            client_cpu: r3(best_median(&f.client_cpu).1),
            foreign_cores: f.foreign.iter().map(|v| r3(*v)).collect(),
        }
    }
}

fn best(f: &OpFigures) -> f64 {
    best_median(&f.gbps).0
}

/// Everything about the run that is not a measurement.
pub struct RunFacts<'a> {
    pub plan: &'a Plan,
    pub quick: bool,
    pub pages: usize,
    pub segments: usize,
    pub connections: Option<u32>,
    pub server: String,
    pub server_version: String,
    pub io_threads: String,
    pub cores: usize,
    pub library_version: String,
    pub notes: Vec<String>,
}

/// Builds the report; targets are judged on the unrounded figures.
pub fn build(results: &[SizeResult], exists: &ExistsResult, lat: &LatencyResult, facts: RunFacts, seconds: f64) -> Report {
    let mut sizes = Vec::new();
    let mut targets = Vec::new();
    let mut check = |name: String, value: f64, goal: f64| {
        targets.push(TargetReport { target: name, value: r3(value), goal, met: value.is_finite().then_some(value >= goal) });
    };
    for r in results {
        let (sb, gb) = (best(&r.ours.set), best(&r.ours.get));
        let vbs = r.vb.as_ref().and_then(|v| v.set.as_ref()).map(|x| x.gbps);
        let vbg = r.vb.as_ref().and_then(|v| v.get.as_ref()).map(|x| x.gbps);
        let (ps, pg) = (r.peer.as_ref().map(|x| x.set_gbps), r.peer.as_ref().map(|x| x.get_gbps));
        sizes.push(SizeReport {
            page_bytes: r.size,
            label: size_label(r.size),
            ours: ours_report(&r.ours),
            ours_checksum: r.checksum.as_ref().map(|c| ChecksumReport {
                set: OpReport::new(&c.set),
                get: OpReport::new(&c.get),
                set_cost: r3(1.0 - best(&c.set) / sb),
                get_cost: r3(1.0 - best(&c.get) / gb),
            }),
            ratios: Ratios {
                set_vs_valkey_benchmark: r3(ratio(sb, vbs)),
                get_vs_valkey_benchmark: r3(ratio(gb, vbg)),
                set_vs_valkey_py: r3(ratio(sb, ps)),
                get_vs_valkey_py: r3(ratio(gb, pg)),
            },
            notes: r.notes.clone(),
            valkey_benchmark: r.vb.as_ref().map(|v| VbReport {
                set: v.set.as_ref().map(VbRunReport::from),
                get: v.get.as_ref().map(VbRunReport::from),
                runs: v.runs.iter().map(VbRunReport::from).collect(),
            }),
            valkey_py: r.peer.as_ref().map(|p| PeerReport { set_gbps: p.set_gbps, get_gbps: p.get_gbps, exists_per_s: p.exists_per_s }),
        });
        let label = size_label(r.size);
        let goal = if r.size < 64 << 10 { 0.6 } else { 0.8 };
        check(format!("{label} set / valkey-benchmark SET"), ratio(sb, vbs), goal);
        check(format!("{label} get / valkey-benchmark GET"), ratio(gb, vbg), goal);
        if r.size >= 256 << 10 {
            check(format!("{label} get / valkey-py get"), ratio(gb, pg), 5.0);
            check(format!("{label} set / valkey-py set"), ratio(sb, ps), 2.0);
        }
    }
    let (eb, em) = best_median(&exists.keys_per_s);
    let max_rss = results.iter().map(|r| r.ours.rss_growth).max().unwrap_or(0);
    check(format!("batch_exists keys/s ({}-key batches)", exists.batch), eb, 1e6);
    check("RSS growth MiB (goal: < 32, shown as 32 - growth >= 0)".into(), 32.0 - max_rss as f64 / (1u64 << 20) as f64, 0.0);
    if let (Some(s), Some(g)) = (lat.vb_set_ms, lat.vb_get_ms) {
        check("4K set p50 within 2x of valkey-benchmark -c 1 (2 - ours/vb)".into(), 2.0 - lat.set_us.0 / (s.0 * 1e3), 0.0);
        check("4K get p50 within 2x of valkey-benchmark -c 1 (2 - ours/vb)".into(), 2.0 - lat.get_us.0 / (g.0 * 1e3), 0.0);
        check("4K set p99 within 2x of valkey-benchmark -c 1 (2 - ours/vb)".into(), 2.0 - lat.set_us.1 / (s.1 * 1e3), 0.0);
        check("4K get p99 within 2x of valkey-benchmark -c 1 (2 - ours/vb)".into(), 2.0 - lat.get_us.1 / (g.1 * 1e3), 0.0);
    }
    let p = facts.plan;
    Report {
        tool: "hicache-valkey bench".into(),
        library_version: facts.library_version,
        quick: facts.quick,
        server: facts.server,
        server_version: facts.server_version,
        server_io_threads: facts.io_threads,
        cores: facts.cores,
        pages_per_batch: facts.pages,
        segments_per_page: facts.segments,
        min_bytes_per_figure: p.min_bytes,
        repetitions: p.reps,
        connections: facts.connections,
        valkey_benchmark_clients: p.vb_clients.clone(),
        valkey_benchmark_pipelines: p.vb_pipelines.clone(),
        notes: facts.notes,
        sizes,
        exists: ExistsReport { batch: exists.batch, best_keys_per_s: r3(eb), median_keys_per_s: r3(em), p50_us: r3(exists.p50_us), p99_us: r3(exists.p99_us) },
        latency_4k_batch_of_1: LatencyReport {
            samples: lat.samples,
            set_p50_us: r3(lat.set_us.0),
            set_p99_us: r3(lat.set_us.1),
            get_p50_us: r3(lat.get_us.0),
            get_p99_us: r3(lat.get_us.1),
            valkey_benchmark_c1_set_p50_ms: lat.vb_set_ms.map(|v| v.0),
            valkey_benchmark_c1_set_p99_ms: lat.vb_set_ms.map(|v| v.1),
            valkey_benchmark_c1_get_p50_ms: lat.vb_get_ms.map(|v| v.0),
            valkey_benchmark_c1_get_p99_ms: lat.vb_get_ms.map(|v| v.1),
        },
        max_rss_growth_bytes: max_rss,
        targets,
        seconds: r3(seconds),
    }
}

fn ours_report(o: &OursResult) -> OursReport {
    OursReport { set: OpReport::new(&o.set), get: OpReport::new(&o.get), rss_growth_bytes: o.rss_growth, hwm_reset: o.hwm_reset }
}

/// `v` right-aligned in `width` with `prec` decimals, `-` when unknown.
fn fmt_fig(v: Fig, width: usize, prec: usize) -> String {
    match v {
        Some(v) => format!("{v:>width$.prec$}"),
        None => format!("{:>width$}", "-"),
    }
}

fn pct(v: Fig) -> String {
    v.map_or("-".into(), |v| format!("{:.0}", 100.0 * v))
}

/// The table and summary lines on stdout.
pub fn print(rep: &Report) {
    println!();
    println!(
        "{:>5} | {:>13} {:>13} | {:>11} {:>11} | {:>7} {:>7} | {:>6} {:>6} | {:>6} {:>6} | {:>6} {:>6} | {:>8}",
        "page", "set best/med", "get best/med", "vb SET best", "vb GET best", "py set", "py get", "set/vb", "get/vb", "set/py", "get/py", "srvCPU", "cliCPU", "RSS+"
    );
    println!("{}", "-".repeat(150));
    for s in &rep.sizes {
        let vb = |r: &Option<VbRunReport>| r.as_ref().and_then(|x| x.gbps);
        let (vbs, vbg) = s.valkey_benchmark.as_ref().map_or((None, None), |v| (vb(&v.set), vb(&v.get)));
        let (ps, pg) = s.valkey_py.as_ref().map_or((None, None), |p| (Some(p.set_gbps), Some(p.get_gbps)));
        let (o, q) = (&s.ours, &s.ratios);
        println!(
            "{:>5} | {}/{:<6} {}/{:<6} | {} {} | {} {} | {} {} | {} {} | {:>6} {:>6} | {:>8}",
            s.label,
            fmt_fig(o.set.best_gbps, 6, 2),
            fmt_fig(o.set.median_gbps, 0, 2).trim(),
            fmt_fig(o.get.best_gbps, 6, 2),
            fmt_fig(o.get.median_gbps, 0, 2).trim(),
            fmt_fig(vbs, 11, 2),
            fmt_fig(vbg, 11, 2),
            fmt_fig(ps, 7, 2),
            fmt_fig(pg, 7, 2),
            fmt_fig(q.set_vs_valkey_benchmark, 6, 2),
            fmt_fig(q.get_vs_valkey_benchmark, 6, 2),
            fmt_fig(q.set_vs_valkey_py, 6, 1),
            fmt_fig(q.get_vs_valkey_py, 6, 1),
            format!("{}/{}%", pct(o.set.server_cpu), pct(o.get.server_cpu)),
            format!("{}/{}%", pct(o.set.client_cpu), pct(o.get.client_cpu)),
            human_bytes(o.rss_growth_bytes)
        );
    }
    println!(
        "GB/s = 1e9 bytes/s of page payload. vb = valkey-benchmark best of -c {:?} x -P {:?}; py = valkey-py peer (best).",
        rep.valkey_benchmark_clients, rep.valkey_benchmark_pipelines
    );
    println!("srvCPU / cliCPU = valkey-server / this process CPU time over wall time during set/get (100% = one core). RSS+ = VmHWM growth beyond the caller's buffers.");
    if rep.sizes.iter().any(|s| s.ours_checksum.is_some()) {
        println!("\nxxh3 checksum cost (checksum=1 vs 0, best GB/s):");
        for s in &rep.sizes {
            if let Some(c) = &s.ours_checksum {
                let change = |cost: Fig| cost.map_or("-".into(), |c| format!("{:+.0}%", -100.0 * c));
                println!(
                    "  {:>4}: set {} -> {} GB/s ({}), get {} -> {} GB/s ({})",
                    s.label,
                    fmt_fig(s.ours.set.best_gbps, 0, 2),
                    fmt_fig(c.set.best_gbps, 0, 2),
                    change(c.set_cost),
                    fmt_fig(s.ours.get.best_gbps, 0, 2),
                    fmt_fig(c.get.best_gbps, 0, 2),
                    change(c.get_cost)
                );
            }
        }
    }
    let e = &rep.exists;
    println!(
        "\nbatch_exists ({}-key batches): best {} keys/s, median {} keys/s; per call p50 {} µs, p99 {} µs",
        e.batch,
        fmt_fig(e.best_keys_per_s, 0, 0),
        fmt_fig(e.median_keys_per_s, 0, 0),
        fmt_fig(e.p50_us, 0, 0),
        fmt_fig(e.p99_us, 0, 0)
    );
    let l = &rep.latency_4k_batch_of_1;
    println!(
        "one 4 KiB page, batch of 1 ({} round trips): set p50 {} µs, p99 {} µs; get p50 {} µs, p99 {} µs",
        l.samples,
        fmt_fig(l.set_p50_us, 0, 0),
        fmt_fig(l.set_p99_us, 0, 0),
        fmt_fig(l.get_p50_us, 0, 0),
        fmt_fig(l.get_p99_us, 0, 0)
    );
    let vb_lat = |p50: Option<f64>, p99: Option<f64>| match (p50, p99) {
        (Some(a), Some(b)) => format!("p50 {:.0} µs, p99 {:.0} µs", a * 1e3, b * 1e3),
        _ => "-".into(),
    };
    println!(
        "  valkey-benchmark -c 1 -P 1 -d 4096: SET {}; GET {}",
        vb_lat(l.valkey_benchmark_c1_set_p50_ms, l.valkey_benchmark_c1_set_p99_ms),
        vb_lat(l.valkey_benchmark_c1_get_p50_ms, l.valkey_benchmark_c1_get_p99_ms)
    );
    println!("peak RSS growth beyond the caller's buffers (VmHWM): {} at most over all page sizes", human_bytes(rep.max_rss_growth_bytes));
    for n in &rep.notes {
        println!("note: {n}");
    }
    let met = rep.targets.iter().filter(|t| t.met == Some(true)).count();
    println!("\ntargets: {met} of {} met", rep.targets.len());
    for t in rep.targets.iter().filter(|t| t.met == Some(false)) {
        println!("  MISSED: {} = {} (goal {})", t.target, fmt_fig(t.value, 0, 3), t.goal);
    }
    if let Some(s) = rep.seconds {
        println!("took {s:.1} s");
    }
}
