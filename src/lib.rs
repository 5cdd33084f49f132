//! hicache-valkey: Valkey as the storage tier of an LLM inference engine's hierarchical KV cache.
//!
//! The safe core ([`Store`], [`Settings`], [`Config`]) knows nothing of C; the C ABI lives in
//! [`ffi`] and is a thin shell over it. See the README for the key format, the stored value
//! format and the data path.

mod cluster;
mod config;
mod conn;
mod error;
pub mod ffi;
mod format;
mod keys;
mod logging;
mod pipeline;
mod stats;
mod store;

pub use config::{Config, Settings};
pub use error::{Error, ErrorKind, Result};
pub use format::HEADER_LEN;
pub use keys::Namespace;
pub use logging::init_logging;
pub use stats::{ClientStats, Latency, ServerStats, Stats};
pub use store::{BatchReport, ReadTargets, Store};

/// What happened to one key of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// batch_set: stored. batch_get: hit, the stored bytes are in the caller's segments.
    Ok,
    /// The key does not exist.
    Miss,
    /// The stored payload's length differs from the caller's segments (they were not written).
    SizeMismatch,
    /// The stored value was not written by this library (no or unknown header).
    Foreign,
    /// The stored value was written with another value-format fingerprint.
    FormatMismatch,
    /// The payload does not match its checksum (the segments hold unusable bytes).
    ChecksumMismatch,
    /// The request timed out.
    Timeout,
    /// The connection failed.
    IoError,
    /// The server answered with an error.
    ServerError,
    /// The server is out of memory (maxmemory reached under `noeviction`).
    OutOfMemory,
}

impl Outcome {
    /// Whether this is a failure of the system rather than a hit or some kind of miss.
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Timeout | Outcome::IoError | Outcome::ServerError | Outcome::OutOfMemory)
    }
}
