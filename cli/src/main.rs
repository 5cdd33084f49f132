//! `hicache-valkey`: operate and benchmark a Valkey used as an LLM engine's KV-cache tier.
//!
//! Every subcommand goes through the library's public C ABI (`hicache_valkey::ffi`), the same code
//! path a C or Python caller uses; see `client.rs` for the safe wrapper.
//!
//! - `main.rs`: the command line, `ping`, `stats`, `clear`
//! - `client.rs`: a safe wrapper over the C ABI (options, handle, batches, last error)
//! - `bench.rs`: `bench`: what is measured and how
//! - `refs.rs`: the references (valkey-benchmark, the valkey-py peer) and the CPU / RSS probes
//! - `report.rs`: the bench report as typed structs (its JSON), its table and its targets
//! - `chart.rs`: the bench chart (SVG, plotters)

mod bench;
mod chart;
mod client;
mod deploy;
mod refs;
mod report;
mod transports;

use clap::{Args, Parser, Subcommand};
use client::{cstr_field, Handle, OpenOptions};
use serde::Serialize;
use std::process::ExitCode;

/// Valkey as the storage tier of an LLM inference engine's hierarchical KV cache.
///
/// Connection settings not given here come from the environment (VALKEY_URL, VALKEY_HOST,
/// VALKEY_PORT, VALKEY_DB, VALKEY_USERNAME, VALKEY_PASSWORD, HICACHE_VALKEY_MODEL), else the
/// defaults (localhost:6379, db 0, model "default").
#[derive(Parser, Debug)]
#[command(name = "hicache-valkey", version = library_version(), propagate_version = true)]
struct Cli {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
struct ConnArgs {
    /// Server host [env: VALKEY_HOST] [default: localhost]
    #[arg(long, global = true)]
    host: Option<String>,
    /// Server port [env: VALKEY_PORT] [default: 6379]
    #[arg(long, global = true)]
    port: Option<u16>,
    /// Database index [env: VALKEY_DB] [default: 0]
    #[arg(long, global = true)]
    db: Option<u32>,
    /// valkey://[user[:password]@]host[:port][/db] [env: VALKEY_URL]
    #[arg(long, global = true)]
    url: Option<String>,
    /// Password; prefer the VALKEY_PASSWORD environment variable (command lines are visible to
    /// other users of the machine)
    #[arg(long, global = true)]
    password: Option<String>,
    /// Model name: the namespace of the keys [env: HICACHE_VALKEY_MODEL] [default: "default"]
    #[arg(long, global = true)]
    model: Option<String>,
    /// Path of the server's Unix domain socket, instead of host:port [env: VALKEY_SOCKET]
    #[arg(long, global = true)]
    socket: Option<String>,
    /// Connect with TLS (a valkeys:// URL does too) [env: VALKEY_TLS]
    #[arg(long, global = true)]
    tls: bool,
    /// PEM file of the CA(s) that signed the server's certificate [env: VALKEY_TLS_CA_CERT]
    /// [default: the system's trust store]
    #[arg(long, global = true)]
    tls_ca_cert: Option<String>,
    /// PEM file of the client certificate, for mutual TLS [env: VALKEY_TLS_CERT]
    #[arg(long, global = true)]
    tls_cert: Option<String>,
    /// PEM file of the client certificate's private key [env: VALKEY_TLS_KEY]
    #[arg(long, global = true)]
    tls_key: Option<String>,
    /// Name to verify in the server's certificate, when not the host [env: VALKEY_TLS_SERVER_NAME]
    #[arg(long, global = true)]
    tls_server_name: Option<String>,
}

impl ConnArgs {
    fn options(&self) -> OpenOptions {
        OpenOptions {
            url: self.url.clone(),
            host: self.host.clone(),
            port: self.port,
            db: self.db,
            password: self.password.clone(),
            model: self.model.clone(),
            socket: self.socket.clone(),
            tls: self.tls,
            tls_ca_cert: self.tls_ca_cert.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_server_name: self.tls_server_name.clone(),
            ..Default::default()
        }
    }

    /// The same settings as the library's safe core sees them (for the bench's references).
    fn settings(&self) -> hicache_valkey::Settings {
        hicache_valkey::Settings {
            url: self.url.clone(),
            host: self.host.clone(),
            port: self.port.map(i64::from),
            db: self.db.map(i64::from),
            password: self.password.clone(),
            model_name: self.model.clone(),
            socket: self.socket.clone(),
            tls: self.tls.then_some(true),
            tls_ca_cert: self.tls_ca_cert.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_server_name: self.tls_server_name.clone(),
            ..Default::default()
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One PING round trip; prints its time.
    Ping {
        /// Round trips to make (prints each, then min / median / max).
        #[arg(short, long, default_value_t = 1)]
        count: u32,
    },
    /// Server and client statistics for the model.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Deletes every key of the model (all ranks) in the database; prints how many.
    Clear,
    /// Measures batch_set / batch_get / batch_exists against valkey-benchmark and valkey-py.
    Bench(Box<bench::BenchArgs>),
    /// One engine process of the bench's dedup figure: writes BYTES of pages (the same keys and
    /// bytes in every process) and prints its time as JSON.
    #[command(hide = true)]
    BenchWriter {
        #[arg(long)]
        bytes: u64,
        #[arg(long)]
        page_bytes: usize,
        #[arg(long, default_value_t = 128)]
        pages: usize,
        #[arg(long)]
        skip_existing: bool,
    },
}

/// The version of the library this binary runs (`hicache_valkey_version()`), which is the version
/// `--version` prints: the CLI has no behaviour of its own worth a separate number.
fn library_version() -> &'static str {
    Box::leak(client::version().into_boxed_str())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    hicache_valkey::init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hicache-valkey: error: {e}");
            ExitCode::FAILURE
        }
    }
}

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

fn run(cli: Cli) -> AnyResult<()> {
    match &cli.command {
        Command::Ping { count } => ping(&cli.conn, *count),
        Command::Stats { json } => stats(&cli.conn, *json),
        Command::Clear => {
            let h = Handle::open(&cli.conn.options())?;
            let n = h.clear()?;
            let model = cli.conn.model.clone().or_else(|| std::env::var("HICACHE_VALKEY_MODEL").ok()).unwrap_or("default".into());
            println!("deleted {n} keys of model '{model}'");
            Ok(())
        }
        Command::Bench(args) => bench::run(&cli.conn.options(), &cli.conn.settings(), args),
        Command::BenchWriter { bytes, page_bytes, pages, skip_existing } => {
            deploy::writer(&OpenOptions { skip_existing: Some(*skip_existing), ..cli.conn.options() }, *bytes, *page_bytes, *pages)
        }
    }
}

fn ping(conn: &ConnArgs, count: u32) -> AnyResult<()> {
    let h = Handle::open(&conn.options())?;
    let server = conn.settings().resolve().map(|c| c.server()).unwrap_or_default();
    let mut rtts = Vec::new();
    for _ in 0..count.max(1) {
        let us = h.ping()?;
        println!("PONG from {server}: {}", fmt_us(us));
        rtts.push(us);
    }
    if rtts.len() > 1 {
        rtts.sort_unstable();
        println!("{} round trips: min {} / median {} / max {}", rtts.len(), fmt_us(rtts[0]), fmt_us(rtts[rtts.len() / 2]), fmt_us(rtts[rtts.len() - 1]));
    }
    Ok(())
}

fn fmt_us(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

/// `1536` -> `1.50 KiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

fn stats(conn: &ConnArgs, json: bool) -> AnyResult<()> {
    let h = Handle::open(&conn.options())?;
    let s = h.stats()?;
    let cfg = conn.settings().resolve()?;
    let model = cfg.namespace.model().to_string();
    let (mem_human, policy, version) = (cstr_field(&s.used_memory_human), cstr_field(&s.maxmemory_policy), cstr_field(&s.server_version));
    if json {
        let doc = StatsJson {
            server: cfg.server(),
            db: cfg.db,
            model: &model,
            model_keys: s.model_keys,
            db_keys: s.db_keys,
            used_memory_bytes: s.used_memory_bytes,
            used_memory_human: &mem_human,
            maxmemory_bytes: s.maxmemory_bytes,
            maxmemory_policy: &policy,
            evicted_keys: s.evicted_keys,
            keyspace_hits: s.keyspace_hits,
            keyspace_misses: s.keyspace_misses,
            keyspace_hit_ratio: s.keyspace_hit_ratio,
            connected_clients: s.connected_clients,
            server_version: &version,
            cluster_primaries: s.cluster_primaries,
            client: ClientStatsJson {
                get_hits: s.get_hits,
                get_misses: s.get_misses,
                get_hit_ratio: s.get_hit_ratio,
                exists_hits: s.exists_hits,
                exists_misses: s.exists_misses,
                exists_hit_ratio: s.exists_hit_ratio,
                pages_written: s.pages_written,
                bytes_written: s.bytes_written,
                pages_read: s.pages_read,
                bytes_read: s.bytes_read,
                errors: s.errors,
                reconnects: s.reconnects,
            },
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let maxmem = if s.maxmemory_bytes == 0 { "unlimited".to_string() } else { format!("{} ({})", s.maxmemory_bytes, human_bytes(s.maxmemory_bytes)) };
    let rows: Vec<(&str, String)> = vec![
        ("server", format!("{} (valkey {version})", cfg.server())),
        ("cluster", if s.cluster_primaries == 0 { "no (single server)".to_string() } else { format!("{} primaries (figures summed over them)", s.cluster_primaries) }),
        ("database", cfg.db.to_string()),
        ("model", model),
        ("model keys", s.model_keys.to_string()),
        ("db keys", s.db_keys.to_string()),
        ("memory used", format!("{} bytes ({mem_human})", s.used_memory_bytes)),
        ("maxmemory", maxmem),
        ("maxmemory policy", policy),
        ("evicted keys", s.evicted_keys.to_string()),
        ("keyspace hits", s.keyspace_hits.to_string()),
        ("keyspace misses", s.keyspace_misses.to_string()),
        ("keyspace hit ratio", format!("{:.1}%", 100.0 * s.keyspace_hit_ratio)),
        ("connected clients", s.connected_clients.to_string()),
        ("client (this process)", format!("{} pages written, {} read, {} errors", s.pages_written, s.pages_read, s.errors)),
    ];
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<w$}  {v}");
    }
    Ok(())
}

/// `stats --json`: the server's and this process's figures for the model.
#[derive(Serialize)]
struct StatsJson<'a> {
    server: String,
    db: u32,
    model: &'a str,
    model_keys: u64,
    db_keys: u64,
    used_memory_bytes: u64,
    used_memory_human: &'a str,
    maxmemory_bytes: u64,
    maxmemory_policy: &'a str,
    evicted_keys: u64,
    keyspace_hits: u64,
    keyspace_misses: u64,
    keyspace_hit_ratio: f64,
    connected_clients: u64,
    server_version: &'a str,
    cluster_primaries: u64,
    client: ClientStatsJson,
}

/// The `client` part of `stats --json`: this process's own calls.
#[derive(Serialize)]
struct ClientStatsJson {
    get_hits: u64,
    get_misses: u64,
    get_hit_ratio: f64,
    exists_hits: u64,
    exists_misses: u64,
    exists_hit_ratio: f64,
    pages_written: u64,
    bytes_written: u64,
    pages_read: u64,
    bytes_read: u64,
    errors: u64,
    reconnects: u64,
}
