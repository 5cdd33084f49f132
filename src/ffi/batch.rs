//! The batches: `hicache_valkey_batch_set`, `_get` and `_exists`, and the checks that turn
//! their C arrays into slices.

use super::boundary::{ffi_call, invalid, non_null, set_last_error};
use super::handle::{hicache_valkey, store};
use super::types::*;
use crate::error::Error;
use crate::{Outcome, ReadTargets, Store};
use std::io::IoSlice;

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

/// The checked arguments of `batch_set` / `batch_get`.
struct BatchArgs<'a> {
    store: &'a Store,
    /// The keys, as slices.
    keys: Vec<&'a [u8]>,
    values: &'a [hicache_value],
    /// The values' segment count, checked to fit an array of `S` (see [`batch_args`]).
    segments: usize,
    /// The caller's outcome slots.
    outcomes: &'a mut [i32],
}

/// Checks the arguments of `batch_set` / `batch_get`, and that the values' segments fit an
/// array of `S` (what the call builds from them).
///
/// # Safety
/// As documented on those functions: `handle` is NULL or a live handle; `keys`, `values` and
/// `outcomes` are NULL or valid for `n` items; every key's `ptr` is valid for its `len` bytes.
unsafe fn batch_args<'a, S>(
    handle: *const hicache_valkey,
    keys: *const hicache_key,
    values: *const hicache_value,
    n: usize,
    outcomes: *mut i32,
) -> Result<BatchArgs<'a>, Error> {
    // SAFETY: `handle` is NULL (rejected by `store`) or live, by this function's contract.
    let store = unsafe { store(handle) }?;
    // SAFETY: `keys` is NULL (rejected) or valid for `n` keys whose `ptr`s are valid for their
    // `len` bytes, by this function's contract.
    let keys = unsafe { key_slices(items(keys, n, "keys")?) }?;
    // SAFETY: `values` is NULL (rejected) or valid for `n` values, by this function's contract.
    let values = unsafe { items(values, n, "values") }?;
    let segments = total_segments(values)?;
    check_count::<S>(segments, "segments")?;
    let outcomes = if n == 0 {
        &mut []
    } else {
        non_null(outcomes, "outcomes")?;
        check_count::<i32>(n, "outcomes")?;
        // SAFETY: non-NULL, and writable for `n` items by this function's contract; the caller's
        // array is not otherwise borrowed during the call.
        unsafe { std::slice::from_raw_parts_mut(outcomes, n) }
    };
    Ok(BatchArgs { store, keys, values, segments, outcomes })
}

/// `n` copies of `value`, or an error (not an abort) when that much memory cannot be had.
fn filled<T: Clone>(n: usize, value: T, what: &str) -> Result<Vec<T>, Error> {
    let mut v = try_vec(n, what)?;
    v.resize(n, value);
    Ok(v)
}

/// The bytes of a segment that `value_segments` checked.
///
/// # Safety
/// `s.ptr` is valid for reads of `s.len` bytes (or `s.len` is 0) for `'a`.
unsafe fn segment_bytes<'a>(s: &hicache_segment) -> &'a [u8] {
    if s.len == 0 {
        return &[];
    }
    // SAFETY: non-NULL (value_segments rejects a NULL pointer with a length) and readable for
    // `len` bytes by this function's contract.
    unsafe { std::slice::from_raw_parts(s.ptr as *const u8, s.len) }
}

/// The bytes of a segment that `value_segments` checked, for writing.
///
/// # Safety
/// `s.ptr` is valid for writes of `s.len` bytes (or `s.len` is 0) for `'a`, and no other
/// reference to those bytes exists meanwhile (segments of a batch do not overlap).
unsafe fn segment_bytes_mut<'a>(s: &hicache_segment) -> &'a mut [u8] {
    if s.len == 0 {
        return &mut [];
    }
    // SAFETY: non-NULL (value_segments rejects a NULL pointer with a length), writable for `len`
    // bytes and not aliased, by this function's contract.
    unsafe { std::slice::from_raw_parts_mut(s.ptr as *mut u8, s.len) }
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
        // SAFETY: the pointers are as this function's `# Safety` section says.
        let a = unsafe { batch_args::<IoSlice<'_>>(handle, keys, values, n, outcomes) }?;
        let mut flat: Vec<IoSlice<'_>> = try_vec(a.segments, "segments")?;
        let mut bounds = try_vec(n.saturating_add(1), "values")?;
        bounds.push(0);
        for (i, v) in a.values.iter().enumerate() {
            // SAFETY: `v.segments` is valid for `v.count` segments by this function's contract.
            for s in unsafe { value_segments(v, i) }? {
                // SAFETY: each segment's `ptr` is readable for its `len` bytes during the call, by
                // this function's contract.
                flat.push(IoSlice::new(unsafe { segment_bytes(s) }));
            }
            bounds.push(flat.len());
        }
        let mut per_value: Vec<&[IoSlice<'_>]> = try_vec(n, "values")?;
        per_value.extend(bounds.windows(2).map(|w| &flat[w[0]..w[1]]));
        let mut results = filled(n, Outcome::Ok, "outcomes")?;
        let r = a.store.batch_set(&a.keys, &per_value, &mut results)?;
        report(&results, a.outcomes, r);
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
        // SAFETY: the pointers are as this function's `# Safety` section says.
        let a = unsafe { batch_args::<hicache_segment>(handle, keys, values, n, outcomes) }?;
        let mut targets = ReadTargets::try_with_capacity(n, a.segments)?;
        for (i, v) in a.values.iter().enumerate() {
            // SAFETY: `v.segments` is valid for `v.count` segments by this function's contract.
            let segs = unsafe { value_segments(v, i) }?;
            // SAFETY: each segment's `ptr` is writable for its `len` bytes during the call and no
            // two segments overlap, by this function's contract.
            targets.push_value(segs.iter().map(|s| unsafe { segment_bytes_mut(s) }));
        }
        let mut results = filled(n, Outcome::Miss, "outcomes")?;
        let r = a.store.batch_get(&a.keys, &mut targets, &mut results)?;
        report(&results, a.outcomes, r);
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
        // SAFETY: `handle` is NULL (rejected by `store`) or live, by this function's contract.
        let store = unsafe { store(handle) }?;
        non_null(leading_hits, "leading_hits")?;
        // SAFETY: `keys` is NULL (rejected) or valid for `n` keys whose `ptr`s are valid for their
        // `len` bytes, by this function's contract.
        let keys = unsafe { key_slices(items(keys, n, "keys")?) }?;
        let mut flags = filled(n, false, "keys")?;
        let (leading, r) = store.batch_exists(&keys, &mut flags)?;
        if !found.is_null() {
            // SAFETY: non-NULL, and writable for `n` bytes by this function's contract (`n` fits
            // an array: `keys` is one).
            let found = unsafe { std::slice::from_raw_parts_mut(found, n) };
            for (slot, f) in found.iter_mut().zip(&flags) {
                *slot = u8::from(*f);
            }
        }
        // SAFETY: non-NULL (checked above) and writable by this function's contract.
        unsafe { leading_hits.write(leading) };
        report_failures(r, n);
        Ok(())
    })
}
