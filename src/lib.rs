//! hicache-valkey: Valkey as the storage tier of an LLM inference engine's hierarchical KV cache.
//!
//! The safe core ([`Store`], [`Settings`], [`Config`]) knows nothing of C; the C ABI lives in
//! [`ffi`] and is a thin shell over it. See the README for the key format, and docs/design.md
//! for the stored value format, the data path and what each module holds.

// The C boundary is audited by the compiler: every unsafe operation sits in an `unsafe` block,
// even inside an `unsafe fn`, and every `unsafe` block says why it is sound.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod cluster;
mod config;
mod conn;
mod error;
pub mod ffi;
mod format;
mod keys;
mod lanes;
mod logging;
mod node;
mod outcome;
mod pipeline;
mod quiet;
mod resp;
mod routing;
mod socket;
mod stats;
mod store;
mod targets;
mod tls;
mod topology;
mod url;

pub use config::{Config, Settings};
pub use error::{Error, ErrorKind, Result};
pub use format::HEADER_LEN;
pub use keys::Namespace;
pub use logging::init_logging;
pub use outcome::Outcome;
pub use stats::{ClientStats, Latency, ServerStats, Stats};
pub use store::{BatchReport, Store};
pub use targets::ReadTargets;
