//! The C ABI: a thin, uniform shell over the safe core.
//!
//! Every export that returns a `hicache_status` (and `close`) runs inside [`boundary::ffi_call`], which clears
//! the calling thread's last error, catches panics (reported as `HICACHE_STATUS_PANIC`, never
//! unwinding into C) and maps core errors to a status plus a message. Pointer arguments are
//! checked for NULL and lengths for consistency before anything is dereferenced; what cannot be
//! checked (that a pointer is valid for its length) is the caller's contract, written in each
//! function's `# Safety` section. The string functions, which return a value and leave the last
//! error alone, run inside [`boundary::ffi_value`] or are panic-free by construction.
//!
//! One file per API group, in the header's order:
//! - `options`: `hicache_valkey_options_init` and reading a caller's options struct;
//! - `handle`: `hicache_valkey_open` / `_close` and the handle type;
//! - `batch`: `hicache_valkey_batch_set` / `_get` / `_exists` and their argument checks;
//! - `stats`: `hicache_valkey_stats`, `_clear`, `_ping`;
//! - `names`: `hicache_valkey_version`, `_status_str`, `_outcome_str`, `_last_error`;
//! - `boundary`: the panic boundary, the status mapping and the per-thread last error;
//! - `types`: the `#[repr(C)]` types and constants;
//! - `audit` (tests only): checks from the source that every export runs inside the boundary.
//!
//! The header `include/hicache_valkey.h` is generated from this module by cbindgen.

#[cfg(test)]
mod audit;
mod boundary;
mod types;
mod options;
mod handle;
mod batch;
mod stats;
mod names;

pub use batch::*;
pub use handle::*;
pub use names::*;
pub use options::*;
pub use stats::*;
pub use types::*;
