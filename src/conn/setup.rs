//! Making a connection: the TCP or Unix socket, the TLS handshake (with a fast answer when the
//! port speaks the other protocol), and the Valkey handshake (AUTH, SELECT, CLIENT SETNAME, PING,
//! CONFIG GET proto-max-bulk-len).

use super::*;

impl Conn {
    /// Connects to `endpoint` and runs the handshake (`AUTH`, `SELECT`, `CLIENT SETNAME`, `PING`,
    /// `CONFIG GET proto-max-bulk-len`) with `cfg`'s credentials, all by `deadline`.
    pub fn connect(cfg: &Config, endpoint: &Endpoint, deadline: Instant) -> Result<Conn> {
        let server = endpoint.name();
        let tls = match (&cfg.tls, endpoint) {
            (Some(t), Endpoint::Tcp { host, .. }) => Some(Box::new(TlsStream::new(t, host)?)),
            (Some(_), Endpoint::Unix(_)) => return Err(Error::invalid_config("TLS over a Unix domain socket is not supported")),
            (None, Endpoint::Tcp { host, .. }) => {
                if cfg.password.is_some() {
                    warn_plaintext_password(host);
                }
                None
            }
            (None, Endpoint::Unix(_)) => None,
        };
        let sock = Socket::connect(endpoint, deadline, &server)?;
        let mut conn = Conn::new(sock, tls, server, deadline);
        let timeout = |e: Error| match e.kind() {
            ErrorKind::Timeout => Error::new(ErrorKind::Timeout, format!("{} (connect timeout {} ms)", e.message(), cfg.connect_timeout.as_millis())),
            _ => e,
        };
        if conn.tls.is_some() {
            conn.tls_handshake(endpoint).map_err(timeout)?;
        }
        conn.handshake(cfg).map_err(|e| conn.explain_handshake_error(e, endpoint, deadline)).map_err(timeout)?;
        conn.deadline = None;
        Ok(conn)
    }

    /// Runs the TLS handshake by the connect deadline. A plaintext server answers a ClientHello
    /// with a RESP error (or not at all: then the deadline ends it, with a hint).
    ///
    /// A plaintext valkey waits for a newline that a ClientHello may not contain, so when the
    /// first answer is slow in coming, a second connection asks the port `PING` in plaintext: a
    /// RESP answer proves it is a plaintext port, and the handshake fails at once.
    fn tls_handshake(&mut self, endpoint: &Endpoint) -> Result<()> {
        let mut first = true;
        let mut probed = false;
        loop {
            self.flush_tls().map_err(|e| self.handshake_closed(e))?;
            let tls = self.tls.as_mut().expect("TLS is on");
            if !tls.conn.is_handshaking() {
                let (version, suite) = (tls.conn.protocol_version(), tls.conn.negotiated_cipher_suite().map(|s| s.suite()));
                tracing::debug!(server = %self.server, ?version, ?suite, "TLS handshake done");
                return Ok(());
            }
            if tls.pos == tls.end {
                let mut cipher = std::mem::take(&mut tls.cipher);
                let deadline = self.deadline;
                if first && !probed {
                    self.deadline = deadline.map(|d| d.min(Instant::now() + PROBE_AFTER));
                }
                let got = self.recv(&mut cipher);
                self.deadline = deadline;
                let tls = self.tls.as_mut().expect("TLS is on");
                tls.cipher = cipher;
                let n = match got {
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Timeout && first && !probed => {
                        probed = true;
                        if let Some(answer) = probe(endpoint, &self.server, deadline, b"PING\r\n", tls::looks_like_resp) {
                            return Err(Error::new(
                                ErrorKind::Tls,
                                format!("TLS: {} did not answer the TLS handshake but answers plaintext ({answer:?}): this is not a TLS port (use valkey:// or turn VALKEY_TLS off)", self.server),
                            ));
                        }
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::Timeout => {
                        return Err(Error::new(
                            ErrorKind::Tls,
                            format!("TLS: {} did not answer the TLS handshake in time (is this a plaintext port? use valkey:// or turn VALKEY_TLS off)", self.server),
                        ))
                    }
                    Err(e) => return Err(self.handshake_closed(e)),
                };
                if first && tls::looks_like_resp(&tls.cipher[..n]) {
                    let answer = String::from_utf8_lossy(&tls.cipher[..n.min(80)]).trim_end().to_string();
                    return Err(Error::new(
                        ErrorKind::Tls,
                        format!("TLS: {} answered the TLS handshake in plaintext ({answer:?}): this is not a TLS port (use valkey:// or turn VALKEY_TLS off)", self.server),
                    ));
                }
                first = false;
                (tls.pos, tls.end) = (0, n);
            }
            self.feed_tls()?;
        }
    }

    /// A lost connection during the TLS handshake, explained.
    fn handshake_closed(&self, e: Error) -> Error {
        if e.kind() != ErrorKind::Connection {
            return e;
        }
        Error::new(
            ErrorKind::Tls,
            format!("TLS: {} closed the connection during the TLS handshake (a plaintext port? one that wants a client certificate?)", self.server),
        )
    }

    /// A plaintext handshake that failed the way a TLS port fails it, explained.
    /// A server that closes without a word is asked, on a new connection, whether it speaks TLS.
    fn explain_handshake_error(&self, e: Error, endpoint: &Endpoint, deadline: Instant) -> Error {
        if self.tls.is_some() || !matches!(e.kind(), ErrorKind::Connection | ErrorKind::Protocol) {
            return e;
        }
        if tls::looks_like_tls(&self.buf[..self.end]) {
            return Error::new(
                ErrorKind::Tls,
                format!("{} answered with TLS: this is a TLS port (use valkeys:// or VALKEY_TLS=1)", self.server),
            );
        }
        if self.end == 0 && e.kind() == ErrorKind::Connection && !self.server.starts_with("unix:") {
            if let Some(hello) = tls::probe_hello() {
                if probe(endpoint, &self.server, Some(deadline), &hello, tls::looks_like_tls).is_some() {
                    return Error::new(
                        ErrorKind::Tls,
                        format!("{} closed the plaintext connection and answers a TLS handshake: this is a TLS port (use valkeys:// or VALKEY_TLS=1)", self.server),
                    );
                }
            }
            return Error::new(
                ErrorKind::Connection,
                format!("{} (it closed before answering anything: is this a TLS port? use valkeys:// or VALKEY_TLS=1)", e.message()),
            );
        }
        e
    }

    fn handshake(&mut self, cfg: &Config) -> Result<()> {
        // (command, what its error means); all pipelined in one write.
        #[derive(PartialEq)]
        enum Step {
            Auth,
            Select,
            /// Optional: an ACL without `client|setname` / `config|get` still works.
            Optional,
            Ping,
            MaxBulk,
        }
        let mut cmds = Vec::new();
        let mut steps = Vec::new();
        if let Some(password) = &cfg.password {
            match &cfg.username {
                Some(user) => push_command(&mut cmds, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => push_command(&mut cmds, &[b"AUTH", password.as_bytes()]),
            }
            steps.push(Step::Auth);
        }
        if cfg.db != 0 {
            push_command(&mut cmds, &[b"SELECT", cfg.db.to_string().as_bytes()]);
            steps.push(Step::Select);
        }
        push_command(&mut cmds, &[b"CLIENT", b"SETNAME", b"hicache-valkey"]);
        steps.push(Step::Optional);
        push_command(&mut cmds, &[b"PING"]);
        steps.push(Step::Ping);
        push_command(&mut cmds, &[b"CONFIG", b"GET", b"proto-max-bulk-len"]);
        steps.push(Step::MaxBulk);
        self.write_all(&mut [IoSlice::new(&cmds)])?;
        let mut first_err = None;
        for step in steps {
            let reply = self.read_value()?;
            match (step, reply) {
                (Step::Optional | Step::MaxBulk, Value::Error(e)) => tracing::debug!(server = %self.server, error = %e, "optional handshake command refused"),
                (Step::MaxBulk, Value::Array(pair)) => {
                    if let Some(n) = pair.get(1).and_then(Value::int).filter(|n| *n > 0) {
                        self.max_bulk = n as u64;
                    }
                }
                (Step::Select, Value::Error(e)) if first_err.is_none() => {
                    first_err = Some(Error::invalid_config(format!("db {} rejected by {}: {e}", cfg.db, self.server)));
                }
                (_, Value::Error(e)) if first_err.is_none() => first_err = Some(Error::from_server_reply(&e, &self.server)),
                _ => {}
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Warns (once per host and process) that a password goes over plaintext TCP to a host that is
/// not this machine.
fn warn_plaintext_password(host: &str) {
    static WARNED: parking_lot::Mutex<Vec<String>> = parking_lot::Mutex::new(Vec::new());
    if is_loopback(host) {
        return;
    }
    let mut warned = WARNED.lock();
    if !warned.iter().any(|h| h == host) && warned.len() < 64 {
        warned.push(host.to_string());
        tracing::warn!(host, "the password goes to {host} over plaintext TCP: anyone on the path can read it (use TLS: valkeys:// or VALKEY_TLS=1)");
    }
}

/// Whether `host` names this machine (`localhost`, 127.0.0.0/8, ::1).
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// How long a TLS handshake waits for its first answer before probing for a plaintext port.
const PROBE_AFTER: Duration = Duration::from_millis(200);

/// Sends `hello` to `endpoint` on a new connection (bounded by a fraction of a second and by
/// `deadline`); the start of the answer when `expected` says it is what we looked for.
fn probe(endpoint: &Endpoint, server: &str, deadline: Option<Instant>, hello: &[u8], expected: fn(&[u8]) -> bool) -> Option<String> {
    let limit = Instant::now() + Duration::from_millis(500);
    let deadline = deadline.map_or(limit, |d| d.min(limit));
    let sock = Socket::connect(endpoint, deadline, server).ok()?;
    let mut ping: &[u8] = hello;
    while !ping.is_empty() {
        match sock.send(&[IoSlice::new(ping)]) {
            Ok(n) => ping = &ping[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                sock.wait(Ready::Write, Some(deadline)).ok().filter(|ready| *ready)?;
            }
            Err(_) => return None,
        }
    }
    let mut answer = [0u8; 64];
    loop {
        match sock.recv(&mut answer, false) {
            Ok(0) => return None,
            Ok(n) if expected(&answer[..n]) => return Some(String::from_utf8_lossy(&answer[..n.min(40)]).trim_end().to_string()),
            Ok(_) => return None,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                sock.wait(Ready::Read, Some(deadline)).ok().filter(|ready| *ready)?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_are_spared_the_plaintext_password_warning() {
        for host in ["localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["10.0.0.5", "cache.internal", "::ffff:10.0.0.1", "192.168.1.1"] {
            assert!(!is_loopback(host), "{host}");
        }
        warn_plaintext_password("10.0.0.5"); // logs once; never fails
        warn_plaintext_password("10.0.0.5");
    }
}
