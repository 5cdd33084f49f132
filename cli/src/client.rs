//! A small safe wrapper over the library's C ABI (`hicache_valkey::ffi`), so the CLI goes through
//! exactly the code path a C caller does: options struct, handle, batch calls, last error.

use ::hicache_valkey::ffi::{
    hicache_key, hicache_segment, hicache_status, hicache_valkey, hicache_valkey_batch_exists, hicache_valkey_batch_get,
    hicache_valkey_batch_set, hicache_valkey_clear, hicache_valkey_close, hicache_valkey_last_error, hicache_valkey_open,
    hicache_valkey_options, hicache_valkey_options_init, hicache_valkey_outcome_str, hicache_valkey_ping, hicache_stats, hicache_valkey_stats,
    hicache_valkey_status_str, hicache_valkey_version, hicache_value,
};
use std::ffi::{c_char, CStr, CString};
use std::fmt;

/// A failed C call: its status name and the library's message.
#[derive(Debug, Clone)]
pub struct CallError {
    pub status: i32,
    pub message: String,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", status_name(self.status))
        } else {
            f.write_str(&self.message)
        }
    }
}

impl std::error::Error for CallError {}

pub fn status_name(status: i32) -> String {
    // SAFETY: returns a static NUL-terminated string for any value.
    unsafe { CStr::from_ptr(hicache_valkey_status_str(status)) }.to_string_lossy().into_owned()
}

/// `HICACHE_OUTCOME_MISS`: the key is not stored.
pub const OUTCOME_MISS: i32 = 1;

pub fn outcome_name(outcome: i32) -> String {
    // SAFETY: returns a static NUL-terminated string for any value.
    unsafe { CStr::from_ptr(hicache_valkey_outcome_str(outcome)) }.to_string_lossy().into_owned()
}

pub fn version() -> String {
    // SAFETY: static NUL-terminated string.
    unsafe { CStr::from_ptr(hicache_valkey_version()) }.to_string_lossy().into_owned()
}

/// This thread's last error message.
pub fn last_error() -> String {
    // SAFETY: NULL buffer asks for the length; then a buffer of that length + 1.
    let len = unsafe { hicache_valkey_last_error(std::ptr::null_mut(), 0) };
    let mut buf = vec![0 as c_char; len + 1];
    // SAFETY: buf is writable for its length.
    unsafe { hicache_valkey_last_error(buf.as_mut_ptr(), buf.len()) };
    // SAFETY: NUL-terminated by the call.
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

fn check(status: hicache_status) -> Result<(), CallError> {
    if status == hicache_status::Ok {
        Ok(())
    } else {
        Err(CallError { status: status as i32, message: last_error() })
    }
}

/// What the user gave on the command line; `None` is left to the library (environment, defaults).
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    pub url: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub db: Option<u32>,
    pub password: Option<String>,
    pub model: Option<String>,
    pub connections: Option<u32>,
    pub checksum: Option<bool>,
    pub timeout_ms: Option<u32>,
    /// The `skip_existing` option (batch_set skips keys already stored in this value format).
    pub skip_existing: Option<bool>,
    pub socket: Option<String>,
    pub tls: bool,
    pub tls_ca_cert: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub tls_server_name: Option<String>,
}

fn cstring(s: &Option<String>, what: &str) -> Result<Option<CString>, CallError> {
    s.as_ref()
        .map(|s| CString::new(s.as_str()))
        .transpose()
        .map_err(|_| CallError { status: hicache_status::InvalidArgument as i32, message: format!("{what} contains a NUL byte") })
}

/// An open handle; closed on drop.
pub struct Handle {
    ptr: *mut hicache_valkey,
}

// SAFETY: the library documents handles as usable from several threads at once.
unsafe impl Send for Handle {}
unsafe impl Sync for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: opened by hicache_valkey_open, closed once here.
        unsafe { hicache_valkey_close(self.ptr) };
    }
}

/// Borrowed page keys and values, laid out for the C calls (built once, reused per call).
pub struct Batch {
    pub keys: Vec<hicache_key>,
    pub values: Vec<hicache_value>,
    _segments: Vec<hicache_segment>,
}

impl Batch {
    /// `keys[i]` with value `i` made of the given segments (pointer, length). The caller keeps the
    /// memory alive and unaliased while the batch is used.
    pub fn new(keys: &[Vec<u8>], segments: &[Vec<(*mut u8, usize)>]) -> Batch {
        let mut segs = Vec::with_capacity(segments.iter().map(Vec::len).sum());
        let mut spans = Vec::with_capacity(segments.len());
        for v in segments {
            spans.push((segs.len(), v.len()));
            segs.extend(v.iter().map(|&(ptr, len)| hicache_segment { ptr: ptr.cast(), len }));
        }
        let values =
            spans.iter().map(|&(start, count)| hicache_value { segments: segs[start..].as_ptr(), count }).collect();
        let keys = keys.iter().map(|k| hicache_key { ptr: k.as_ptr(), len: k.len() }).collect();
        Batch { keys, values, _segments: segs }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

impl Handle {
    pub fn open(o: &OpenOptions) -> Result<Handle, CallError> {
        // SAFETY: options_init writes a whole struct.
        let mut opts: hicache_valkey_options = unsafe { std::mem::zeroed() };
        check(unsafe { hicache_valkey_options_init(&mut opts, std::mem::size_of::<hicache_valkey_options>()) })?;
        let url = cstring(&o.url, "--url")?;
        let host = cstring(&o.host, "--host")?;
        let password = cstring(&o.password, "--password")?;
        let model = cstring(&o.model, "--model")?;
        let socket = cstring(&o.socket, "--socket")?;
        let tls_ca_cert = cstring(&o.tls_ca_cert, "--tls-ca-cert")?;
        let tls_cert = cstring(&o.tls_cert, "--tls-cert")?;
        let tls_key = cstring(&o.tls_key, "--tls-key")?;
        let tls_server_name = cstring(&o.tls_server_name, "--tls-server-name")?;
        let ptr_of = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
        opts.url = ptr_of(&url);
        opts.host = ptr_of(&host);
        opts.password = ptr_of(&password);
        opts.model_name = ptr_of(&model);
        opts.socket_path = ptr_of(&socket);
        opts.tls_ca_cert = ptr_of(&tls_ca_cert);
        opts.tls_cert = ptr_of(&tls_cert);
        opts.tls_key = ptr_of(&tls_key);
        opts.tls_server_name = ptr_of(&tls_server_name);
        if o.tls {
            opts.tls = 1;
        }
        if let Some(p) = o.port {
            opts.port = p.into();
        }
        if let Some(d) = o.db {
            opts.db = d as i32;
        }
        if let Some(c) = o.connections {
            opts.connections = c as i32;
        }
        if let Some(c) = o.checksum {
            opts.checksum = c.into();
        }
        if let Some(t) = o.timeout_ms {
            opts.timeout_ms = t as i32;
        }
        if let Some(v) = o.skip_existing {
            opts.skip_existing = v.into();
        }
        let mut ptr = std::ptr::null_mut();
        // SAFETY: opts initialised above; its strings outlive the call (copied by the library).
        check(unsafe { hicache_valkey_open(&opts, &mut ptr) })?;
        Ok(Handle { ptr })
    }

    pub fn ping(&self) -> Result<u64, CallError> {
        let mut us = 0u64;
        // SAFETY: live handle, writable out-parameter.
        check(unsafe { hicache_valkey_ping(self.ptr, &mut us) })?;
        Ok(us)
    }

    pub fn stats(&self) -> Result<hicache_stats, CallError> {
        // SAFETY: all-zero is a valid stats struct; struct_size set before the call.
        let mut s: hicache_stats = unsafe { std::mem::zeroed() };
        s.struct_size = std::mem::size_of::<hicache_stats>() as u32;
        check(unsafe { hicache_valkey_stats(self.ptr, &mut s) })?;
        Ok(s)
    }

    pub fn clear(&self) -> Result<u64, CallError> {
        let mut n = 0u64;
        // SAFETY: live handle, writable out-parameter.
        check(unsafe { hicache_valkey_clear(self.ptr, &mut n) })?;
        Ok(n)
    }

    /// batch_set; `outcomes` gets one `hicache_outcome` per key.
    pub fn batch_set(&self, b: &Batch, outcomes: &mut [i32]) -> Result<(), CallError> {
        assert_eq!(outcomes.len(), b.len());
        // SAFETY: the arrays hold b.len() items; the segments' memory is the caller's (Batch::new).
        check(unsafe { hicache_valkey_batch_set(self.ptr, b.keys.as_ptr(), b.values.as_ptr(), b.len(), outcomes.as_mut_ptr()) })
    }

    /// batch_get into the batch's segments.
    pub fn batch_get(&self, b: &Batch, outcomes: &mut [i32]) -> Result<(), CallError> {
        assert_eq!(outcomes.len(), b.len());
        // SAFETY: as for batch_set; the segments are writable and disjoint (Batch::new's contract).
        check(unsafe { hicache_valkey_batch_get(self.ptr, b.keys.as_ptr(), b.values.as_ptr(), b.len(), outcomes.as_mut_ptr()) })
    }

    /// batch_exists over the batch's keys; returns the leading hits.
    pub fn batch_exists(&self, b: &Batch, found: &mut [u8]) -> Result<usize, CallError> {
        assert_eq!(found.len(), b.len());
        let mut leading = 0usize;
        // SAFETY: keys valid for b.len() items; found writable for as many bytes.
        check(unsafe { hicache_valkey_batch_exists(self.ptr, b.keys.as_ptr(), b.len(), found.as_mut_ptr(), &mut leading) })?;
        Ok(leading)
    }
}

/// A C `char[32]` field as a string.
pub fn cstr_field(field: &[c_char; 32]) -> String {
    let bytes: Vec<u8> = field.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
