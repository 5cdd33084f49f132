//! The C ABI from Rust tests: opening a handle the way a C caller does.

use ::hicache_valkey::ffi::{
    hicache_status, hicache_valkey, hicache_valkey_last_error, hicache_valkey_open, hicache_valkey_options, hicache_valkey_options_init,
};
use std::ffi::CStr;

/// The calling thread's last error message of the library.
pub fn c_last_error() -> String {
    let mut buf = vec![0u8; 1024];
    // SAFETY: the buffer is writable for its length.
    let n = unsafe { hicache_valkey_last_error(buf.as_mut_ptr().cast(), buf.len()) };
    buf.truncate(n.min(buf.len() - 1));
    String::from_utf8_lossy(&buf).into_owned()
}

/// A handle on 127.0.0.1:`port` opened through `hicache_valkey_options_init` + `_open`, for
/// model `model` (None: the library's default), after `tweak` has set any other option; the
/// test fails, with the library's message, if it cannot be opened. Close it with
/// `hicache_valkey_close`.
pub fn c_open(port: u16, model: Option<&CStr>, tweak: impl FnOnce(&mut hicache_valkey_options)) -> *mut hicache_valkey {
    // SAFETY: options_init fills the zeroed struct of the size it is told; the strings outlive
    // the open call, which copies what it keeps.
    unsafe {
        let mut o = std::mem::zeroed::<hicache_valkey_options>();
        assert_eq!(hicache_valkey_options_init(&mut o, std::mem::size_of::<hicache_valkey_options>()), hicache_status::Ok);
        o.host = c"127.0.0.1".as_ptr();
        o.port = port.into();
        if let Some(model) = model {
            o.model_name = model.as_ptr();
        }
        tweak(&mut o);
        let mut h = std::ptr::null_mut();
        assert_eq!(hicache_valkey_open(&o, &mut h), hicache_status::Ok, "{}", c_last_error());
        h
    }
}
