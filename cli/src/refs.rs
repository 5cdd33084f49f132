//! The bench's references (valkey-benchmark, the valkey-py peer script) and its probes (server
//! and client CPU time, this process's RSS).

use serde::Deserialize;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where the server is, as resolved by the library's own configuration rules.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub db: u32,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl Target {
    pub fn redis(&self) -> redis::RedisResult<redis::Connection> {
        let mut info = redis::RedisConnectionInfo::default().set_db(self.db.into());
        if let Some(u) = &self.username {
            info = info.set_username(u);
        }
        if let Some(p) = &self.password {
            info = info.set_password(p);
        }
        let ci = redis::IntoConnectionInfo::into_connection_info((self.host.clone(), self.port))?.set_redis_settings(info);
        let con = redis::Client::open(ci)?.get_connection_with_timeout(Duration::from_secs(5))?;
        con.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(con)
    }
}

/// Makes the child `cmd` starts get SIGTERM when the bench's thread that started it ends, even
/// when the bench is killed and no Drop runs: a valkey-server or valkey-benchmark of the bench
/// never outlives it (an orphaned valkey-benchmark whose server had gone was seen spinning on a
/// core). If the bench is already gone by the time the child runs, the child does not start.
pub fn die_with_bench(cmd: &mut Command) {
    let bench = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid) run between fork and exec, and the
    // error needs no allocation.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != bench {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Runs `cmd` with a time limit; returns its stdout, or why it failed.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<String, String> {
    let what = format!("{:?}", cmd.get_program());
    die_with_bench(cmd);
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| format!("cannot run {what}: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break st;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what} did not finish within {} s (killed)", limit.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("{what} failed ({status}): {}", err.trim()));
    }
    Ok(out)
}

/// One valkey-benchmark run.
#[derive(Clone, Debug)]
pub struct VbRun {
    pub test: &'static str,
    pub clients: u32,
    pub pipeline: u32,
    pub requests: u64,
    pub rps: f64,
    pub gbps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// valkey-server CPU time / wall time during the run.
    pub server_cpu: f64,
}

/// The environment variables a password is offered to valkey-benchmark in: valkey-cli's
/// (`VALKEYCLI_AUTH`) and the older name it also reads (`REDISCLI_AUTH`). valkey-benchmark 8.0
/// reads neither (only `-a`, which every local user sees in `ps`), so with 8.0 a server with a
/// password gets no valkey-benchmark reference: see [`valkey_benchmark_can_auth`].
const AUTH_ENV: [&str; 2] = ["VALKEYCLI_AUTH", "REDISCLI_AUTH"];

/// `valkey-benchmark` connecting to `t`: host, port and db (and username) on the command line;
/// the password, which must never be on a command line, only in the environment.
fn valkey_benchmark_cmd(t: &Target) -> Command {
    let mut cmd = Command::new("valkey-benchmark");
    cmd.args(["-h", &t.host, "-p", &t.port.to_string(), "--dbnum", &t.db.to_string()]);
    for var in AUTH_ENV {
        match &t.password {
            Some(p) => cmd.env(var, p),
            None => cmd.env_remove(var),
        };
    }
    if let (Some(u), Some(_)) = (&t.username, &t.password) {
        cmd.args(["--user", u]);
    }
    cmd
}

/// Whether valkey-benchmark can authenticate to `t` without `-a`: one PING; the reason if not.
pub fn valkey_benchmark_can_auth(t: &Target) -> Result<(), String> {
    let mut cmd = valkey_benchmark_cmd(t);
    cmd.args(["-t", "ping", "-n", "1", "-c", "1", "--csv"]);
    run_bounded(&mut cmd, Duration::from_secs(10)).map(drop).map_err(|e| {
        if e.contains("NOAUTH") || e.contains("WRONGPASS") {
            "it got NOAUTH".to_string()
        } else {
            e
        }
    })
}

/// The largest `-r` valkey-benchmark takes: it reads the number with `atoi`, and a larger one
/// overflows, after which every request goes to one key (`key:000000000000`). Measured: with
/// `-r 1000000000000`, 32768 SETs left a single key in the server, never evicting.
pub const MAX_KEYSPACE: u64 = i32::MAX as u64;

/// A keyspace for SETs on keys never written before: a figure's few hundred thousand random
/// keys out of two billion rarely meet one written earlier.
pub const FRESH_KEYSPACE: u64 = 2_000_000_000;
const _: () = assert!(FRESH_KEYSPACE <= MAX_KEYSPACE);

/// A different valkey-benchmark seed on each call (from the clock once, then counting up).
fn next_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: AtomicU64 = AtomicU64::new(0);
    let _ = SEED.compare_exchange(0, std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs() & 0xffff_ffff) | 1, Ordering::Relaxed, Ordering::Relaxed);
    SEED.fetch_add(1, Ordering::Relaxed) % (i32::MAX as u64)
}

/// `valkey-benchmark -t set|get -d size -c clients -P pipeline -n requests -r keyspace --csv`.
#[allow(clippy::too_many_arguments)]
pub fn valkey_benchmark(
    t: &Target,
    test: &'static str,
    size: usize,
    clients: u32,
    pipeline: u32,
    requests: u64,
    keyspace: u64,
    server_pid: Option<u32>,
) -> Result<VbRun, String> {
    valkey_benchmark_via(t, &[], test, size, clients, pipeline, requests, keyspace, server_pid)
}

/// [`valkey_benchmark`] with `via` added to its command line, for another transport than TCP:
/// `-s PATH` (a Unix socket), `-p TLS_PORT --tls --cacert CA` (TLS).
#[allow(clippy::too_many_arguments)]
pub fn valkey_benchmark_via(
    t: &Target,
    via: &[String],
    test: &'static str,
    size: usize,
    clients: u32,
    pipeline: u32,
    requests: u64,
    keyspace: u64,
    server_pid: Option<u32>,
) -> Result<VbRun, String> {
    if keyspace > MAX_KEYSPACE {
        return Err(format!("valkey-benchmark cannot take a keyspace of {keyspace} (-r is read as a C int; at most {MAX_KEYSPACE})"));
    }
    let mut cmd = valkey_benchmark_cmd(t);
    cmd.args(via);
    // A seed of its own for every run: valkey-benchmark seeds from the clock in seconds, so two
    // runs started within one second drew the same "random" keys (at 1-4 MiB, 10 % of the
    // SETs rewrote a key of the run before).
    cmd.args(["--seed", &next_seed().to_string()]);
    cmd.args(["-t", test, "-d", &size.to_string(), "-c", &clients.to_string(), "-P", &pipeline.to_string()]);
    cmd.args(["-n", &requests.to_string(), "-r", &keyspace.to_string(), "--csv"]);
    let cpu0 = server_pid.and_then(task_cpu_ns);
    let t0 = Instant::now();
    let out = run_bounded(&mut cmd, Duration::from_secs(120))?;
    let wall = t0.elapsed();
    let server_cpu = match (cpu0, server_pid.and_then(task_cpu_ns)) {
        (Some(a), Some(b)) => (b - a) as f64 / wall.as_nanos() as f64,
        _ => f64::NAN,
    };
    let name = test.to_uppercase();
    for line in out.lines() {
        let cols: Vec<&str> = line.split(',').map(|c| c.trim_matches('"')).collect();
        if cols.first() == Some(&name.as_str()) && cols.len() >= 7 {
            let num = |i: usize| cols[i].parse::<f64>().map_err(|_| format!("valkey-benchmark printed an unexpected line: {line}"));
            let rps = num(1)?;
            return Ok(VbRun {
                test,
                clients,
                pipeline,
                requests,
                rps,
                gbps: rps * size as f64 / 1e9,
                p50_ms: num(4)?,
                p99_ms: num(6)?,
                server_cpu,
            });
        }
    }
    Err(format!("valkey-benchmark printed no {name} line: {}", out.trim()))
}

/// Writes `key:%012d` for `0..keyspace` with `size`-byte values, as valkey-benchmark's GET reads.
pub fn prefill(t: &Target, size: usize, keyspace: u64) -> redis::RedisResult<()> {
    let mut con = t.redis()?;
    let value = vec![b'x'; size];
    let per_pipe = ((16usize << 20) / size).max(1) as u64;
    let mut i = 0;
    while i < keyspace {
        let mut p = redis::pipe();
        for k in i..(i + per_pipe).min(keyspace) {
            p.cmd("SET").arg(format!("key:{k:012}")).arg(&value[..]).ignore();
        }
        p.query::<()>(&mut con)?;
        i += per_pipe;
    }
    Ok(())
}

/// Removes what valkey-benchmark wrote (`key:%012d` for `0..keyspace`).
pub fn unlink_keyspace(t: &Target, keyspace: u64) -> redis::RedisResult<()> {
    let mut con = t.redis()?;
    let mut i = 0;
    while i < keyspace {
        let keys: Vec<String> = (i..(i + 1000).min(keyspace)).map(|k| format!("key:{k:012}")).collect();
        redis::cmd("UNLINK").arg(&keys).query::<()>(&mut con)?;
        i += 1000;
    }
    Ok(())
}

/// The valkey-py peer's figures for one page size: the JSON line `bench/peer_valkey_py.py` prints.
#[derive(Clone, Debug, Deserialize)]
pub struct Peer {
    #[serde(rename = "set_GBps")]
    pub set_gbps: f64,
    #[serde(rename = "get_GBps")]
    pub get_gbps: f64,
    pub exists_per_s: f64,
}

/// Runs the peer script against `t`: `PORT PAGES PAGE_BYTES REPEAT --host H --db N` on its command
/// line, the username and password (if any) in `VALKEY_USERNAME` / `VALKEY_PASSWORD`. With
/// `fresh` (`--fresh`), every round writes keys never written before and deletes nothing (the
/// steady-state server evicts); a page already evicted when read back is counted, not an error.
pub fn peer(python: &Path, script: &Path, t: &Target, pages: usize, size: usize, repeat: usize, fresh: bool) -> Result<Peer, String> {
    let mut cmd = Command::new(python);
    cmd.arg(script).args([t.port.to_string(), pages.to_string(), size.to_string(), repeat.to_string()]);
    cmd.args(["--host", &t.host, "--db", &t.db.to_string()]);
    if fresh {
        cmd.arg("--fresh");
    }
    for (var, value) in [("VALKEY_USERNAME", &t.username), ("VALKEY_PASSWORD", &t.password)] {
        match value {
            Some(v) => cmd.env(var, v),
            None => cmd.env_remove(var),
        };
    }
    let out = run_bounded(&mut cmd, Duration::from_secs(300))?;
    let line = out.lines().rev().find(|l| l.trim_start().starts_with('{')).ok_or_else(|| format!("peer printed no JSON: {out}"))?;
    serde_json::from_str(line).map_err(|e| format!("peer printed unexpected JSON ({e}): {line}"))
}

/// Whether `python` can import valkey and numpy.
pub fn python_has_peer_deps(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import valkey, numpy"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// CPU time (ns) of every thread of process `pid`, from /proc/PID/task/*/schedstat.
pub fn task_cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = entry.ok()?.path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(path) {
            total += s.split_whitespace().next()?.parse::<u64>().ok()?;
        }
    }
    Some(total)
}

/// CPU time (ns) of this process, all threads.
pub fn self_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `VmRSS` and `VmHWM` of this process, bytes.
pub fn rss() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets `VmHWM` to the current RSS (Linux: `echo 5 > /proc/self/clear_refs`); false if refused.
pub fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Busy CPU time of the whole machine (ns, all cores), from /proc/stat.
pub fn system_busy_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = s.lines().next()?.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    if f.len() < 8 {
        return None;
    }
    // user nice system idle iowait irq softirq steal
    let busy = f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(busy * 1_000_000_000 / hz)
}

/// CPU used on this machine by processes other than valkey-server and this one, over an interval.
pub struct Foreign {
    t0: Instant,
    busy0: Option<u64>,
    server0: Option<u64>,
    self0: u64,
    pid: Option<u32>,
}

impl Foreign {
    pub fn start(pid: Option<u32>) -> Foreign {
        Foreign { t0: Instant::now(), busy0: system_busy_ns(), server0: pid.and_then(task_cpu_ns), self0: self_cpu_ns(), pid }
    }

    /// Cores' worth of foreign CPU (0.25 = a quarter of a core) since `start`; NaN if unknown.
    pub fn cores(&self) -> f64 {
        let wall = self.t0.elapsed().as_nanos() as f64;
        match (self.busy0, system_busy_ns(), self.server0, self.pid.and_then(task_cpu_ns)) {
            (Some(b0), Some(b1), Some(s0), Some(s1)) => {
                let other = (b1 - b0) as f64 - (s1 - s0) as f64 - (self_cpu_ns() - self.self0) as f64;
                (other / wall).max(0.0)
            }
            _ => f64::NAN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyspace_valkey_benchmark_would_misread_is_refused_before_it_runs() {
        let t = Target { host: "127.0.0.1".into(), port: 1, db: 0, username: None, password: None };
        let err = valkey_benchmark(&t, "set", 16, 1, 1, 1, MAX_KEYSPACE + 1, None).unwrap_err();
        assert!(err.contains("C int"), "{err}");
    }
}
