//! `hicache-valkey`: operate and benchmark a Valkey used as an LLM engine's KV-cache tier.
//!
//! Every subcommand goes through the library's public C ABI (`hicache_valkey::ffi`), the same code
//! path a C or Python caller uses; see `cli/client.rs` for the safe wrapper.

#[path = "cli/bench.rs"]
mod bench;
#[path = "cli/client.rs"]
mod client;
#[path = "cli/plot.rs"]
mod plot;
#[path = "cli/refs.rs"]
mod refs;

use clap::{Args, Parser, Subcommand};
use client::{cstr_field, Handle, OpenOptions};
use std::process::ExitCode;

/// Valkey as the storage tier of an LLM inference engine's hierarchical KV cache.
///
/// Connection settings not given here come from the environment (VALKEY_URL, VALKEY_HOST,
/// VALKEY_PORT, VALKEY_DB, VALKEY_USERNAME, VALKEY_PASSWORD, HICACHE_VALKEY_MODEL), else the
/// defaults (localhost:6379, db 0, model "default").
#[derive(Parser, Debug)]
#[command(name = "hicache-valkey", version, propagate_version = true)]
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
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    hicache_valkey::init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hicache-valkey: error: {}", tidy(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// Drops `(os error N)` noise from messages meant for an operator.
fn tidy(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find(" (os error ") {
        out.push_str(&rest[..i]);
        match rest[i..].find(')') {
            Some(j) => rest = &rest[i + j + 1..],
            None => {
                rest = &rest[i..];
                break;
            }
        }
    }
    out.push_str(rest);
    // `cannot connect to h:p (h:p): ...` -> `cannot connect to h:p: ...` (address same as name)
    let words: Vec<&str> = out.split(' ').collect();
    let mut kept: Vec<String> = Vec::with_capacity(words.len());
    for w in words {
        if let (Some(prev), Some(inner)) = (kept.last(), w.strip_prefix('(')) {
            if let Some((addr, tail)) = inner.split_once(')') {
                if addr == prev.as_str() {
                    let joined = format!("{prev}{tail}");
                    *kept.last_mut().expect("non-empty") = joined;
                    continue;
                }
            }
        }
        kept.push(w.to_string());
    }
    kept.join(" ")
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
        let v = serde_json::json!({
            "server": cfg.server(),
            "db": cfg.db,
            "model": model,
            "model_keys": s.model_keys,
            "db_keys": s.db_keys,
            "used_memory_bytes": s.used_memory_bytes,
            "used_memory_human": mem_human,
            "maxmemory_bytes": s.maxmemory_bytes,
            "maxmemory_policy": policy,
            "evicted_keys": s.evicted_keys,
            "keyspace_hits": s.keyspace_hits,
            "keyspace_misses": s.keyspace_misses,
            "keyspace_hit_ratio": s.keyspace_hit_ratio,
            "connected_clients": s.connected_clients,
            "server_version": version,
            "client": {
                "get_hits": s.get_hits, "get_misses": s.get_misses, "get_hit_ratio": s.get_hit_ratio,
                "exists_hits": s.exists_hits, "exists_misses": s.exists_misses, "exists_hit_ratio": s.exists_hit_ratio,
                "pages_written": s.pages_written, "bytes_written": s.bytes_written,
                "pages_read": s.pages_read, "bytes_read": s.bytes_read,
                "errors": s.errors, "reconnects": s.reconnects,
            },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let maxmem = if s.maxmemory_bytes == 0 { "unlimited".to_string() } else { format!("{} ({})", s.maxmemory_bytes, human_bytes(s.maxmemory_bytes)) };
    let rows: Vec<(&str, String)> = vec![
        ("server", format!("{} (valkey {version})", cfg.server())),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// A throwaway loopback valkey-server, killed on drop.
    struct Server(Child, u16, #[allow(dead_code)] tempfile::TempDir);

    impl Server {
        fn start() -> Server {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let child = Command::new(std::env::var("VALKEY_SERVER").unwrap_or_else(|_| "valkey-server".into()))
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--dir", dir.path().to_str().unwrap(), "--protected-mode", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("valkey-server (run scripts/install-deps.sh)");
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "valkey-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            Server(child, port, dir)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("hicache-valkey").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn tidy_drops_os_error_and_repeated_address() {
        assert_eq!(
            tidy("cannot connect to 127.0.0.1:6390 (127.0.0.1:6390): Connection refused (os error 111) (is valkey-server running there?)"),
            "cannot connect to 127.0.0.1:6390: Connection refused (is valkey-server running there?)"
        );
        assert_eq!(tidy("cannot connect to localhost:1 (127.0.0.1:1): x"), "cannot connect to localhost:1 (127.0.0.1:1): x");
    }

    #[test]
    fn unreachable_server_is_a_clear_error() {
        let port = free_port().to_string();
        let e = run(cli(&["--host", "127.0.0.1", "--port", &port, "ping"])).unwrap_err().to_string();
        assert!(tidy(&e).contains(&format!("cannot connect to 127.0.0.1:{port}: Connection refused")), "{e}");
    }

    #[test]
    fn password_is_never_printed_in_errors() {
        let port = free_port().to_string();
        let e = run(cli(&["--url", &format!("valkey://u:hunter2@127.0.0.1:{port}"), "ping"])).unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn ping_stats_clear_and_quick_bench() {
        let server = Server::start();
        let port = server.1.to_string();
        let base = ["--host", "127.0.0.1", "--port", &port, "--model", "cli-test"];
        run(cli(&[&base[..], &["ping", "-c", "2"]].concat())).unwrap();
        run(cli(&[&base[..], &["stats"]].concat())).unwrap();
        run(cli(&[&base[..], &["stats", "--json"]].concat())).unwrap();
        run(cli(&[&base[..], &["clear"]].concat())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (json, png) = (dir.path().join("b.json"), dir.path().join("b.png"));
        let started = Instant::now();
        let mut args = vec!["bench", "--quick", "--json", json.to_str().unwrap(), "--plot", png.to_str().unwrap()];
        if std::env::var_os("HICACHE_VALKEY_PEER_PYTHON").is_none() {
            args.push("--no-peer");
        }
        run(cli(&[&base[..6], &args[..]].concat())).unwrap();
        assert!(started.elapsed() < Duration::from_secs(60), "quick bench took {:?}", started.elapsed());
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let sizes = doc["sizes"].as_array().unwrap();
        assert_eq!(sizes.len(), 2);
        for s in sizes {
            assert!(s["ours"]["set"]["best_GBps"].as_f64().unwrap() > 0.0, "{s}");
            assert!(s["ours"]["get"]["best_GBps"].as_f64().unwrap() > 0.0, "{s}");
        }
        assert!(doc["exists"]["best_keys_per_s"].as_f64().unwrap() > 0.0);
        assert!(doc["latency_4k_batch_of_1"]["get_p50_us"].as_f64().unwrap() > 0.0);
        let png = std::fs::read(&png).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // The bench cleans up after itself: no key of its model, nor of valkey-benchmark's, is left.
        let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap().get_connection().unwrap();
        let left: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
        assert_eq!(left, 0);
    }
}
