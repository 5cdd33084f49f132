//! Throwaway valkey-servers for tests: a free loopback port, its own temp dir (with its log), no
//! persistence, killed when dropped (also when a test panics).
//!
//! A server is ready only when it answers as itself: `INFO server` on its port reports the
//! child's own `process_id`. Something else answering there (a parallel test's server that took
//! the port between the probe and the bind) is not taken for it: the child then fails to bind
//! and exits, and the server is started again on a new port, a bounded number of times. Any
//! other failure to start panics with the tail of the server's log.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How many ports a server is tried on before the test gives up.
pub const START_ATTEMPTS: usize = 5;
/// How long one attempt may take to answer as itself.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Server {
    pub port: u16,
    /// The valkey-server process id (what `INFO server` reports as `process_id`).
    pub pid: u32,
    /// Ports tried before `port` whose bind failed (taken by someone else), oldest first.
    pub rejected_ports: Vec<u16>,
    child: Child,
    dir: tempfile::TempDir,
}

/// Why one attempt to start a server failed.
#[derive(Debug)]
pub enum StartError {
    /// The port was not ours (bind failed, or another process answered there): try another.
    PortTaken(String),
    /// Anything else (a bad argument, a crash, no answer in time): retrying will not help.
    Failed(String),
}

/// What a probe of the port found.
enum Probe {
    /// Nothing answered (yet).
    Nothing,
    /// A server answered `INFO server` with this process id.
    Pid(u32),
    /// A server answered but wants (other) credentials than we have.
    NoAuth,
}

impl Server {
    /// Starts valkey-server with extra `args` (e.g. `["--requirepass", "pw"]`) on a free port.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with(std::iter::repeat_with(free_port), || args.iter().map(|a| a.to_string()).collect())
    }

    /// Starts valkey-server on the first of `ports` that it can bind and answer on as itself,
    /// at most [`START_ATTEMPTS`] of them; `args` gives the extra arguments of each attempt
    /// (called once per attempt, so e.g. a cluster bus port can be chosen afresh).
    pub fn start_with(ports: impl IntoIterator<Item = u16>, args: impl Fn() -> Vec<String>) -> Server {
        let mut rejected = Vec::new();
        let mut reasons = Vec::new();
        for port in ports.into_iter().take(START_ATTEMPTS) {
            match Self::try_start(port, &args()) {
                Ok(mut server) => {
                    server.rejected_ports = rejected;
                    return server;
                }
                Err(StartError::PortTaken(why)) => {
                    rejected.push(port);
                    reasons.push(why);
                }
                Err(StartError::Failed(why)) => panic!("{why}"),
            }
        }
        panic!("valkey-server could not get a port of its own in {} attempts:\n{}", rejected.len(), reasons.join("\n"))
    }

    /// Starts a cluster-enabled valkey-server (no slots assigned) with extra `args`; its cluster
    /// bus port is a fresh free port with every attempt.
    pub fn start_cluster_node(args: &[&str]) -> Server {
        let args = || {
            let mut a = ["--cluster-enabled", "yes", "--cluster-port", &free_port().to_string()].map(String::from).to_vec();
            a.extend(args.iter().map(|s| s.to_string()));
            a
        };
        Self::start_with(std::iter::repeat_with(free_port), args)
    }

    /// Starts valkey-server on exactly `port` (to bring a killed server back where its clients
    /// expect it). A port that is still taken is tried again for a few seconds, then the test
    /// fails with the server's log.
    pub fn start_on(port: u16, args: &[&str]) -> Server {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match Self::try_start(port, &args) {
                Ok(server) => return server,
                Err(StartError::PortTaken(why)) if Instant::now() >= deadline => panic!("{why}"),
                Err(StartError::PortTaken(_)) => std::thread::sleep(Duration::from_millis(200)),
                Err(StartError::Failed(why)) => panic!("{why}"),
            }
        }
    }

    /// One attempt: spawns valkey-server on `port` and waits (bounded) until it answers as itself.
    pub fn try_start(port: u16, args: &[String]) -> Result<Server, StartError> {
        let dir = tempfile::Builder::new().prefix("hicache-valkey-test-").tempdir().unwrap();
        let bin = std::env::var("VALKEY_SERVER").unwrap_or_else(|_| "valkey-server".into());
        // Errors before the log file is open (a bad argument) go to stderr: keep them too.
        let stderr = File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", dir.path().to_str().unwrap(), "--protected-mode", "no"])
            .args(["--logfile", dir.path().join("valkey.log").to_str().unwrap()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().unwrap())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} (run scripts/install-deps.sh): {e}"));
        let password = args.iter().position(|a| a == "--requirepass").and_then(|i| args.get(i + 1)).cloned();
        let mut server = Server { port, pid: child.id(), rejected_ports: Vec::new(), child, dir };
        let deadline = Instant::now() + START_TIMEOUT;
        let mut someone_else = None;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let tail = server.log_tail();
                let why = format!("valkey-server on port {port} exited ({status}) before it was ready; its log ends:\n{tail}");
                return Err(if bind_failed(&tail) { StartError::PortTaken(why) } else { StartError::Failed(why) });
            }
            match probe(port, password.as_deref()) {
                Probe::Pid(pid) if pid == server.pid => return Ok(server),
                Probe::Pid(pid) => someone_else = Some(pid),
                // Credentials we do not know (e.g. an ACL file): our own log saying it listens,
                // from a child that is still alive, proves the port is ours.
                Probe::NoAuth if server.log_tail().contains("Ready to accept connections") => return Ok(server),
                Probe::NoAuth | Probe::Nothing => {}
            }
            if Instant::now() >= deadline {
                server.kill();
                let tail = server.log_tail();
                return Err(match someone_else {
                    Some(pid) => StartError::PortTaken(format!(
                        "port {port} is answered by process {pid}, not by our valkey-server; its log ends:\n{tail}"
                    )),
                    None => StartError::Failed(format!(
                        "valkey-server on port {port} did not answer as itself within {START_TIMEOUT:?}; its log ends:\n{tail}"
                    )),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's temp dir (its `--dir`, holding `valkey.log` and `stderr.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of the server's log and of what it printed to stdout/stderr.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["stderr.log", "valkey.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(30)..] {
                out.push_str(&format!("  {name}: {line}\n"));
            }
        }
        out
    }

    /// Stops the server now (to test what clients do when it dies).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A redis-crate connection for checking what is stored.
    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
            .unwrap()
            .get_connection()
            .unwrap_or_else(|e| panic!("cannot connect to the test server on port {}: {e}\n{}", self.port, self.log_tail()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What valkey logs when it cannot listen on its port (or its cluster bus port).
fn bind_failed(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("Failed listening on port")
}

/// One RESP command.
fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n{a}\r\n", a.len()).into_bytes());
    }
    out
}

/// Asks whoever listens on `port` for `INFO server` (after `AUTH password` if given).
fn probe(port: u16, password: Option<&str>) -> Probe {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else { return Probe::Nothing };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let mut request = Vec::new();
    if let Some(pw) = password {
        request.extend(resp(&["AUTH", pw]));
    }
    request.extend(resp(&["INFO", "server"]));
    if stream.write_all(&request).is_err() {
        return Probe::Nothing;
    }
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if password.is_some() {
        if reader.read_line(&mut line).is_err() {
            return Probe::Nothing;
        }
        if !line.starts_with("+OK") {
            return Probe::NoAuth;
        }
        line.clear();
    }
    if reader.read_line(&mut line).is_err() {
        return Probe::Nothing;
    }
    if line.starts_with("-NOAUTH") || line.starts_with("-NOPERM") || line.starts_with("-WRONGPASS") {
        return Probe::NoAuth;
    }
    // "-LOADING ...", a half-open socket, anything but a bulk string: not ready yet.
    let Some(len) = line.strip_prefix('$').and_then(|n| n.trim_end().parse::<usize>().ok()) else { return Probe::Nothing };
    let mut body = vec![0u8; len];
    if reader.read_exact(&mut body).is_err() {
        return Probe::Nothing;
    }
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
        .map_or(Probe::Nothing, Probe::Pid)
}

/// A throwaway Valkey Cluster of `n` primaries (no replicas) on free loopback ports, each node with
/// its own temp dir and its own cluster bus port; every node is killed when dropped.
pub struct Cluster {
    pub nodes: Vec<Server>,
}

impl Cluster {
    pub fn start(n: usize) -> Cluster {
        Self::start_with_replicas(n, 0)
    }

    /// `primaries` primaries with `replicas` replicas each; nodes `0..primaries` are the primaries.
    pub fn start_with_replicas(primaries: usize, replicas: usize) -> Cluster {
        let mut nodes = Vec::new();
        for _ in 0..primaries * (1 + replicas) {
            nodes.push(Server::start_cluster_node(&["--cluster-node-timeout", "2000"]));
        }
        let mut create = Command::new("valkey-cli");
        create.arg("--cluster").arg("create");
        for s in &nodes {
            create.arg(format!("127.0.0.1:{}", s.port));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("valkey-cli (run scripts/install-deps.sh)");
        assert!(out.status.success(), "cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = Cluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        wait_cluster_ok(&cluster.nodes, "cluster");
        // Replicas sync in the background after the cluster is formed: wait (bounded) until every
        // primary has all its replicas online, so writes can be acknowledged by them.
        if replicas > 0 {
            for s in &cluster.nodes {
                loop {
                    let info: String = redis::cmd("INFO").arg("replication").query(&mut s.redis()).unwrap();
                    let online = info.lines().filter(|l| l.starts_with("slave") && l.contains("state=online")).count();
                    if info.contains("role:slave") || online == replicas {
                        break;
                    }
                    assert!(Instant::now() < deadline + Duration::from_secs(20), "replicas not online: {info}\n{}", s.log_tail());
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        cluster
    }

    /// The node id of node `i`.
    pub fn id(&self, i: usize) -> String {
        redis::cmd("CLUSTER").arg("MYID").query(&mut self.nodes[i].redis()).unwrap()
    }

    /// Keys stored on node `i`.
    pub fn dbsize(&self, i: usize) -> u64 {
        redis::cmd("DBSIZE").query(&mut self.nodes[i].redis()).unwrap()
    }
}

/// Waits (at most 20 s) until every node of a cluster just created reports `cluster_state:ok`;
/// `what` names the cluster in the failure message.
pub fn wait_cluster_ok(nodes: &[Server], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for s in nodes {
        loop {
            let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut s.redis()).unwrap();
            if info.contains("cluster_state:ok") {
                break;
            }
            assert!(Instant::now() < deadline, "{what} did not become ok: {info}\n{}", s.log_tail());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
