//! Valkey URLs: `valkey://`, `valkeys://` (TLS), `redis://`, `rediss://`, `unix://`,
//! `valkey+unix://` and `redis+unix://`, parsed with the `redis` crate's parser, and their
//! redaction for logs.

use crate::error::{Error, Result};

/// Default Valkey port.
pub const DEFAULT_PORT: u16 = 6379;

/// Replaces the password of a URL by `***` so it can be logged.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &userinfo[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// What a URL says: TLS or not, a Unix socket or a host and port, and the optional db and
/// credentials.
pub struct UrlParts {
    pub tls: bool,
    pub socket: Option<String>,
    pub host: String,
    pub port: u16,
    pub db: Option<i64>,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Parses a `valkey://` / `redis://` URL with the `redis` crate's parser.
pub fn parse_url(url: &str, origin: &str) -> Result<UrlParts> {
    use redis::IntoConnectionInfo;
    let shown = redact_url(url);
    let bad = |why: String| Error::invalid_config(format!("{origin} '{shown}' is not a valid Valkey URL: {why}"));
    // valkeys:// and rediss:// are redis:// with TLS (parsed without the redis crate's TLS feature).
    let (tls, url) = match url.strip_prefix("valkeys://").or_else(|| url.strip_prefix("rediss://")) {
        Some(rest) => (true, format!("redis://{rest}")),
        None => (false, url.to_string()),
    };
    let url = url.as_str();
    // The redis crate's parser knows redis:// and redis+unix:// / unix://; valkey is a synonym.
    let normalized = match url.strip_prefix("valkey") {
        Some(rest) if rest.starts_with("://") || rest.starts_with("+unix://") => format!("redis{rest}"),
        _ => url.to_string(),
    };
    if !(normalized.starts_with("redis://") || normalized.starts_with("redis+unix://") || normalized.starts_with("unix://")) {
        return Err(bad("expected valkey://[user[:password]@]host[:port][/db] or unix:///path/to/valkey.sock".into()));
    }
    let info = normalized.as_str().into_connection_info().map_err(|e| bad(e.to_string()))?;
    let (host, port, socket) = match info.addr() {
        redis::ConnectionAddr::Tcp(h, p) => (h.trim_start_matches('[').trim_end_matches(']').to_string(), *p, None),
        redis::ConnectionAddr::Unix(path) => ("localhost".to_string(), DEFAULT_PORT, Some(path.to_string_lossy().into_owned())),
        _ => return Err(bad("only TCP and Unix socket addresses are supported".into())),
    };
    let url = normalized.as_str();
    let settings = info.redis_settings();
    let has_db = if socket.is_some() { url.contains("db=") } else { url.splitn(4, '/').nth(3).is_some_and(|p| !p.is_empty()) };
    Ok(UrlParts {
        tls,
        socket,
        host,
        port,
        db: has_db.then_some(settings.db()),
        username: settings.username().map(str::to_string),
        password: settings.password().map(str::to_string),
    })
}
