//! The handle: `hicache_valkey_open` and `hicache_valkey_close`.
#![allow(non_camel_case_types)]

use super::boundary::{ffi_call, non_null};
use super::options::settings_from;
use super::types::*;
use crate::error::Error;
use crate::{init_logging, Settings, Store};

/// An open connection to Valkey for one namespace (opaque). Thread-safe: one handle may be used
/// by several threads at once; functions take it as `const` for that reason.
pub struct hicache_valkey {
    store: Store,
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
pub(super) unsafe fn store<'a>(handle: *const hicache_valkey) -> Result<&'a Store, Error> {
    non_null(handle, "handle")?;
    // SAFETY: non-NULL and live by contract.
    Ok(unsafe { &(*handle).store })
}
