//! The string functions: `hicache_valkey_version`, `_status_str`, `_outcome_str` and
//! `_last_error`. They return a value, not a status, and leave the last error alone (they are
//! used to print it), so they do not run inside `ffi_call`: `version` cannot panic (it returns a
//! pointer to a static string), and the others run inside `ffi_value`, which turns a panic into a
//! fixed answer. `ffi::audit` checks that every export is one or the other.

use super::boundary::{ffi_value, with_last_error};
use super::types::*;
use std::ffi::{c_char, CString};
use std::sync::OnceLock;

/// The library's version, e.g. "0.1.0" (static string).
#[no_mangle]
pub extern "C" fn hicache_valkey_version() -> *const c_char {
    // PANIC-FREE: a pointer to a static string; nothing here can panic.
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The name of a `hicache_status` value, e.g. "HICACHE_STATUS_AUTH" (static string;
/// "HICACHE_STATUS_UNKNOWN" for a value that is not a status).
#[no_mangle]
pub extern "C" fn hicache_valkey_status_str(status: i32) -> *const c_char {
    ffi_value(c"HICACHE_STATUS_UNKNOWN".as_ptr(), || {
        static NAMES: OnceLock<Vec<CString>> = OnceLock::new();
        enum_name::<hicache_status>(&NAMES, status)
    })
}

/// The name of a `hicache_outcome` value, e.g. "HICACHE_OUTCOME_MISS" (static string;
/// "HICACHE_OUTCOME_UNKNOWN" for a value that is not an outcome).
#[no_mangle]
pub extern "C" fn hicache_valkey_outcome_str(outcome: i32) -> *const c_char {
    ffi_value(c"HICACHE_OUTCOME_UNKNOWN".as_ptr(), || {
        static NAMES: OnceLock<Vec<CString>> = OnceLock::new();
        enum_name::<hicache_outcome>(&NAMES, outcome)
    })
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
    // A panic (this thread's message is gone: the thread is exiting) reads as no message.
    ffi_value(0, || {
        with_last_error(|m| {
            if !buf.is_null() && buf_len > 0 {
                let n = m.len().min(buf_len - 1);
                // SAFETY: `buf` is non-NULL and writable for `buf_len` > `n` bytes by this
                // function's contract, and cannot overlap the library's own message.
                unsafe {
                    std::ptr::copy_nonoverlapping(m.as_ptr(), buf.cast::<u8>(), n);
                    buf.add(n).write(0);
                }
            }
            m.len()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::*;
    use std::ffi::CStr;

    #[test]
    fn names_match_the_enums() {
        // SAFETY: the name functions return static NUL-terminated strings.
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
        // SAFETY: every pointer passed is NULL (rejected, or allowed by the contract) or to a
        // local of the right type and size.
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
}
