//! The `hicache-valkey` CLI as an operator runs it, against real valkey-servers.

// The library's test helpers (throwaway servers), shared rather than copied: one copy to fix.
#[path = "../../tests/common/mod.rs"]
mod common;

use common::{free_port, Server};
use std::path::{Path, PathBuf};
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
fn socket_and_tls_flags_reach_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("v.sock");
    let server = Server::start(&["--unixsocket", sock.to_str().unwrap()]);
    let out = cli(&["--socket", sock.to_str().unwrap(), "ping"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("PONG from unix:{}", sock.display())), "{}", text(&out.stdout));
    // --tls against this plaintext port: the TLS error, fast, one line.
    let port = server.port.to_string();
    let started = Instant::now();
    let out = cli(&["--host", "127.0.0.1", "--port", &port, "--tls", "--tls-ca-cert", "/nonexistent/ca.pem", "ping"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/ca.pem"), "{}", text(&out.stderr));
    let out = cli(&["--host", "127.0.0.1", "--port", &port, "--tls", "--tls-server-name", "localhost", "ping"], &[("HICACHE_VALKEY_CONNECT_TIMEOUT_MS", "5000")]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("not a TLS port") || err.contains("trust store"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
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
    let (json, svg) = (dir.path().join("b.json"), dir.path().join("b.svg"));
    let started = Instant::now();
    let mut args = vec!["bench", "--quick", "--json", json.to_str().unwrap(), "--plot", svg.to_str().unwrap()];
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
    // The steady-state reference writes fresh keys: nearly every valkey-benchmark SET made one
    // (with a keyspace valkey-benchmark misread, all of them went to a single key).
    let steady = doc["deployment"]["steady"].as_array().unwrap();
    assert!(!steady.is_empty());
    for row in steady {
        let (made, sets) = (row["vb_set_new_keys"].as_u64().unwrap(), row["vb_set_requests"].as_u64().unwrap());
        assert!(sets > 0 && made * 10 >= sets * 9, "{made} of {sets} SETs made a new key: {row}");
    }
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"), "{chart:.200}");
    for text in ["batch_set", "batch_get", "hicache-valkey (C ABI)", "64K", "1M", "GB/s"] {
        assert!(chart.contains(text), "the chart has no text {text:?}");
    }
    // The report reads back, and --replot draws the same chart from it without a server.
    let again = dir.path().join("again.svg");
    let out = cli(&["bench", "--replot", json.to_str().unwrap(), "--plot", again.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&again).unwrap(), chart);
    // The bench cleans up after itself: no key of its model, nor of valkey-benchmark's, is left.
    let left: u64 = redis::cmd("DBSIZE").query(&mut server.redis()).unwrap();
    assert_eq!(left, 0);
}

/// A stand-in for `program` first on PATH (or at `path`): records its argv, one argument per line,
/// and the auth variables of its environment into `log`, then runs the real one.
fn shim(path: &Path, real: &Path, log: &Path) {
    let script = format!(
        "#!/bin/sh\n{{ echo \"== argv\"; for a in \"$@\"; do printf '%s\\n' \"$a\"; done; \
         echo \"== env VALKEYCLI_AUTH=${{VALKEYCLI_AUTH:-}} REDISCLI_AUTH=${{REDISCLI_AUTH:-}} VALKEY_PASSWORD=${{VALKEY_PASSWORD:-}}\"; }} >> '{}'\n\
         exec '{}' \"$@\"\n",
        log.display(),
        real.display()
    );
    std::fs::write(path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn which(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file()).unwrap_or_else(|| panic!("{program} is not on PATH"))
}

/// issue 8: the bench never puts the server's password on a child's command line (visible to
/// every local user in `ps` and /proc/PID/cmdline). valkey-benchmark (and the valkey-py peer,
/// when a python for it is configured) run through shims that record their argv.
#[test]
fn bench_keeps_the_password_off_its_children_s_command_lines() {
    const PASSWORD: &str = "s3cret-Pw-for-the-bench";
    let server = Server::start(&["--requirepass", PASSWORD]);
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("argv.log");
    shim(&bin.join("valkey-benchmark"), &which("valkey-benchmark"), &log);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let (json, svg) = (dir.path().join("b.json"), dir.path().join("b.svg"));
    let port = server.port.to_string();
    let mut args = vec!["--host", "127.0.0.1", "--port", &port, "bench", "--quick", "--sizes", "64K", "--min-mib", "2", "--reps", "1"];
    args.extend(["--latency-samples", "20", "--no-checksum-cost", "--json", json.to_str().unwrap(), "--plot", svg.to_str().unwrap()]);
    let peer_shim = bin.join("peer-python");
    let peer = std::env::var_os("HICACHE_VALKEY_PEER_PYTHON").map(PathBuf::from);
    if let Some(real) = &peer {
        shim(&peer_shim, real, &log);
        args.extend(["--peer-python", peer_shim.to_str().unwrap()]);
    } else {
        args.push("--no-peer");
    }
    let out = cli(&args, &[("VALKEY_PASSWORD", PASSWORD), ("PATH", &path)]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let recorded = std::fs::read_to_string(&log).expect("valkey-benchmark was run through the shim");
    let runs: Vec<&str> = recorded.split("== argv\n").filter(|r| !r.is_empty()).collect();
    let authenticating: Vec<&&str> = runs.iter().filter(|r| r.contains(&format!("\n{port}\n"))).collect();
    assert!(!authenticating.is_empty(), "no child connected to the server: {recorded}");
    for run in &runs {
        let (argv, env) = run.split_once("== env ").unwrap();
        assert!(!argv.contains(PASSWORD), "a child got the password on its command line:\n{argv}");
        assert!(!argv.lines().any(|a| a == "-a" || a.starts_with("-u")), "{argv}");
        if argv.contains(&format!("\n{port}\n")) {
            // Given another way: in the environment, readable only by this user.
            assert!(env.contains(PASSWORD), "a child that connects was not given the password: {env}");
        }
    }
    let all = text(&out.stdout) + &text(&out.stderr) + &std::fs::read_to_string(&json).unwrap();
    assert!(!all.contains(PASSWORD), "the password was printed or saved");
    // valkey-benchmark 8.0 reads no password from its environment: then its reference is skipped,
    // and the report says why; a valkey-benchmark that does authenticate gives its figures.
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let vb = &doc["sizes"][0]["valkey_benchmark"];
    let skipped = doc["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("valkey-benchmark reference skipped"));
    assert!(skipped != vb.is_object(), "either figures or a note: {doc}");
    if peer.is_some() {
        assert!(doc["sizes"][0]["valkey_py"]["get_GBps"].as_f64().unwrap() > 0.0, "the peer authenticated: {doc}");
    }
    let left: u64 = redis::cmd("DBSIZE").query(&mut redis_with_password(server.port, PASSWORD)).unwrap();
    assert_eq!(left, 0, "the bench left keys behind");
}

fn redis_with_password(port: u16, password: &str) -> redis::Connection {
    redis::Client::open(format!("redis://:{password}@127.0.0.1:{port}")).unwrap().get_connection().unwrap()
}

/// The children of process `pid` (all its threads), with their command names.
fn children(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for c in list.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
            let comm = std::fs::read_to_string(format!("/proc/{c}/comm")).unwrap_or_default();
            out.push((c, comm.trim().to_string()));
        }
    }
    out
}

/// Whether `pid` still runs (a zombie waiting for its reaper does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

/// Waits until `pid` has ended (a zombie counts as ended), at most 10 s; kills it if not.
fn ended(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let alive = running(pid);
    if alive {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    !alive
}

/// Waits (at most 60 s) for a child of `parent` named `comm` whose command line has `arg`.
fn child_named(parent: &mut std::process::Child, comm: &str, arg: &[u8]) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = children(parent.id()).into_iter().find(|(pid, c)| {
            // /proc's comm holds the first 15 bytes of the name
            c.as_str() == &comm[..comm.len().min(15)] && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|l| l.windows(arg.len()).any(|w| w == arg))
        });
        if let Some((pid, _)) = found {
            return pid;
        }
        assert!(parent.try_wait().unwrap().is_none(), "the bench ended before it started {comm}");
        assert!(Instant::now() < deadline, "no {comm} started by the bench within 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts the bench with `args` and `env`, waits for its child `comm` (one whose command line has
/// `marker`), kills the bench outright (no Drop runs) and checks that the child ends too.
fn a_killed_bench_leaves_no(comm: &str, marker: &[u8], args: &[&str], env: &[(&str, &std::ffi::OsStr)]) {
    let mut bench = Command::new(env!("CARGO_BIN_EXE_hicache-valkey"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let child = child_named(&mut bench, comm, marker);
    bench.kill().unwrap();
    bench.wait().unwrap();
    assert!(ended(child), "{comm} {child} outlived the killed bench");
}

/// `bench --transports` starts a valkey-server of its own, which must not outlive the bench.
#[test]
fn a_killed_transports_bench_takes_its_server_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    // TMPDIR: the server's directory, left behind by a killed bench, goes with the test's.
    a_killed_bench_leaves_no("valkey-server", b"--tls-port", &["bench", "--transports", "--min-mib", "32", "--reps", "1"], &[("TMPDIR", tmp.path().as_os_str())]);
}

/// Nor a valkey-benchmark run (here a stand-in that sleeps for a minute) against a server that
/// stays up.
#[test]
fn a_killed_bench_takes_its_valkey_benchmark_with_it() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let real = which("valkey-benchmark");
    let script = format!("#!/bin/sh\ncase \"$*\" in *--csv*) exec sleep 61 ;; esac\nexec '{}' \"$@\"\n", real.display());
    std::fs::write(bin.join("valkey-benchmark"), script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("valkey-benchmark"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let port = server.port.to_string();
    let (json, svg) = (dir.path().join("b.json"), dir.path().join("b.svg"));
    let mut args = vec!["--host", "127.0.0.1", "--port", &port, "bench", "--quick", "--sizes", "64K", "--min-mib", "2", "--reps", "1", "--no-peer"];
    args.extend(["--no-steady", "--no-checksum-cost", "--latency-samples", "20", "--json", json.to_str().unwrap(), "--plot", svg.to_str().unwrap()]);
    a_killed_bench_leaves_no("sleep", b"61", &args, &[("PATH", path.as_ref())]);
}
