//! The C ABI: a thin, uniform shell over the safe core.
//!
//! Every export runs inside [`boundary::ffi_call`], which clears the calling thread's last error,
//! catches panics (reported as `HICACHE_STATUS_PANIC`, never unwinding into C) and maps core
//! errors to a status plus a message. Pointer arguments are checked for NULL and lengths for
//! consistency before anything is dereferenced; what cannot be checked (that a pointer is valid
//! for its length) is the caller's contract, written in each function's `# Safety` section.
//!
//! The header `include/hicache_valkey.h` is generated from this module by cbindgen.

mod api;
mod boundary;
mod types;

pub use api::*;
pub use types::*;
