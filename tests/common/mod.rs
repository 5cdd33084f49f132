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

fn free_port() -> u16 {
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
