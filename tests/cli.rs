//! The `hicache-valkey` CLI as an operator runs it, against real valkey-servers.

mod common;

use common::{free_port, Server};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hicache-valkey"));
    cmd.args(args);
    for var in ["VALKEY_URL", "VALKEY_HOST", "VALKEY_PORT", "VALKEY_DB", "VALKEY_PASSWORD", "VALKEY_USERNAME", "HICACHE_VALKEY_LOG"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied()).output().expect("run hicache-valkey")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn unreachable_server_is_one_clear_line() {
    let port = free_port().to_string();
    let out = cli(&["--host", "127.0.0.1", "--port", &port, "ping"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim_end(),
        format!("hicache-valkey: error: cannot connect to 127.0.0.1:{port}: connection refused (is valkey-server running there?)")
    );
}

#[test]
fn the_password_is_never_printed_not_even_in_trace_logs() {
    let server = Server::start(&["--requirepass", "hunter2"]);
    let port = server.port.to_string();
    let trace = [("HICACHE_VALKEY_LOG", "trace")];
    let ok = cli(&["--url", &format!("valkey://default:hunter2@127.0.0.1:{port}"), "ping"], &trace);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stderr).contains("connected"), "logging is on: {}", text(&ok.stderr));
    let wrong = cli(&["--host", "127.0.0.1", "--port", &port, "ping"], &[("VALKEY_PASSWORD", "hunter3"), trace[0]]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(text(&wrong.stderr).contains("WRONGPASS"), "{}", text(&wrong.stderr));
    for out in [&ok, &wrong] {
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(!all.contains("hunter2") && !all.contains("hunter3"), "password printed: {all}");
    }
    // Off by default.
    let quiet = cli(&["--url", &format!("valkey://default:hunter2@127.0.0.1:{port}"), "ping"], &[]);
    assert!(text(&quiet.stderr).is_empty(), "{}", text(&quiet.stderr));
}

#[test]
fn ping_stats_clear_and_a_quick_bench() {
    let server = Server::start(&[]);
    let port = server.port.to_string();
    let base = ["--host", "127.0.0.1", "--port", &port, "--model", "cli-test"];
    let run = |extra: &[&str]| {
        let out = cli(&[&base[..], extra].concat(), &[]);
        assert!(out.status.success(), "{extra:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    assert!(run(&["ping", "-c", "2"]).contains("2 round trips"));
    let _: () = redis::cmd("SET").arg("hicache:cli-test:t0of1:k").arg("v").query(&mut server.redis()).unwrap();
    let stats = run(&["stats"]);
    assert!(stats.contains("model keys") && stats.contains("valkey 8"), "{stats}");
    let json: serde_json::Value = serde_json::from_str(&run(&["stats", "--json"])).unwrap();
    assert_eq!(json["model_keys"], 1);
    assert!(run(&["clear"]).contains("deleted 1 keys of model 'cli-test'"));

    let dir = tempfile::tempdir().unwrap();
    let (json, png) = (dir.path().join("b.json"), dir.path().join("b.png"));
    let started = Instant::now();
    let mut args = vec!["bench", "--quick", "--json", json.to_str().unwrap(), "--plot", png.to_str().unwrap()];
    if std::env::var_os("HICACHE_VALKEY_PEER_PYTHON").is_none() {
        args.push("--no-peer");
    }
    let out = cli(&[&base[..4], &args[..]].concat(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(90), "quick bench took {:?}", started.elapsed());
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let sizes = doc["sizes"].as_array().unwrap();
    assert_eq!(sizes.len(), 2);
    for s in sizes {
        assert!(s["ours"]["set"]["best_GBps"].as_f64().unwrap() > 0.0, "{s}");
        assert!(s["ours"]["get"]["best_GBps"].as_f64().unwrap() > 0.0, "{s}");
    }
    assert!(doc["exists"]["best_keys_per_s"].as_f64().unwrap() > 0.0);
    assert!(doc["latency_4k_batch_of_1"]["get_p50_us"].as_f64().unwrap() > 0.0);
    assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
    // The bench cleans up after itself: no key of its model, nor of valkey-benchmark's, is left.
    let left: u64 = redis::cmd("DBSIZE").query(&mut server.redis()).unwrap();
    assert_eq!(left, 0);
}
