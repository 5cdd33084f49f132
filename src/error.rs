//! Errors of the safe core: a kind an FFI or Python layer can map to a status, and a message an
//! operator can act on (it names the server, the timeout, the server's own words).

use std::fmt;

/// What went wrong with a call as a whole (per-key results are [`crate::Outcome`]s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// An argument broke the API's contract (empty key, length mismatch, ...).
    InvalidArgument,
    /// A configuration value (option or `VALKEY_*` variable) is invalid.
    InvalidConfig,
    /// No connection to the server could be made or kept.
    Connection,
    /// The server refused the credentials, or wants some and none were given.
    Auth,
    /// The server did not answer within the timeout.
    Timeout,
    /// The server sent something that is not the RESP reply we expected.
    Protocol,
    /// The server answered with an error reply.
    Server,
    /// The server's ACL does not allow a command we need (`NOPERM`).
    Permission,
    /// A TLS connection could not be set up (certificates, names, TLS against plaintext).
    Tls,
}

/// An error with its kind and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// Makes an error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into() }
    }

    /// The kind of the error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, meant for an operator.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn invalid_argument(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    pub(crate) fn invalid_config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidConfig, message)
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Protocol, message)
    }

    /// Classifies a server error reply (`-ERR ...`): authentication problems get their own kind.
    pub(crate) fn from_server_reply(reply: &str, server: &str) -> Self {
        let code = reply.split_whitespace().next().unwrap_or("");
        if code == "NOPERM" {
            return Error::new(
                ErrorKind::Permission,
                format!("{server} refused a command: {reply} (grant it to this ACL user; see the minimal ACL in docs/reliability.md)"),
            );
        }
        let auth = matches!(code, "WRONGPASS" | "NOAUTH")
            || reply.contains("AUTH <password> called without any password configured")
            || reply.contains("invalid password")
            || reply.contains("invalid username-password pair");
        if auth {
            let hint = if code == "NOAUTH" {
                " (the server requires a password: set VALKEY_PASSWORD or the password option)"
            } else {
                " (check VALKEY_USERNAME / VALKEY_PASSWORD)"
            };
            Error::new(ErrorKind::Auth, format!("authentication failed at {server}: {reply}{hint}"))
        } else {
            Error::new(ErrorKind::Server, format!("{server} answered: {reply}"))
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Result of the core's fallible calls.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_replies_about_credentials_are_auth_errors() {
        for reply in [
            "WRONGPASS invalid username-password pair or user is disabled.",
            "NOAUTH Authentication required.",
            "ERR AUTH <password> called without any password configured for the default user.",
        ] {
            let e = Error::from_server_reply(reply, "127.0.0.1:1");
            assert_eq!(e.kind(), ErrorKind::Auth, "{reply}");
            assert!(e.message().contains("127.0.0.1:1"));
        }
        let e = Error::from_server_reply("NOPERM User u has no permissions to run the 'info' command", "h:1");
        assert_eq!(e.kind(), ErrorKind::Permission);
        assert!(e.message().contains("'info'"));
        let e = Error::from_server_reply("OOM command not allowed", "h:1");
        assert_eq!(e.kind(), ErrorKind::Server);
    }
}
