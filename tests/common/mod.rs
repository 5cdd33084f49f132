//! A throwaway valkey-server for tests: a free loopback port, its own temp dir, no persistence,
//! killed when dropped (also when a test panics).
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Server {
    /// Starts valkey-server with extra `args` (e.g. `["--requirepass", "pw"]`).
    pub fn start(args: &[&str]) -> Server {
        Self::start_on(free_port(), args)
    }

    /// Starts valkey-server on `port`.
    pub fn start_on(port: u16, args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let bin = std::env::var("VALKEY_SERVER").unwrap_or_else(|_| "valkey-server".into());
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", dir.path().to_str().unwrap(), "--protected-mode", "no"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} (run scripts/install-deps.sh): {e}"));
        let server = Server { port, child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "valkey-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Stops the server now (to test what clients do when it dies).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A redis-crate connection for checking what is stored.
    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).unwrap().get_connection().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
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
            let bus = free_port().to_string();
            nodes.push(Server::start(&["--cluster-enabled", "yes", "--cluster-port", &bus, "--cluster-node-timeout", "2000"]));
        }
        let mut create = Command::new("valkey-cli");
        create.arg("--cluster").arg("create");
        for s in &nodes {
            create.arg(format!("127.0.0.1:{}", s.port));
        }
        let out = create.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]).output().expect("valkey-cli (run scripts/install-deps.sh)");
        assert!(out.status.success(), "cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = Cluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        for s in &cluster.nodes {
            loop {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut s.redis()).unwrap();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster did not become ok: {info}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
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
                    assert!(Instant::now() < deadline + Duration::from_secs(20), "replicas not online: {info}");
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

pub mod fake;
