//! Configuration: explicit settings over `VALKEY_*` environment variables over defaults, validated
//! with messages that name the offending setting.

use crate::error::{Error, Result};
use crate::keys::Namespace;
use crate::socket::Endpoint;
use crate::url::{parse_url, redact_url};
use std::fmt;
use std::time::Duration;

pub use crate::url::DEFAULT_PORT;

/// Everything a [`crate::Store`] needs, resolved and validated.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Server host name or address.
    pub host: String,
    /// Server TCP port.
    pub port: u16,
    /// A Unix domain socket path; when set, it is used instead of `host:port`.
    pub socket: Option<String>,
    /// Logical database (`SELECT`).
    pub db: u32,
    /// ACL user name (`AUTH user pass`); `None` authenticates as the default user.
    pub username: Option<String>,
    /// Password; never printed (see the `Debug` impl).
    pub password: Option<String>,
    /// Key namespace: model and parallel ranks.
    pub namespace: Namespace,
    /// Caller's 64-bit fingerprint of the value layout, stored in every value's header.
    pub value_format: u64,
    /// Whether written values carry an xxh3-64 checksum of the payload (always verified on read).
    pub checksum: bool,
    /// TLS settings; `None` for plaintext.
    pub tls: Option<TlsConfig>,
    /// batch_set skips keys already stored with the same value format and payload length.
    pub skip_existing: bool,
    /// Time allowed to establish a connection, including the handshake.
    pub connect_timeout: Duration,
    /// Base time allowed for one request; large requests get more (see `min_throughput`).
    pub io_timeout: Duration,
    /// Bytes per second the timeout assumes at least: a request moving `b` bytes may take
    /// `io_timeout + b / min_throughput`.
    pub min_throughput: u64,
    /// How many connections one large batch is split across (each with its own thread).
    pub connections: usize,
    /// Bytes of GET replies a connection keeps outstanding (bounds server and socket buffers).
    pub get_window: usize,
    /// Bytes of SET requests a connection keeps unacknowledged.
    pub set_window: usize,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("socket", &self.socket)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("namespace", &self.namespace)
            .field("value_format", &format_args!("{:#018x}", self.value_format))
            .field("checksum", &self.checksum)
            .field("tls", &self.tls)
            .field("skip_existing", &self.skip_existing)
            .field("connect_timeout", &self.connect_timeout)
            .field("io_timeout", &self.io_timeout)
            .field("connections", &self.connections)
            .finish()
    }
}

impl Config {
    /// Where the server listens.
    pub fn endpoint(&self) -> Endpoint {
        match &self.socket {
            Some(path) => Endpoint::Unix(path.clone()),
            None => Endpoint::Tcp { host: self.host.clone(), port: self.port },
        }
    }

    /// `host:port` (or `unix:PATH`) as used in messages.
    pub fn server(&self) -> String {
        self.endpoint().name()
    }

    /// The timeout for a request that moves `bytes` bytes.
    pub fn request_timeout(&self, bytes: u64) -> Duration {
        let extra_ms = bytes.saturating_mul(1000) / self.min_throughput.max(1);
        self.io_timeout + Duration::from_millis(extra_ms)
    }
}

/// TLS settings, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file of the CA(s) to trust; `None`: the system's trust store.
    pub ca_cert: Option<String>,
    /// PEM files of the client certificate (chain) and its private key, for mutual TLS.
    pub cert: Option<String>,
    pub key: Option<String>,
    /// The name to verify in the server's certificate, when not the host (e.g. connecting by IP).
    pub server_name: Option<String>,
    /// Accept any server certificate. INSECURE: only when a user names it; logged once.
    pub insecure_skip_verify: bool,
}

/// Settings given explicitly (by the C options struct, Python keyword arguments or the CLI).
/// `None` means "take it from the environment, else the default".
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `valkey://[user[:password]@]host[:port][/db]` (also `redis://`), or
    /// `unix:///path/to/valkey.sock[?db=N]` (also `valkey+unix://`, `redis+unix://`).
    pub url: Option<String>,
    /// A Unix domain socket path (`VALKEY_SOCKET`).
    pub socket: Option<String>,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub db: Option<i64>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub model_name: Option<String>,
    pub tp_rank: Option<i64>,
    pub tp_size: Option<i64>,
    pub pp_rank: Option<i64>,
    pub pp_size: Option<i64>,
    pub cp_rank: Option<i64>,
    pub cp_size: Option<i64>,
    pub is_mla: bool,
    pub value_format: u64,
    pub checksum: Option<bool>,
    /// TLS on or off (`VALKEY_TLS`; a `valkeys://` URL turns it on).
    pub tls: Option<bool>,
    pub tls_ca_cert: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub tls_server_name: Option<String>,
    pub tls_insecure_skip_verify: Option<bool>,
    /// `HICACHE_VALKEY_SKIP_EXISTING`.
    pub skip_existing: Option<bool>,
    pub connect_timeout_ms: Option<i64>,
    pub io_timeout_ms: Option<i64>,
    pub connections: Option<i64>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.url.as_ref().map(|u| redact_url(u)))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("model_name", &self.model_name)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Resolves against the process environment.
    pub fn resolve(&self) -> Result<Config> {
        self.resolve_with(|name| std::env::var(name).ok())
    }

    /// Resolves against an environment given as a lookup function (tests use a map).
    pub fn resolve_with(&self, env: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        let mut host = "localhost".to_string();
        let mut port: i64 = DEFAULT_PORT.into();
        let mut db: i64 = 0;
        let mut username = None;
        let mut password = None;
        let mut socket = None;
        let mut url_tls = false;

        // Lowest to highest precedence: env URL, env fields, explicit URL, explicit fields.
        let mut apply_url = |url: &str, origin: &str| -> Result<()> {
            let parts = parse_url(url, origin)?;
            host = parts.host;
            port = parts.port.into();
            socket = parts.socket;
            url_tls = parts.tls;
            if let Some(d) = parts.db {
                db = d;
            }
            if parts.username.is_some() {
                username = parts.username;
            }
            if parts.password.is_some() {
                password = parts.password;
            }
            Ok(())
        };
        if let Some(url) = env("VALKEY_URL") {
            apply_url(&url, "VALKEY_URL")?;
        }
        if let Some(url) = &self.url {
            apply_url(url, "the url option")?;
        }
        // Explicit URL beats env fields: apply env fields only where no explicit URL was given.
        if self.url.is_none() {
            if let Some(h) = env("VALKEY_HOST") {
                host = h;
            }
            // Parsed only when no explicit value replaces them.
            if let (None, Some(p)) = (self.port, env("VALKEY_PORT")) {
                port = parse_int(&p, "VALKEY_PORT")?;
            }
            if let (None, Some(d)) = (self.db, env("VALKEY_DB")) {
                db = parse_int(&d, "VALKEY_DB")?;
            }
            if let Some(u) = env("VALKEY_USERNAME") {
                username = Some(u);
            }
            if let Some(path) = env("VALKEY_SOCKET") {
                socket = Some(path);
            }
        }
        // A password from the environment applies unless one was given explicitly (keeps
        // secrets out of URLs and command lines).
        if password.is_none() {
            password = env("VALKEY_PASSWORD");
        }
        if let Some(h) = &self.host {
            host = h.clone();
            socket = None;
        }
        if let Some(path) = &self.socket {
            socket = Some(path.clone());
        }
        if socket.as_deref() == Some("") {
            return Err(Error::invalid_config("socket path is empty (set VALKEY_SOCKET or the socket option)"));
        }
        if let Some(p) = self.port {
            port = p;
        }
        if let Some(d) = self.db {
            db = d;
        }
        if let Some(u) = &self.username {
            username = Some(u.clone());
        }
        if let Some(p) = &self.password {
            password = Some(p.clone());
        }

        if host.is_empty() {
            return Err(Error::invalid_config("host is empty (set VALKEY_HOST or the host option)"));
        }
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| Error::invalid_config(format!("port {port} is not a TCP port (1-65535)")))?;
        let db = u32::try_from(db)
            .map_err(|_| Error::invalid_config(format!("db {db} is not a database index (0 or more)")))?;

        let int_env = |value: Option<i64>, name: &str, default: i64| -> Result<i64> {
            match value {
                Some(v) => Ok(v),
                None => env(name).map(|v| parse_int(&v, name)).transpose().map(|v| v.unwrap_or(default)),
            }
        };
        let namespace = Namespace::new(
            self.model_name.clone().or_else(|| env("HICACHE_VALKEY_MODEL")).unwrap_or_else(|| "default".into()),
            self.is_mla,
            (self.tp_rank.unwrap_or(0), self.tp_size.unwrap_or(1)),
            (self.pp_rank.unwrap_or(0), self.pp_size.unwrap_or(1)),
            (self.cp_rank.unwrap_or(0), self.cp_size.unwrap_or(1)),
        )?;
        let bool_env = |value: Option<bool>, name: &str| -> Result<Option<bool>> {
            match value {
                Some(v) => Ok(Some(v)),
                None => env(name).map(|v| parse_bool(&v, name)).transpose(),
            }
        };
        let checksum = bool_env(self.checksum, "HICACHE_VALKEY_CHECKSUM")?.unwrap_or(false);
        let skip_existing = bool_env(self.skip_existing, "HICACHE_VALKEY_SKIP_EXISTING")?.unwrap_or(false);
        let str_env = |value: &Option<String>, name: &str| value.clone().or_else(|| env(name));
        let tls_on = bool_env(self.tls, "VALKEY_TLS")?.unwrap_or(false) || url_tls;
        let tls = if tls_on {
            let t = TlsConfig {
                ca_cert: str_env(&self.tls_ca_cert, "VALKEY_TLS_CA_CERT"),
                cert: str_env(&self.tls_cert, "VALKEY_TLS_CERT"),
                key: str_env(&self.tls_key, "VALKEY_TLS_KEY"),
                server_name: str_env(&self.tls_server_name, "VALKEY_TLS_SERVER_NAME"),
                insecure_skip_verify: bool_env(self.tls_insecure_skip_verify, "VALKEY_TLS_INSECURE_SKIP_VERIFY")?.unwrap_or(false),
            };
            if t.cert.is_some() != t.key.is_some() {
                return Err(Error::invalid_config(
                    "mutual TLS needs both a client certificate and its key (VALKEY_TLS_CERT and VALKEY_TLS_KEY, or the tls_cert and tls_key options)",
                ));
            }
            if socket.is_some() {
                return Err(Error::invalid_config("TLS over a Unix domain socket is not supported: use one or the other"));
            }
            Some(t)
        } else {
            None
        };
        let positive = |v: i64, what: &str| -> Result<u64> {
            u64::try_from(v)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| Error::invalid_config(format!("{what} must be positive, got {v}")))
        };
        let connect_ms = positive(
            int_env(self.connect_timeout_ms, "HICACHE_VALKEY_CONNECT_TIMEOUT_MS", 2_000)?,
            "connect timeout (ms)",
        )?;
        let io_ms = positive(int_env(self.io_timeout_ms, "HICACHE_VALKEY_TIMEOUT_MS", 5_000)?, "timeout (ms)")?;
        let default_connections = std::thread::available_parallelism().map_or(1, |n| n.get() / 2).clamp(1, 8);
        let connections = positive(
            int_env(self.connections, "HICACHE_VALKEY_CONNECTIONS", default_connections as i64)?,
            "connections",
        )?;
        if connections > 64 {
            return Err(Error::invalid_config(format!("connections must be at most 64, got {connections}")));
        }

        Ok(Config {
            host,
            port,
            socket,
            db,
            username,
            password,
            namespace,
            value_format: self.value_format,
            checksum,
            tls,
            skip_existing,
            connect_timeout: Duration::from_millis(connect_ms),
            io_timeout: Duration::from_millis(io_ms),
            min_throughput: 64 << 20,
            connections: connections as usize,
            get_window: 4 << 20,
            set_window: 8 << 20,
        })
    }
}

fn parse_bool(text: &str, what: &str) -> Result<bool> {
    match text.trim() {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        other => Err(Error::invalid_config(format!("{what}='{other}' is not a boolean (use 1/0, true/false, on/off)"))),
    }
}

fn parse_int(text: &str, what: &str) -> Result<i64> {
    text.trim()
        .parse()
        .map_err(|_| Error::invalid_config(format!("{what}='{text}' is not a number")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(settings: &Settings, env: &[(&str, &str)]) -> Result<Config> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        settings.resolve_with(|k| env.get(k).cloned())
    }

    #[test]
    fn defaults_without_environment() {
        let c = resolve(&Settings::default(), &[]).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.db), ("localhost", 6379, 0));
        assert_eq!(c.password, None);
        assert_eq!(c.namespace.model(), "default");
        assert!(!c.checksum);
    }

    #[test]
    fn environment_then_explicit_settings() {
        let env = [("VALKEY_HOST", "10.1.2.3"), ("VALKEY_PORT", "7000"), ("VALKEY_DB", "3"), ("VALKEY_PASSWORD", "pw")];
        let c = resolve(&Settings::default(), &env).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.db, c.password.as_deref()), ("10.1.2.3", 7000, 3, Some("pw")));
        let s = Settings { host: Some("127.0.0.1".into()), port: Some(7001), ..Default::default() };
        let c = resolve(&s, &env).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.db), ("127.0.0.1", 7001, 3));
    }

    #[test]
    fn url_from_environment_and_option() {
        let env = [("VALKEY_URL", "valkey://alice:secret@127.0.0.2:7002/5")];
        let c = resolve(&Settings::default(), &env).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.db), ("127.0.0.2", 7002, 5));
        assert_eq!((c.username.as_deref(), c.password.as_deref()), (Some("alice"), Some("secret")));
        // An explicit URL wins over VALKEY_HOST; VALKEY_PASSWORD still fills a URL without one.
        let s = Settings { url: Some("redis://127.0.0.3:7003".into()), ..Default::default() };
        let c = resolve(&s, &[("VALKEY_HOST", "nothere"), ("VALKEY_PASSWORD", "pw")]).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.db, c.password.as_deref()), ("127.0.0.3", 7003, 0, Some("pw")));
        let c = resolve(&Settings { url: Some("valkey://[::1]:7004".into()), ..Default::default() }, &[]).unwrap();
        assert_eq!((c.host.as_str(), c.server()), ("::1", "[::1]:7004".to_string()));
    }

    #[test]
    fn invalid_values_are_named() {
        let e = resolve(&Settings::default(), &[("VALKEY_PORT", "sixty")]).unwrap_err();
        assert!(e.message().contains("VALKEY_PORT='sixty'"), "{e}");
        // An explicit port makes the variable irrelevant.
        assert_eq!(resolve(&Settings { port: Some(7000), ..Default::default() }, &[("VALKEY_PORT", "sixty")]).unwrap().port, 7000);
        for port in [0, 70000, -1] {
            let e = resolve(&Settings { port: Some(port), ..Default::default() }, &[]).unwrap_err();
            assert!(e.message().contains("port"), "{e}");
        }
        let e = resolve(&Settings { url: Some("http://x".into()), ..Default::default() }, &[]).unwrap_err();
        assert!(e.message().contains("not a valid Valkey URL"), "{e}");
        let e = resolve(&Settings { url: Some("valkey://u:topsecret@h:1".into()), port: None, ..Default::default() }, &[])
            .map(|_| ())
            .and_then(|_| resolve(&Settings { url: Some("valkey://u:topsecret@".into()), ..Default::default() }, &[]).map(|_| ()))
            .unwrap_err();
        assert!(!e.message().contains("topsecret"), "{e}");
        let e = resolve(&Settings { db: Some(-2), ..Default::default() }, &[]).unwrap_err();
        assert!(e.message().contains("db -2"), "{e}");
    }

    #[test]
    fn debug_output_hides_the_password() {
        let c = resolve(&Settings { password: Some("hunter2".into()), ..Default::default() }, &[]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        let s = Settings { url: Some("valkey://u:hunter2@h".into()), ..Default::default() };
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn request_timeout_grows_with_bytes() {
        let c = resolve(&Settings { io_timeout_ms: Some(100), ..Default::default() }, &[]).unwrap();
        assert_eq!(c.request_timeout(0), Duration::from_millis(100));
        assert_eq!(c.request_timeout(64 << 20), Duration::from_millis(1100));
    }
}
