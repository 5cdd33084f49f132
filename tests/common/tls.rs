//! TLS for tests: a throwaway PKI generated at test time (rcgen; nothing is committed) and
//! valkey-servers / clusters that also listen with TLS.
//!
//! Included by tests/tls.rs only (`#[path]`), so other test crates (cli/tests too) need no
//! rcgen. Every server keeps its plaintext port too (the readiness probe and the redis-crate checks use
//! it); the tests talk to `tls_port`.

use crate::common::{free_port, wait_cluster_ok, Server};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::cell::Cell;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A CA and certificates signed by it, as PEM files in a temp dir:
/// - `ca.crt`: the CA to trust; `other-ca.crt`: a CA that signed nothing of the server's;
/// - `server.{crt,key}`: valid for localhost, 127.0.0.1 and ::1;
/// - `expired.{crt,key}`: the same names, expired in 2020;
/// - `wrongname.{crt,key}`: valid only for wrong.example;
/// - `rogue.{crt,key}`: valid names, signed by the other CA;
/// - `client.{crt,key}`: a client certificate for mutual TLS.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new().prefix("hicache-valkey-pki-").tempdir().unwrap();
        let ca = issuer("hicache-valkey test CA");
        let other = issuer("some other CA");
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("other-ca.crt"), other.pem()).unwrap();
        let names = || vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
        let leaf = |name: &str, sans: Vec<String>, signer: &CertifiedIssuer<'static, KeyPair>, expired: bool| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            if expired {
                params.not_before = rcgen::date_time_ymd(2019, 1, 1);
                params.not_after = rcgen::date_time_ymd(2020, 1, 1);
            }
            let cert = params.signed_by(&key, signer).unwrap();
            std::fs::write(dir.path().join(format!("{name}.crt")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        };
        leaf("server", names(), &ca, false);
        leaf("expired", names(), &ca, true);
        leaf("wrongname", vec!["wrong.example".to_string()], &ca, false);
        leaf("rogue", names(), &other, false);
        leaf("client", vec!["client.example".to_string()], &ca, false);
        Pki { dir }
    }

    /// The path of one of the files (`"ca.crt"`, `"client.key"`, ...).
    pub fn path(&self, file: &str) -> String {
        self.dir.path().join(file).to_str().unwrap().to_string()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// valkey-server arguments for a TLS port presenting certificate `cert` (`"server"`,
    /// `"expired"`, ...); `auth_clients`: whether clients must present a certificate.
    pub fn server_args(&self, tls_port: u16, cert: &str, auth_clients: bool) -> Vec<String> {
        let port = tls_port.to_string();
        let (crt, key, ca) = (self.path(&format!("{cert}.crt")), self.path(&format!("{cert}.key")), self.path("ca.crt"));
        let auth = if auth_clients { "yes" } else { "no" };
        ["--tls-port", &port, "--tls-cert-file", &crt, "--tls-key-file", &key, "--tls-ca-cert-file", &ca, "--tls-auth-clients", auth]
            .map(String::from)
            .to_vec()
    }
}

fn issuer(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A valkey-server with a TLS port (and its plaintext one).
pub struct TlsServer {
    pub server: Server,
    pub tls_port: u16,
}

impl TlsServer {
    /// Starts a server presenting `cert` on a free TLS port (`extra`: more arguments).
    pub fn start(pki: &Pki, cert: &str, auth_clients: bool, extra: &[&str]) -> TlsServer {
        let chosen = Cell::new(0);
        let server = Server::start_with(std::iter::repeat_with(free_port), || {
            let tls_port = free_port();
            chosen.set(tls_port);
            let mut args = pki.server_args(tls_port, cert, auth_clients);
            args.extend(extra.iter().map(|a| a.to_string()));
            args
        });
        let tls_port = chosen.get();
        wait_tls(tls_port, &server);
        TlsServer { server, tls_port }
    }

    /// Kills the server and starts it again on the same ports (a restart under TLS).
    pub fn restart(&mut self, pki: &Pki, cert: &str, auth_clients: bool) {
        self.server.kill();
        let port = self.server.port;
        let args = pki.server_args(self.tls_port, cert, auth_clients);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.server = Server::start_on(port, &args);
        wait_tls(self.tls_port, &self.server);
    }
}

/// Waits (bounded) until the TLS port accepts connections.
fn wait_tls(port: u16, server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "TLS port {port} does not listen:\n{}", server.log_tail());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A throwaway Valkey Cluster over TLS (`tls-cluster yes`: the bus and the slot map use the TLS
/// ports) of `n` primaries; nodes' TLS ports in `tls_ports`.
pub struct TlsCluster {
    pub nodes: Vec<Server>,
    pub tls_ports: Vec<u16>,
    ca: String,
}

impl TlsCluster {
    pub fn start(pki: &Pki, n: usize) -> TlsCluster {
        let mut nodes = Vec::new();
        let mut tls_ports = Vec::new();
        for _ in 0..n {
            let chosen = Cell::new(0);
            nodes.push(Server::start_with(std::iter::repeat_with(free_port), || {
                let tls_port = free_port();
                chosen.set(tls_port);
                let mut args = pki.server_args(tls_port, "server", false);
                let bus = free_port().to_string();
                args.extend(
                    ["--cluster-enabled", "yes", "--cluster-port", &bus, "--cluster-node-timeout", "2000", "--tls-cluster", "yes"].map(String::from),
                );
                args
            }));
            tls_ports.push(chosen.get());
            wait_tls(chosen.get(), nodes.last().unwrap());
        }
        let cluster = TlsCluster { nodes, tls_ports, ca: pki.path("ca.crt") };
        let mut create = cluster.cli();
        create.arg("--cluster").arg("create");
        for p in &cluster.tls_ports {
            create.arg(format!("127.0.0.1:{p}"));
        }
        let out = create.args(["--cluster-replicas", "0", "--cluster-yes"]).output().expect("valkey-cli (run scripts/install-deps.sh)");
        assert!(out.status.success(), "TLS cluster create failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        wait_cluster_ok(&cluster.nodes, "TLS cluster");
        cluster
    }

    /// valkey-cli speaking TLS with the test CA.
    pub fn cli(&self) -> Command {
        let mut cli = Command::new("valkey-cli");
        cli.args(["--tls", "--cacert", &self.ca]);
        cli
    }

    pub fn id(&self, i: usize) -> String {
        redis::cmd("CLUSTER").arg("MYID").query(&mut self.nodes[i].redis()).unwrap()
    }

    pub fn dbsize(&self, i: usize) -> u64 {
        redis::cmd("DBSIZE").query(&mut self.nodes[i].redis()).unwrap()
    }
}
