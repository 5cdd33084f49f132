//! `hicache_valkey_options`: initialising the struct, and reading a caller's struct (of any
//! published size) into the core's `Settings`.

use super::boundary::{ffi_call, invalid, non_null};
use super::types::*;
use crate::error::{Error, ErrorKind};
use crate::Settings;
use std::ffi::{c_char, CStr};

/// Size of `hicache_valkey_options` in this version.
const OPTIONS_SIZE: usize = std::mem::size_of::<hicache_valkey_options>();

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
pub(super) unsafe fn settings_from(opts: *const hicache_valkey_options) -> Result<Settings, Error> {
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
    // Only ever applied to the string fields of `o` below.
    let text = |ptr: *const c_char, what: &str| {
        // SAFETY: `ptr` is a string field of the caller's struct (or an unset NULL of
        // `unset_options`), which this function's contract says is NULL or a NUL-terminated
        // string.
        unsafe { opt_str(ptr, what) }
    };
    Ok(Settings {
        url: text(o.url, "url")?,
        host: text(o.host, "host")?,
        username: text(o.username, "username")?,
        password: text(o.password, "password")?,
        model_name: text(o.model_name, "model_name")?,
        socket: text(o.socket_path, "socket_path")?,
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
        tls_ca_cert: text(o.tls_ca_cert, "tls_ca_cert")?,
        tls_cert: text(o.tls_cert, "tls_cert")?,
        tls_key: text(o.tls_key, "tls_key")?,
        tls_server_name: text(o.tls_server_name, "tls_server_name")?,
        connect_timeout_ms: opt_int(o.connect_timeout_ms),
        io_timeout_ms: opt_int(o.timeout_ms),
        connections: opt_int(o.connections),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::boundary::with_last_error;
    use crate::ffi::hicache_valkey_open;
    use std::mem::size_of;

    #[test]
    fn invalid_options_fail_before_connecting() {
        // SAFETY: an all-zero options struct is valid (NULL strings, zero integers), and every
        // pointer passed is to a local of the right type; `o` is at least each size passed
        // but the rejected larger one, which is refused before a byte is written.
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
