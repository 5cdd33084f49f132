//! The `#[repr(C)]` types of the ABI, with their layouts pinned by tests.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};

/// Major version of the library (and of `hicache_valkey_version()`).
pub const HICACHE_VALKEY_VERSION_MAJOR: u32 = 0;
/// Minor version.
pub const HICACHE_VALKEY_VERSION_MINOR: u32 = 1;
/// Patch version.
pub const HICACHE_VALKEY_VERSION_PATCH: u32 = 0;
/// `MAJOR * 10000 + MINOR * 100 + PATCH`, for `#if` comparisons.
pub const HICACHE_VALKEY_VERSION_NUMBER: u32 = 100;
/// Pass in an `int32_t` option to take the value from the environment, else the default.
pub const HICACHE_VALKEY_UNSET: i32 = -1;

/// The status of a call as a whole. Values are stable and never reused.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum hicache_status {
    /// The call ran. For batches, see the per-key outcomes.
    Ok = 0,
    /// An argument is invalid (NULL where a pointer is needed, an empty key, a NULL segment
    /// with a non-zero length, a too small `struct_size`).
    InvalidArgument = 1,
    /// A configuration value is invalid (port 0, a non-numeric `VALKEY_PORT`, a bad URL, ranks).
    InvalidConfig = 2,
    /// The server cannot be reached (refused, unresolvable host, connection dropped).
    Connection = 3,
    /// The server refused the credentials or requires some.
    Auth = 4,
    /// The server did not answer in time.
    Timeout = 5,
    /// The server sent something unexpected.
    Protocol = 6,
    /// The server answered with an error.
    Server = 7,
    /// A bug in the library was caught at the C boundary; the handle may be used further.
    Panic = 8,
    /// The server's ACL does not allow a command this call needs (`NOPERM`); the message names
    /// the command. docs/reliability.md gives the minimal ACL a deployment needs.
    Permission = 9,
    /// A TLS connection could not be set up: untrusted or expired certificate, name mismatch,
    /// a client certificate required, TLS against a plaintext port or the reverse, unreadable
    /// PEM files. The message says which.
    Tls = 10,
}

/// What happened to one key of a batch (an `int32_t` in the `outcomes` arrays).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum hicache_outcome {
    /// batch_set: stored. batch_get: hit; exactly the stored bytes are in the segments.
    Ok = 0,
    /// batch_get: the key does not exist.
    Miss = 1,
    /// batch_get: the stored payload's length differs from the segments' total; they were not
    /// written.
    SizeMismatch = 2,
    /// batch_get: the stored value was not written by this library; segments not written.
    Foreign = 3,
    /// batch_get: written with another value-format fingerprint; segments not written.
    FormatMismatch = 4,
    /// batch_get: the payload does not match its checksum; the segments hold unusable bytes.
    ChecksumMismatch = 5,
    /// The request timed out.
    Timeout = 6,
    /// The connection failed.
    IoError = 7,
    /// The server answered with an error (see `hicache_valkey_last_error`).
    ServerError = 8,
    /// batch_set: the server is out of memory (maxmemory reached under `noeviction`).
    OutOfMemory = 9,
    /// The key or value is larger than the server accepts (its `proto-max-bulk-len`, 512 MiB by
    /// default); it was not sent, the other keys of the batch were. batch_get: segments not
    /// written.
    TooLarge = 10,
}

/// The C enums' value lists, in value order: the names (`hicache_valkey_status_str`, ...) and
/// the integer conversions are derived from these and the variant names, so the enum
/// definitions above are the only place a value or a name is written.
pub trait CEnum: Copy + std::fmt::Debug + 'static {
    /// The C prefix of every value's name, e.g. `HICACHE_STATUS_`.
    const PREFIX: &'static str;
    /// Every value, in value order (values are 0, 1, 2, ...; a test checks this).
    const ALL: &'static [Self];
    /// The value's integer.
    fn value(self) -> i32;
    /// The value for an integer, if it is one.
    fn from_value(v: i32) -> Option<Self> {
        usize::try_from(v).ok().and_then(|i| Self::ALL.get(i).copied())
    }
    /// `PREFIX` + the variant name in SCREAMING_SNAKE_CASE (as cbindgen spells it).
    fn c_name(self) -> String {
        let mut out = Self::PREFIX.to_string();
        for (i, ch) in format!("{self:?}").chars().enumerate() {
            if ch.is_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_uppercase());
        }
        out
    }
}

impl CEnum for hicache_status {
    const PREFIX: &'static str = "HICACHE_STATUS_";
    const ALL: &'static [Self] = {
        use hicache_status::*;
        &[Ok, InvalidArgument, InvalidConfig, Connection, Auth, Timeout, Protocol, Server, Panic, Permission, Tls]
    };
    fn value(self) -> i32 {
        self as i32
    }
}

impl CEnum for hicache_outcome {
    const PREFIX: &'static str = "HICACHE_OUTCOME_";
    const ALL: &'static [Self] = {
        use hicache_outcome::*;
        &[Ok, Miss, SizeMismatch, Foreign, FormatMismatch, ChecksumMismatch, Timeout, IoError, ServerError, OutOfMemory, TooLarge]
    };
    fn value(self) -> i32 {
        self as i32
    }
}

/// A page key: `len` bytes at `ptr`, binary-safe, not empty. The library adds the namespace.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hicache_key {
    pub ptr: *const u8,
    pub len: usize,
}

/// One caller-owned piece of a value. `ptr` may be NULL only when `len` is 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hicache_segment {
    pub ptr: *mut c_void,
    pub len: usize,
}

/// A value: the concatenation of `count` segments.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hicache_value {
    pub segments: *const hicache_segment,
    pub count: usize,
}

/// Size of the first published `hicache_valkey_options` (version 0.1). A caller compiled
/// against that header passes this size to `hicache_valkey_options_init`; later versions only
/// append fields, so every older size stays accepted.
pub const HICACHE_VALKEY_OPTIONS_V1_SIZE: u32 = 104;

/// Options of `hicache_valkey_open`. Fill with `HICACHE_VALKEY_OPTIONS_INIT(&opts)` (that is,
/// `hicache_valkey_options_init(&opts, sizeof opts)`), then set fields:
/// strings left NULL and integers left `HICACHE_VALKEY_UNSET` come from the environment
/// (`VALKEY_URL`, `VALKEY_HOST`, `VALKEY_PORT`, `VALKEY_DB`, `VALKEY_USERNAME`,
/// `VALKEY_PASSWORD`, `HICACHE_VALKEY_*`), else from the defaults. Strings are NUL-terminated
/// UTF-8 and are copied; the struct may be freed after the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hicache_valkey_options {
    /// `sizeof(hicache_valkey_options)` as the caller was compiled, set by
    /// `hicache_valkey_options_init`; lets a newer library serve an older caller (fields past
    /// `struct_size` are treated as unset).
    pub struct_size: u32,
    /// TCP port, 1-65535 (default 6379).
    pub port: i32,
    /// Database index (default 0).
    pub db: i32,
    /// Tensor-parallel rank and size (default 0 of 1). Not part of MLA keys.
    pub tp_rank: i32,
    pub tp_size: i32,
    /// Pipeline-parallel rank and size (default 0 of 1); in the key when size > 1.
    pub pp_rank: i32,
    pub pp_size: i32,
    /// Attention context-parallel rank and size (default 0 of 1); in the key when size > 1.
    pub cp_rank: i32,
    pub cp_size: i32,
    /// 1: store an xxh3-64 checksum of every payload; 0: don't (default, or
    /// `HICACHE_VALKEY_CHECKSUM`). Stored checksums are always verified on read.
    pub checksum: i32,
    /// Connect + handshake timeout in ms (default 2000, `HICACHE_VALKEY_CONNECT_TIMEOUT_MS`).
    pub connect_timeout_ms: i32,
    /// Base request timeout in ms; a request gets 1 s more per 64 MiB it moves (default 5000,
    /// `HICACHE_VALKEY_TIMEOUT_MS`).
    pub timeout_ms: i32,
    /// Connections one large batch is split across, 1-64 (default: half the cores, at most 8;
    /// `HICACHE_VALKEY_CONNECTIONS`).
    pub connections: i32,
    /// Non-zero for MLA models: keys leave out the tp rank, all ranks share one copy.
    pub is_mla: u32,
    /// The caller's 64-bit fingerprint of its page layout (dtype, page size, layout, geometry),
    /// stored in each value; a value written with another fingerprint is never a hit.
    pub value_format: u64,
    /// `valkey://[user[:password]@]host[:port][/db]` (or `redis://`).
    pub url: *const c_char,
    pub host: *const c_char,
    pub username: *const c_char,
    pub password: *const c_char,
    /// Model name (default "default"); may contain any character.
    pub model_name: *const c_char,
    // ---- appended in 0.2 (callers built against 0.1 pass HICACHE_VALKEY_OPTIONS_V1_SIZE) ----
    /// Path of the server's Unix domain socket (`VALKEY_SOCKET`, or a `unix://` URL); when set,
    /// `host` and `port` are not used.
    pub socket_path: *const c_char,
    /// 1: TLS (also turned on by a `valkeys://` / `rediss://` URL, or `VALKEY_TLS=1`); 0: plaintext.
    pub tls: i32,
    /// 1: accept any server certificate (`VALKEY_TLS_INSECURE_SKIP_VERIFY`). INSECURE: for tests
    /// only; logged as a warning when used.
    pub tls_insecure_skip_verify: i32,
    /// 1: batch_set skips keys already stored with the same value format and payload length
    /// (`HICACHE_VALKEY_SKIP_EXISTING`), reported `HICACHE_OUTCOME_OK`; 0: always write.
    pub skip_existing: i32,
    /// Must be 0.
    pub reserved: i32,
    /// PEM file of the CA certificate(s) to trust (`VALKEY_TLS_CA_CERT`); NULL: the system's
    /// trust store.
    pub tls_ca_cert: *const c_char,
    /// PEM files of the client certificate and its key, for mutual TLS (`VALKEY_TLS_CERT`,
    /// `VALKEY_TLS_KEY`).
    pub tls_cert: *const c_char,
    pub tls_key: *const c_char,
    /// The name to verify in the server's certificate instead of the host
    /// (`VALKEY_TLS_SERVER_NAME`), e.g. when connecting by IP address.
    pub tls_server_name: *const c_char,
}

/// Statistics filled by `hicache_stats`. Set `struct_size` to
/// `sizeof(hicache_stats)` before the call; the library fills what fits.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hicache_stats {
    pub struct_size: u32,
    pub reserved: u32,
    /// Keys of this model (every rank) in this database, counted with SCAN.
    pub model_keys: u64,
    /// Keys in this database.
    pub db_keys: u64,
    /// Server memory in use, bytes, and as the server's human-readable string.
    pub used_memory_bytes: u64,
    pub used_memory_human: [c_char; 32],
    /// `maxmemory` (0: unlimited) and `maxmemory-policy`.
    pub maxmemory_bytes: u64,
    pub maxmemory_policy: [c_char; 32],
    pub evicted_keys: u64,
    /// Server-wide keyspace hits and misses since it started, and hits / (hits + misses).
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    pub keyspace_hit_ratio: f64,
    pub connected_clients: u64,
    pub server_version: [c_char; 32],
    /// This handle: pages hit and missed by batch_get, and the ratio.
    pub get_hits: u64,
    pub get_misses: u64,
    pub get_hit_ratio: f64,
    /// This handle: keys found and not found by batch_exists, and the ratio.
    pub exists_hits: u64,
    pub exists_misses: u64,
    pub exists_hit_ratio: f64,
    pub pages_written: u64,
    pub bytes_written: u64,
    pub pages_read: u64,
    pub bytes_read: u64,
    /// Keys that failed (timeout, I/O, server error) plus calls that failed as a whole.
    pub errors: u64,
    /// Connections re-established after a failure.
    pub reconnects: u64,
    /// Calls and per-call latency (p50, p99, microseconds) of each batch operation.
    pub set_calls: u64,
    pub set_p50_us: u64,
    pub set_p99_us: u64,
    pub get_calls: u64,
    pub get_p50_us: u64,
    pub get_p99_us: u64,
    pub exists_calls: u64,
    pub exists_p50_us: u64,
    pub exists_p99_us: u64,
    /// Primaries of the Valkey Cluster the server figures are summed over; 0 for one server.
    pub cluster_primaries: u64,
    /// Primaries that did not answer: their figures are missing from the sums above.
    pub unreachable_primaries: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    /// Pins the layouts the header promises (64-bit targets).
    #[test]
    fn layouts() {
        assert_eq!((size_of::<hicache_key>(), size_of::<hicache_segment>(), size_of::<hicache_value>()), (16, 16, 16));
        assert_eq!(size_of::<hicache_status>(), 4);
        assert_eq!(offset_of!(hicache_valkey_options, is_mla), 52);
        assert_eq!(offset_of!(hicache_valkey_options, value_format), 56);
        assert_eq!(offset_of!(hicache_valkey_options, model_name), 96);
        assert_eq!(offset_of!(hicache_valkey_options, socket_path), 104);
        assert_eq!(offset_of!(hicache_valkey_options, tls), 112);
        assert_eq!(offset_of!(hicache_valkey_options, tls_ca_cert), 128);
        assert_eq!(size_of::<hicache_valkey_options>(), 160);
        assert_eq!(HICACHE_VALKEY_OPTIONS_V1_SIZE, 104, "the first published size never changes");
        assert_eq!(offset_of!(hicache_stats, model_keys), 8);
        assert_eq!(offset_of!(hicache_stats, used_memory_human), 32);
        assert_eq!(size_of::<hicache_stats>(), 360);
        assert_eq!(align_of::<hicache_stats>(), 8);
    }

    /// `ALL` lists every value once, in value order, and as many values as the header has.
    #[test]
    fn enum_value_lists_are_complete() {
        fn check<E: CEnum>() {
            for (i, v) in E::ALL.iter().enumerate() {
                assert_eq!(v.value(), i as i32, "{v:?}");
                assert_eq!(E::from_value(i as i32).map(E::value), Some(i as i32));
            }
            assert!(E::from_value(-1).is_none() && E::from_value(E::ALL.len() as i32).is_none());
            let header = include_str!("../../include/hicache_valkey.h");
            let in_header = header.lines().filter(|l| l.trim_start().starts_with(E::PREFIX) && l.contains(" = ")).count();
            assert_eq!(E::ALL.len(), in_header, "{} values in ALL vs the header", E::PREFIX);
            for v in E::ALL {
                assert!(header.contains(&format!("{} = {},", v.c_name(), v.value())), "{} not in the header", v.c_name());
            }
        }
        check::<hicache_status>();
        check::<hicache_outcome>();
    }

    #[test]
    fn version_constants_match_cargo() {
        let v = |s: &str| s.parse::<u32>().unwrap();
        assert_eq!(HICACHE_VALKEY_VERSION_MAJOR, v(env!("CARGO_PKG_VERSION_MAJOR")));
        assert_eq!(HICACHE_VALKEY_VERSION_MINOR, v(env!("CARGO_PKG_VERSION_MINOR")));
        assert_eq!(HICACHE_VALKEY_VERSION_PATCH, v(env!("CARGO_PKG_VERSION_PATCH")));
        assert_eq!(
            HICACHE_VALKEY_VERSION_NUMBER,
            HICACHE_VALKEY_VERSION_MAJOR * 10000 + HICACHE_VALKEY_VERSION_MINOR * 100 + HICACHE_VALKEY_VERSION_PATCH
        );
    }
}
