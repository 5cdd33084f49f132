//! Operator calls: `hicache_valkey_stats`, `hicache_valkey_clear` and `hicache_valkey_ping`.

use super::boundary::{ffi_call, invalid, non_null};
use super::handle::{hicache_valkey, store};
use super::types::*;
use std::ffi::c_char;

/// Size of `hicache_stats` in this version.
const STATS_SIZE: usize = std::mem::size_of::<hicache_stats>();
/// The smallest `struct_size` accepted: the fields of the first published struct, up to
/// `exists_p99_us` (callers built before `cluster_primaries` was appended).
const STATS_MIN_SIZE: usize = std::mem::offset_of!(hicache_stats, cluster_primaries);

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
