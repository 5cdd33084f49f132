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
