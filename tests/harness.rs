//! The test harness itself: a throwaway server counts as started only when it answers as itself,
//! a port someone else took is replaced by a new one (a bounded number of times), and a server
//! that cannot start fails with its log. For the Rust helpers (tests/common) and the shell
//! helpers (scripts/with-valkey.sh, scripts/with-valkey-cluster.sh).

mod common;

use common::{free_port, Server, StartError, START_ATTEMPTS};
use std::cell::Cell;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;

/// The process id `INFO server` on `server`'s port reports.
fn answering_pid(server: &Server) -> u32 {
    let info: String = redis::cmd("INFO").arg("server").query(&mut server.redis()).unwrap();
    info.lines().find_map(|l| l.strip_prefix("process_id:")).unwrap().trim().parse().unwrap()
}

#[test]
fn a_port_answered_by_another_server_is_not_taken_for_ours() {
    let other = Server::start(&[]);
    // What the old readiness check saw: something accepts connections on the port.
    assert!(TcpStream::connect(("127.0.0.1", other.port)).is_ok());
    match Server::try_start(other.port, &[]) {
        Err(StartError::PortTaken(why)) => assert!(why.contains("Address already in use"), "{why}"),
        Err(StartError::Failed(why)) => panic!("a taken port is worth another try, not a failure: {why}"),
        Ok(s) => panic!("port {} is served by process {}, yet a server of pid {} was called ready", s.port, other.pid, s.pid),
    }
    assert_eq!(answering_pid(&other), other.pid, "the other server is unharmed");
}

#[test]
fn start_moves_to_a_new_port_when_the_bind_fails() {
    let other = Server::start(&[]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let plain = listener.local_addr().unwrap().port();
    let ports = [other.port, plain].into_iter().chain(std::iter::repeat_with(free_port));
    let server = Server::start_with(ports, Vec::new);
    assert_eq!(server.rejected_ports, [other.port, plain]);
    assert!(server.port != other.port && server.port != plain);
    assert_eq!(answering_pid(&server), server.pid);
    assert_ne!(server.pid, other.pid);
}

#[test]
fn a_taken_cluster_bus_port_is_replaced_too() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let bus = taken.local_addr().unwrap().port();
    let attempt = Cell::new(0);
    let args = || {
        attempt.set(attempt.get() + 1);
        let bus = if attempt.get() == 1 { bus } else { free_port() };
        ["--cluster-enabled", "yes", "--cluster-port", &bus.to_string()].map(String::from).to_vec()
    };
    let server = Server::start_with(std::iter::repeat_with(free_port), args);
    assert_eq!((server.rejected_ports.len(), attempt.get()), (1, 2));
    assert_eq!(answering_pid(&server), server.pid);
}

#[test]
fn the_number_of_attempts_is_bounded() {
    let other = Server::start(&[]);
    let started = std::panic::catch_unwind(|| Server::start_with(std::iter::repeat(other.port), Vec::new));
    let why = *started.err().expect("no server can start on a taken port").downcast::<String>().unwrap();
    assert!(why.contains(&format!("in {START_ATTEMPTS} attempts")) && why.contains("Address already in use"), "{why}");
}

#[test]
fn a_server_that_cannot_start_fails_with_its_log() {
    match Server::try_start(free_port(), &["--no-such-directive".into(), "1".into()]) {
        Err(StartError::Failed(why)) => assert!(why.contains("Bad directive"), "{why}"),
        Err(StartError::PortTaken(why)) => panic!("a bad argument is not a taken port: {why}"),
        Ok(_) => panic!("valkey-server accepted a bad argument"),
    }
}

#[test]
fn a_server_with_a_password_is_recognised() {
    let server = Server::start(&["--requirepass", "s3cret"]);
    assert!(server.rejected_ports.is_empty());
    assert!(server.log_tail().contains("Ready to accept connections"), "{}", server.log_tail());
}

fn script(name: &str) -> Command {
    let mut cmd = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name));
    cmd.env_remove("WITH_VALKEY_PORTS");
    cmd
}

#[test]
fn with_valkey_sh_moves_to_a_new_port_when_the_bind_fails() {
    let other = Server::start(&[]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let plain = listener.local_addr().unwrap().port();
    let check = r#"valkey-cli -p "$VALKEY_PORT" INFO server | tr -d '\r' | sed -n 's/^process_id://p'; echo "$VALKEY_PORT""#;
    let out = script("with-valkey.sh")
        .env("WITH_VALKEY_PORTS", format!("{} {plain}", other.port))
        .args(["--", "sh", "-c", check])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let [pid, port]: [u32; 2] = stdout.split_whitespace().map(|w| w.parse().unwrap()).collect::<Vec<_>>().try_into().unwrap();
    assert!(port != u32::from(other.port) && port != u32::from(plain), "{stdout}");
    assert_ne!(pid, other.pid);
    assert_eq!(stderr.matches("could not listen").count(), 2, "{stderr}");
}

#[test]
fn with_valkey_sh_does_not_run_the_command_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let out = script("with-valkey.sh")
        .args(["--no-such-directive", "1", "--", "touch"])
        .arg(&marker)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!marker.exists(), "the command ran without a server");
    assert!(stderr.contains("Bad directive") && stderr.contains("not running"), "{stderr}");
}

#[test]
fn with_valkey_cluster_sh_replaces_a_taken_port_and_waits_for_the_cluster() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let check = r#"for p in $VALKEY_CLUSTER_PORTS; do valkey-cli -p "$p" CLUSTER INFO | grep -c cluster_state:ok; done"#;
    let out = script("with-valkey-cluster.sh")
        .env("WITH_VALKEY_PORTS", port.to_string())
        .args(["-n", "3", "--", "sh", "-c", check])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>(), ["1", "1", "1"]);
    assert!(stderr.contains(&format!("port {port} (attempt 1) could not listen")), "{stderr}");
}
