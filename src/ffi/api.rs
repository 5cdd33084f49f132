//! The exported functions.
#![allow(non_camel_case_types)]

use super::boundary::{ffi_call, non_null, set_last_error, with_last_error};
use super::types::*;
use crate::error::{Error, ErrorKind};
use crate::{init_logging, Outcome, ReadTargets, Settings, Store};
use std::ffi::{c_char, CStr, CString};
use std::sync::OnceLock;
use std::io::IoSlice;

/// An open connection to Valkey for one namespace (opaque). Thread-safe: one handle may be used
/// by several threads at once; functions take it as `const` for that reason.
pub struct hicache_valkey {
    store: Store,
}

impl From<Outcome> for hicache_outcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Ok => hicache_outcome::Ok,
            Outcome::Miss => hicache_outcome::Miss,
            Outcome::SizeMismatch => hicache_outcome::SizeMismatch,
            Outcome::Foreign => hicache_outcome::Foreign,
            Outcome::FormatMismatch => hicache_outcome::FormatMismatch,
            Outcome::ChecksumMismatch => hicache_outcome::ChecksumMismatch,
            Outcome::Timeout => hicache_outcome::Timeout,
            Outcome::IoError => hicache_outcome::IoError,
            Outcome::ServerError => hicache_outcome::ServerError,
            Outcome::OutOfMemory => hicache_outcome::OutOfMemory,
            Outcome::TooLarge => hicache_outcome::TooLarge,
        }
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidArgument, message)
}

/// Size of `hicache_valkey_options` in this version.
const OPTIONS_SIZE: usize = std::mem::size_of::<hicache_valkey_options>();
/// Size of `hicache_stats` in this version.
const STATS_SIZE: usize = std::mem::size_of::<hicache_stats>();
/// The smallest `struct_size` accepted: the fields of the first published struct, up to
/// `exists_p99_us` (callers built before `cluster_primaries` was appended).
const STATS_MIN_SIZE: usize = std::mem::offset_of!(hicache_stats, cluster_primaries);

/// Every option "unset" (take the environment, else the defaults).
fn unset_options() -> hicache_valkey_options {
    let unset = HICACHE_VALKEY_UNSET;
    hicache_valkey_options {
        struct_size: OPTIONS_SIZE as u32,
        port: unset,
        db: unset,
        tp_rank: unset,
        tp_size: unset,
        pp_rank: unset,
        pp_size: unset,
        cp_rank: unset,
        cp_size: unset,
        checksum: unset,
        connect_timeout_ms: unset,
        timeout_ms: unset,
        connections: unset,
        is_mla: 0,
        value_format: 0,
        url: std::ptr::null(),
        host: std::ptr::null(),
        username: std::ptr::null(),
        password: std::ptr::null(),
        model_name: std::ptr::null(),
        socket_path: std::ptr::null(),
        tls: unset,
        tls_insecure_skip_verify: unset,
        skip_existing: unset,
        reserved: 0,
        tls_ca_cert: std::ptr::null(),
        tls_cert: std::ptr::null(),
        tls_key: std::ptr::null(),
        tls_server_name: std::ptr::null(),
    }
}

/// An `int32_t` boolean option: `HICACHE_VALKEY_UNSET`, 0 or 1.
fn opt_bool(v: i32, what: &str) -> Result<Option<bool>, Error> {
    match v {
        HICACHE_VALKEY_UNSET => Ok(None),
        0 => Ok(Some(false)),
        1 => Ok(Some(true)),
        other => Err(Error::new(ErrorKind::InvalidConfig, format!("option {what} must be 0 or 1, got {other}"))),
    }
}

/// Checks a caller's `struct_size`: at least the first published size, at most this version's.
fn check_options_size(size: usize, what: &str) -> Result<(), Error> {
    let first = HICACHE_VALKEY_OPTIONS_V1_SIZE as usize;
    if size < first || size > OPTIONS_SIZE {
        return Err(invalid(format!(
            "{what} is {size}; this library (version {}) accepts {first} to {OPTIONS_SIZE}: {}",
            env!("CARGO_PKG_VERSION"),
            if size > OPTIONS_SIZE {
                "the program was compiled against a newer hicache_valkey.h than the library it runs with"
            } else {
                "initialise the struct with HICACHE_VALKEY_OPTIONS_INIT(&opts)"
            }
        )));
    }
    Ok(())
}

/// Fills the first `struct_size` bytes of `*opts` with "unset" values (take the environment,
/// else the defaults) and sets `opts->struct_size` to `struct_size`. Pass `sizeof *opts`, as
/// the `HICACHE_VALKEY_OPTIONS_INIT(opts)` macro does: a program compiled against an older
/// header passes its older, smaller size, and the library writes nothing past it.
/// `HICACHE_STATUS_INVALID_ARGUMENT` when `opts` is NULL or `struct_size` is smaller than
/// `HICACHE_VALKEY_OPTIONS_V1_SIZE` or larger than this library's struct (a header newer than
/// the library).
///
/// # Safety
/// `opts` is NULL or points to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn hicache_valkey_options_init(opts: *mut hicache_valkey_options, struct_size: usize) -> hicache_status {
    ffi_call(|| {
        non_null(opts, "opts")?;
        check_options_size(struct_size, "struct_size")?;
        let mut defaults = unset_options();
        defaults.struct_size = struct_size as u32;
        // SAFETY: `opts` is writable for struct_size bytes by contract, and `defaults` is a plain
        // struct of OPTIONS_SIZE >= struct_size bytes.
        unsafe { std::ptr::copy_nonoverlapping((&defaults as *const hicache_valkey_options).cast::<u8>(), opts.cast::<u8>(), struct_size) };
        Ok(())
    })
}

/// Reads a NUL-terminated UTF-8 option string; NULL is "unset".
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string.
unsafe fn opt_str(ptr: *const c_char, what: &str) -> Result<Option<String>, Error> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: by contract a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str()
        .map(|s| Some(s.to_string()))
        .map_err(|_| Error::new(ErrorKind::InvalidConfig, format!("option {what} is not valid UTF-8")))
}

fn opt_int(v: i32) -> Option<i64> {
    (v != HICACHE_VALKEY_UNSET).then_some(v.into())
}

/// # Safety
/// `opts` points to a readable options struct of at least `opts->struct_size` bytes.
unsafe fn settings_from(opts: *const hicache_valkey_options) -> Result<Settings, Error> {
    // SAFETY: non-NULL (checked by the caller); struct_size is the first field of every version.
    let size = unsafe { (*opts).struct_size } as usize;
    check_options_size(size, "opts->struct_size")?;
    // Fields the caller's (older) struct does not have stay unset.
    let mut o = unset_options();
    // SAFETY: `opts` is readable for struct_size bytes by contract; `o` has OPTIONS_SIZE >= size.
    unsafe { std::ptr::copy_nonoverlapping(opts.cast::<u8>(), (&mut o as *mut hicache_valkey_options).cast::<u8>(), size) };
    if o.reserved != 0 {
        return Err(invalid("opts->reserved must be 0"));
    }
    Ok(Settings {
        // SAFETY (each opt_str): the caller's strings are NULL or NUL-terminated.
        url: unsafe { opt_str(o.url, "url") }?,
        host: unsafe { opt_str(o.host, "host") }?,
        username: unsafe { opt_str(o.username, "username") }?,
        password: unsafe { opt_str(o.password, "password") }?,
        model_name: unsafe { opt_str(o.model_name, "model_name") }?,
        socket: unsafe { opt_str(o.socket_path, "socket_path") }?,
        port: opt_int(o.port),
        db: opt_int(o.db),
        tp_rank: opt_int(o.tp_rank),
        tp_size: opt_int(o.tp_size),
        pp_rank: opt_int(o.pp_rank),
        pp_size: opt_int(o.pp_size),
        cp_rank: opt_int(o.cp_rank),
        cp_size: opt_int(o.cp_size),
        is_mla: o.is_mla != 0,
        value_format: o.value_format,
        checksum: opt_bool(o.checksum, "checksum")?,
        tls: opt_bool(o.tls, "tls")?,
        tls_insecure_skip_verify: opt_bool(o.tls_insecure_skip_verify, "tls_insecure_skip_verify")?,
        skip_existing: opt_bool(o.skip_existing, "skip_existing")?,
        // SAFETY (each opt_str): the caller's strings are NULL or NUL-terminated.
        tls_ca_cert: unsafe { opt_str(o.tls_ca_cert, "tls_ca_cert") }?,
        tls_cert: unsafe { opt_str(o.tls_cert, "tls_cert") }?,
        tls_key: unsafe { opt_str(o.tls_key, "tls_key") }?,
        tls_server_name: unsafe { opt_str(o.tls_server_name, "tls_server_name") }?,
        connect_timeout_ms: opt_int(o.connect_timeout_ms),
        io_timeout_ms: opt_int(o.timeout_ms),
        connections: opt_int(o.connections),
    })
}

/// Opens a handle: resolves the configuration (`opts`, then the environment, then defaults),
/// connects and authenticates. On success `*out` owns the handle (free it with
/// `hicache_valkey_close`); on failure `*out` is set to NULL and `hicache_valkey_last_error`
/// says why (server not running, wrong password, bad host, invalid option...).
///
/// # Safety
/// `opts` is NULL (configuration from the environment only) or points to an options struct
/// initialised by `hicache_valkey_options_init`; `out` points to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn hicache_valkey_open(opts: *const hicache_valkey_options, out: *mut *mut hicache_valkey) -> hicache_status {
    ffi_call(|| {
        non_null(out, "out")?;
        // SAFETY: non-NULL, writable by contract.
        unsafe { out.write(std::ptr::null_mut()) };
        init_logging();
        let settings = if opts.is_null() {
            Settings::default()
        } else {
            // SAFETY: non-NULL; readable by contract.
            unsafe { settings_from(opts) }?
        };
        let store = Store::open(settings.resolve()?)?;
        let handle = Box::into_raw(Box::new(hicache_valkey { store }));
        // SAFETY: as above.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Closes the handle and its connections. NULL is a no-op. The handle must not be in use by
/// another thread, and must not be used (or closed) again.
///
/// # Safety
/// `handle` is NULL or a pointer returned by `hicache_valkey_open` and not closed yet.
#[no_mangle]
pub unsafe extern "C" fn hicache_valkey_close(handle: *mut hicache_valkey) {
    ffi_call(|| {
        if !handle.is_null() {
            // SAFETY: by contract, from Box::into_raw in hicache_valkey_open and not yet freed.
            drop(unsafe { Box::from_raw(handle) });
        }
        Ok(())
    });
}

/// # Safety
/// `handle` is NULL or a live handle.
unsafe fn store<'a>(handle: *const hicache_valkey) -> Result<&'a Store, Error> {
    non_null(handle, "handle")?;
    // SAFETY: non-NULL and live by contract.
    Ok(unsafe { &(*handle).store })
}

/// Borrows `n` items at `ptr` (NULL allowed when `n` is 0).
///
/// # Safety
/// When `n > 0`, `ptr` is NULL or valid for `n` reads of `T`.
unsafe fn items<'a, T>(ptr: *const T, n: usize, what: &str) -> Result<&'a [T], Error> {
    if n == 0 {
        return Ok(&[]);
    }
    non_null(ptr, what)?;
    check_count::<T>(n, what)?;
    // SAFETY: non-NULL and valid for n items by contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, n) })
}

/// Rejects a count of `T`s that no memory can hold (more than `isize::MAX` bytes).
fn check_count<T>(n: usize, what: &str) -> Result<(), Error> {
    match n.checked_mul(std::mem::size_of::<T>().max(1)) {
        Some(bytes) if bytes <= isize::MAX as usize => Ok(()),
        _ => Err(invalid(format!("{what}: a count of {n} is larger than any array can be"))),
    }
}

/// An empty vector with room for `n` items, or an error (not an abort) when that much memory
/// cannot be had.
fn try_vec<T>(n: usize, what: &str) -> Result<Vec<T>, Error> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| invalid(format!("cannot allocate room for {n} {what}")))?;
    Ok(v)
}

/// # Safety
/// Each key's `ptr` is valid for `len` bytes.
unsafe fn key_slices<'a>(keys: &[hicache_key]) -> Result<Vec<&'a [u8]>, Error> {
    let mut out = try_vec(keys.len(), "keys")?;
    for (i, k) in keys.iter().enumerate() {
        if k.len == 0 {
            return Err(invalid(format!("keys[{i}] is empty")));
        }
        // SAFETY: non-empty; by contract ptr is valid for len bytes (items checks NULL).
        out.push(unsafe { items(k.ptr, k.len, &format!("keys[{i}].ptr")) }?);
    }
    Ok(out)
}

/// The total segment count of `values`, checked.
fn total_segments(values: &[hicache_value]) -> Result<usize, Error> {
    values
        .iter()
        .try_fold(0usize, |acc, v| acc.checked_add(v.count))
        .ok_or_else(|| invalid("the values' segment counts add up to more than any array can hold"))
}

/// Checks value `i`'s segments and returns them.
///
/// # Safety
/// `v.segments` is valid for `v.count` segments.
unsafe fn value_segments<'a>(v: &hicache_value, i: usize) -> Result<&'a [hicache_segment], Error> {
    // SAFETY: by contract.
    let segs = unsafe { items(v.segments, v.count, &format!("values[{i}].segments")) }?;
    if let Some(j) = segs.iter().position(|s| s.ptr.is_null() && s.len > 0) {
        return Err(invalid(format!("values[{i}].segments[{j}].ptr is NULL with length {}", segs[j].len)));
    }
    Ok(segs)
}

type BatchArgs<'a> = (&'a Store, Vec<&'a [u8]>, &'a [hicache_value], &'a mut [i32]);

/// The checked arguments of `batch_set` / `batch_get`: the store, the keys as slices, the
/// values and the outcome slots.
///
/// # Safety
/// As documented on those functions.
unsafe fn batch_args<'a>(
    handle: *const hicache_valkey,
    keys: *const hicache_key,
    values: *const hicache_value,
    n: usize,
    outcomes: *mut i32,
) -> Result<BatchArgs<'a>, Error> {
    // SAFETY (whole block): the pointers are checked for NULL; validity is the caller's contract.
    let store = unsafe { store(handle) }?;
    let keys = unsafe { key_slices(items(keys, n, "keys")?) }?;
    let values = unsafe { items(values, n, "values") }?;
    let out = if n == 0 {
        &mut []
    } else {
        non_null(outcomes, "outcomes")?;
        unsafe { std::slice::from_raw_parts_mut(outcomes, n) }
    };
    Ok((store, keys, values, out))
}

/// Writes the outcomes and the message of the first failed key, if any.
fn report(outcomes: &[Outcome], out: &mut [i32], report: crate::BatchReport) {
    for (o, slot) in outcomes.iter().zip(out.iter_mut()) {
        *slot = hicache_outcome::from(*o) as i32;
    }
    report_failures(report, outcomes.len());
}

/// Sets the last error to the first failed key's message, if a key of the `n` failed.
fn report_failures(report: crate::BatchReport, n: usize) {
    if let Some(e) = report.first_error {
        set_last_error(&format!("{} of {n} keys failed; first: {e}", report.failed));
    }
}

/// Stores `n` values under `n` keys in one pipelined batch (split across connections when
/// large). Each value is stored as a 32-byte header followed by its segments' concatenation,
/// written straight from the segments (no staging copy). `outcomes[i]` receives a
/// `hicache_outcome`: `HICACHE_OUTCOME_OK` when key i was stored. The call returns
/// `HICACHE_STATUS_OK` when it ran, even if some keys failed (then `hicache_valkey_last_error`
/// names the first failure); another status only when nothing could be done at all (bad
/// arguments, server unreachable). `n` = 0 is a no-op returning `HICACHE_STATUS_OK`, and the
/// arrays may then be NULL.
///
/// # Safety
/// `handle` is a live handle; `keys`, `values` and `outcomes` are valid for `n` items; every
/// key's and segment's `ptr` is valid for its `len` bytes during the call.
#[no_mangle]
pub unsafe extern "C" fn hicache_valkey_batch_set(
    handle: *const hicache_valkey,
    keys: *const hicache_key,
    values: *const hicache_value,
    n: usize,
    outcomes: *mut i32,
) -> hicache_status {
    ffi_call(|| {
        // SAFETY: the contract above.
        let (store, keys, values, out) = unsafe { batch_args(handle, keys, values, n, outcomes) }?;
        let segments = total_segments(values)?;
        check_count::<IoSlice<'_>>(segments, "segments")?;
        let mut flat: Vec<IoSlice<'_>> = try_vec(segments, "segments")?;
        let mut bounds = try_vec(n.saturating_add(1), "values")?;
        bounds.push(0);
        for (i, v) in values.iter().enumerate() {
            for s in unsafe { value_segments(v, i) }? {
                let bytes: &[u8] = if s.len == 0 { &[] } else { unsafe { std::slice::from_raw_parts(s.ptr as *const u8, s.len) } };
                flat.push(IoSlice::new(bytes));
            }
            bounds.push(flat.len());
        }
        let mut per_value: Vec<&[IoSlice<'_>]> = try_vec(n, "values")?;
        per_value.extend(bounds.windows(2).map(|w| &flat[w[0]..w[1]]));
        let mut results = try_vec(n, "outcomes")?;
        results.resize(n, Outcome::Ok);
        let r = store.batch_set(&keys, &per_value, &mut results)?;
        report(&results, out, r);
        Ok(())
    })
}

/// Reads `n` keys in one pipelined batch, each value straight into its caller-owned segments
/// (the stored payload is scattered over them in order). `outcomes[i]` is `HICACHE_OUTCOME_OK`
/// only when exactly the stored bytes of key i were written into its segments; a missing key,
/// a stored value of another length, a foreign value or one written with another value-format
/// fingerprint is a miss of its own kind and the segments are not written; a checksum mismatch
/// is a miss whose segments hold unusable bytes. Call status as for `hicache_valkey_batch_set`.
///
/// # Safety
/// As for `hicache_valkey_batch_set`, and every segment's memory is writable and no two
/// segments of the batch overlap.
#[no_mangle]
pub unsafe extern "C" fn hicache_valkey_batch_get(
    handle: *const hicache_valkey,
    keys: *const hicache_key,
    values: *const hicache_value,
    n: usize,
    outcomes: *mut i32,
) -> hicache_status {
    ffi_call(|| {
        // SAFETY: the contract above.
        let (store, keys, values, out) = unsafe { batch_args(handle, keys, values, n, outcomes) }?;
        let segments = total_segments(values)?;
        check_count::<hicache_segment>(segments, "segments")?;
        let mut targets = ReadTargets::try_with_capacity(n, segments)?;
        for (i, v) in values.iter().enumerate() {
            let segs = unsafe { value_segments(v, i) }?;
            targets.push_value(segs.iter().map(|s| {
                let bytes: &mut [u8] =
                    if s.len == 0 { &mut [] } else { unsafe { std::slice::from_raw_parts_mut(s.ptr as *mut u8, s.len) } };
                bytes
            }));
        }
        let mut results = try_vec(n, "outcomes")?;
        results.resize(n, Outcome::Miss);
        let r = store.batch_get(&keys, &mut targets, &mut results)?;
        report(&results, out, r);
        Ok(())
    })
}

/// Checks which of `n` keys exist, in one pipelined batch. `found` (may be NULL) receives 1 or 0
/// per key; `*leading_hits` the number of keys that exist in a row from the first (what a
/// prefix cache's prefetch wants). A key whose request failed counts as absent. EXISTS cannot
/// see the value header: a value of another format shows up as found here and as a miss in
/// `hicache_valkey_batch_get`. `n` = 0 sets `*leading_hits` to 0.
///
/// # Safety
/// `handle` is a live handle; `keys` is valid for `n` items and each key's `ptr` for its `len`
/// bytes; `found` is NULL or writable for `n` bytes; `leading_hits` is writable.
#[no_mangle]
pub unsafe extern "C" fn hicache_valkey_batch_exists(
    handle: *const hicache_valkey,
    keys: *const hicache_key,
    n: usize,
    found: *mut u8,
    leading_hits: *mut usize,
) -> hicache_status {
    ffi_call(|| {
        // SAFETY (whole block): the pointers are checked for NULL; validity is the contract above.
        let store = unsafe { store(handle) }?;
        non_null(leading_hits, "leading_hits")?;
        let keys = unsafe { key_slices(items(keys, n, "keys")?) }?;
        let mut flags = try_vec(n, "keys")?;
        flags.resize(n, false);
        let (leading, r) = store.batch_exists(&keys, &mut flags)?;
        if !found.is_null() {
            let found = unsafe { std::slice::from_raw_parts_mut(found, n) };
            for (slot, f) in found.iter_mut().zip(&flags) {
                *slot = u8::from(*f);
            }
        }
        unsafe { leading_hits.write(leading) };
        report_failures(r, n);
        Ok(())
    })
}

fn copy_cstr(dst: &mut [c_char; 32], s: &str) {
    let n = s.len().min(dst.len() - 1);
    for (d, b) in dst.iter_mut().zip(&s.as_bytes()[..n]) {
        *d = *b as c_char;
    }
    dst[n] = 0;
}

/// Fills `*out` with the server's figures (memory, keyspace hits/misses, clients, this model's
/// key count by SCAN) and this handle's own counters. Costs a SCAN of the database: meant for
/// operators and periodic metrics, not the data path. Set `out->struct_size` first.
///
/// # Safety
/// `handle` is a live handle; `out` is writable for `out->struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn hicache_valkey_stats(handle: *const hicache_valkey, out: *mut hicache_stats) -> hicache_status {
    ffi_call(|| {
        // SAFETY: checked for NULL; live by contract.
        let store = unsafe { store(handle) }?;
        non_null(out, "out")?;
        // SAFETY: non-NULL; struct_size is the first field.
        let size = unsafe { (*out).struct_size } as usize;
        if size < STATS_MIN_SIZE {
            return Err(invalid(format!("out->struct_size is {size}, expected sizeof(hicache_stats) = {STATS_SIZE}")));
        }
        let s = store.stats()?;
        let (sv, c) = (&s.server, &s.client);
        let mut r = hicache_stats {
            struct_size: 0,
            reserved: 0,
            model_keys: sv.model_keys,
            db_keys: sv.db_keys,
            used_memory_bytes: sv.used_memory,
            used_memory_human: [0; 32],
            maxmemory_bytes: sv.maxmemory,
            maxmemory_policy: [0; 32],
            evicted_keys: sv.evicted_keys,
            keyspace_hits: sv.keyspace_hits,
            keyspace_misses: sv.keyspace_misses,
            keyspace_hit_ratio: sv.keyspace_hit_ratio(),
            connected_clients: sv.connected_clients,
            server_version: [0; 32],
            get_hits: c.get_hits,
            get_misses: c.get_misses,
            get_hit_ratio: c.get_hit_ratio(),
            exists_hits: c.exists_hits,
            exists_misses: c.exists_misses,
            exists_hit_ratio: c.exists_hit_ratio(),
            pages_written: c.pages_written,
            bytes_written: c.bytes_written,
            pages_read: c.pages_read,
            bytes_read: c.bytes_read,
            errors: c.errors,
            reconnects: c.reconnects,
            set_calls: c.set_latency.calls,
            set_p50_us: c.set_latency.p50_us,
            set_p99_us: c.set_latency.p99_us,
            get_calls: c.get_latency.calls,
            get_p50_us: c.get_latency.p50_us,
            get_p99_us: c.get_latency.p99_us,
            exists_calls: c.exists_latency.calls,
            exists_p50_us: c.exists_latency.p50_us,
            exists_p99_us: c.exists_latency.p99_us,
            cluster_primaries: sv.cluster_primaries,
            unreachable_primaries: sv.unreachable_primaries,
        };
        copy_cstr(&mut r.used_memory_human, &sv.used_memory_human);
        copy_cstr(&mut r.maxmemory_policy, &sv.maxmemory_policy);
        copy_cstr(&mut r.server_version, &sv.server_version);
        // A caller built against an older, shorter struct gets the fields it knows, and its
        // struct_size stays what it was (so the struct can be passed again as it is).
        let n = size.min(STATS_SIZE);
        r.struct_size = n as u32;
        // SAFETY: `out` is writable for `struct_size` >= n bytes by contract; `r` is a plain
        // struct of STATS_SIZE >= n bytes.
        unsafe { std::ptr::copy_nonoverlapping((&r as *const hicache_stats).cast::<u8>(), out.cast::<u8>(), n) };
        Ok(())
    })
}

/// Deletes every key of this handle's model (all ranks) in its database, with SCAN + UNLINK;
/// other models' keys are untouched. `deleted` (may be NULL) receives the count.
///
/// # Safety
/// `handle` is a live handle; `deleted` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn hicache_valkey_clear(handle: *const hicache_valkey, deleted: *mut u64) -> hicache_status {
    ffi_call(|| {
        // SAFETY: checked for NULL; live by contract.
        let n = unsafe { store(handle) }?.clear()?;
        if !deleted.is_null() {
            // SAFETY: non-NULL, writable by contract.
            unsafe { deleted.write(n) };
        }
        Ok(())
    })
}

/// One PING round trip; `rtt_us` (may be NULL) receives its duration in microseconds.
///
/// # Safety
/// `handle` is a live handle; `rtt_us` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn hicache_valkey_ping(handle: *const hicache_valkey, rtt_us: *mut u64) -> hicache_status {
    ffi_call(|| {
        // SAFETY: checked for NULL; live by contract.
        let rtt = unsafe { store(handle) }?.ping()?;
        if !rtt_us.is_null() {
            // SAFETY: non-NULL, writable by contract.
            unsafe { rtt_us.write(rtt.as_micros() as u64) };
        }
        Ok(())
    })
}

/// The library's version, e.g. "0.1.0" (static string).
#[no_mangle]
pub extern "C" fn hicache_valkey_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The name of a `hicache_status` value, e.g. "HICACHE_STATUS_AUTH" (static string;
/// "HICACHE_STATUS_UNKNOWN" for a value that is not a status).
#[no_mangle]
pub extern "C" fn hicache_valkey_status_str(status: i32) -> *const c_char {
    static NAMES: OnceLock<Vec<CString>> = OnceLock::new();
    enum_name::<hicache_status>(&NAMES, status)
}

/// The name of a `hicache_outcome` value, e.g. "HICACHE_OUTCOME_MISS" (static string;
/// "HICACHE_OUTCOME_UNKNOWN" for a value that is not an outcome).
#[no_mangle]
pub extern "C" fn hicache_valkey_outcome_str(outcome: i32) -> *const c_char {
    static NAMES: OnceLock<Vec<CString>> = OnceLock::new();
    enum_name::<hicache_outcome>(&NAMES, outcome)
}

/// The static C string naming `value` of `E` (its names made once, the last one "UNKNOWN").
fn enum_name<E: CEnum>(names: &'static OnceLock<Vec<CString>>, value: i32) -> *const c_char {
    let names = names.get_or_init(|| {
        let unknown = format!("{}UNKNOWN", E::PREFIX);
        E::ALL.iter().map(|v| v.c_name()).chain(std::iter::once(unknown)).map(|n| CString::new(n).expect("no NUL in a name")).collect()
    });
    let i = E::from_value(value).map_or(names.len() - 1, |v| v.value() as usize);
    names[i].as_ptr()
}

/// Copies the calling thread's last error message (empty after a call that succeeded with no
/// failed key) into `buf` as a NUL-terminated string, truncated to `buf_len - 1` bytes, and
/// returns the message's full length. `buf` may be NULL (with any `buf_len`) to ask the length.
/// Every function that returns a `hicache_status` resets the message when it starts; the
/// string functions (`*_str`, `version`) leave it alone, so they can be used to print it.
///
/// # Safety
/// `buf` is NULL or writable for `buf_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn hicache_valkey_last_error(buf: *mut c_char, buf_len: usize) -> usize {
    with_last_error(|m| {
        if !buf.is_null() && buf_len > 0 {
            let n = m.len().min(buf_len - 1);
            // SAFETY: non-NULL, writable for buf_len > n bytes by contract.
            unsafe {
                std::ptr::copy_nonoverlapping(m.as_ptr(), buf.cast::<u8>(), n);
                buf.add(n).write(0);
            }
        }
        m.len()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_enums() {
        let name = |p: *const c_char| unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string();
        assert_eq!(name(hicache_valkey_status_str(hicache_status::Auth as i32)), "HICACHE_STATUS_AUTH");
        assert_eq!(name(hicache_valkey_status_str(99)), "HICACHE_STATUS_UNKNOWN");
        assert_eq!(name(hicache_valkey_outcome_str(hicache_outcome::OutOfMemory as i32)), "HICACHE_OUTCOME_OUT_OF_MEMORY");
        assert_eq!(name(hicache_valkey_outcome_str(-5)), "HICACHE_OUTCOME_UNKNOWN");
        for v in hicache_status::ALL {
            assert_eq!(name(hicache_valkey_status_str(*v as i32)), v.c_name());
        }
        for v in hicache_outcome::ALL {
            assert_eq!(name(hicache_valkey_outcome_str(*v as i32)), v.c_name());
        }
        assert_eq!(name(hicache_valkey_version()), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn null_arguments_are_rejected_with_a_message() {
        unsafe {
            assert_eq!(hicache_valkey_options_init(std::ptr::null_mut(), 104), hicache_status::InvalidArgument);
            assert_eq!(hicache_valkey_open(std::ptr::null(), std::ptr::null_mut()), hicache_status::InvalidArgument);
            let mut buf = [0 as c_char; 64];
            let len = hicache_valkey_last_error(buf.as_mut_ptr(), buf.len());
            assert_eq!(CStr::from_ptr(buf.as_ptr()).to_str().unwrap(), "out is NULL");
            assert_eq!(len, "out is NULL".len());
            let mut lead = 0usize;
            let st = hicache_valkey_batch_exists(std::ptr::null(), std::ptr::null(), 0, std::ptr::null_mut(), &mut lead);
            assert_eq!(st, hicache_status::InvalidArgument);
            hicache_valkey_close(std::ptr::null_mut());
        }
    }

    use std::mem::size_of;

    #[test]
    fn invalid_options_fail_before_connecting() {
        unsafe {
            let mut o = std::mem::zeroed::<hicache_valkey_options>();
            let mut h = std::ptr::null_mut();
            assert_eq!(hicache_valkey_open(&o, &mut h), hicache_status::InvalidArgument, "struct_size 0");
            assert_eq!(hicache_valkey_options_init(&mut o, 10), hicache_status::InvalidArgument, "size below the first struct");
            assert_eq!(hicache_valkey_options_init(&mut o, size_of::<hicache_valkey_options>() + 8), hicache_status::InvalidArgument, "newer header");
            assert_eq!(hicache_valkey_options_init(&mut o, size_of::<hicache_valkey_options>()), hicache_status::Ok);
            o.port = 0;
            assert_eq!(hicache_valkey_open(&o, &mut h), hicache_status::InvalidConfig);
            assert!(h.is_null());
            o.port = 6379;
            o.tp_rank = 2;
            o.tp_size = 2;
            assert_eq!(hicache_valkey_open(&o, &mut h), hicache_status::InvalidConfig);
            assert!(with_last_error(|m| m.contains("tp_rank 2")));
        }
    }
}
