//! The panic boundary, the status mapping and the per-thread last error message.

use super::types::hicache_status;
use crate::error::{Error, ErrorKind};
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    /// The message of the last failed call on this thread (libgit2 / SQLite style: a handle is
    /// shared between threads, so a per-handle message would race; a per-thread one cannot).
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Sets this thread's last error message.
pub fn set_last_error(message: &str) {
    LAST_ERROR.with(|m| {
        let mut m = m.borrow_mut();
        m.clear();
        m.push_str(message);
    });
}

/// Runs `f` with this thread's last error message.
pub fn with_last_error<T>(f: impl FnOnce(&str) -> T) -> T {
    LAST_ERROR.with(|m| f(&m.borrow()))
}

impl From<ErrorKind> for hicache_status {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidArgument => hicache_status::InvalidArgument,
            ErrorKind::InvalidConfig => hicache_status::InvalidConfig,
            ErrorKind::Connection => hicache_status::Connection,
            ErrorKind::Auth => hicache_status::Auth,
            ErrorKind::Timeout => hicache_status::Timeout,
            ErrorKind::Protocol => hicache_status::Protocol,
            ErrorKind::Server => hicache_status::Server,
            ErrorKind::Permission => hicache_status::Permission,
            ErrorKind::Tls => hicache_status::Tls,
        }
    }
}

/// Runs the body of an export: clears the last error, maps `Err` to its status and message,
/// and turns a panic into `HICACHE_STATUS_PANIC` instead of unwinding into C. The panic's
/// message goes to the status message and the log, never to the host's stderr.
pub fn ffi_call(f: impl FnOnce() -> Result<(), Error>) -> hicache_status {
    set_last_error("");
    quiet_panics();
    match catch_unwind(AssertUnwindSafe(|| crate::quiet::in_library(f))) {
        Ok(Ok(())) => hicache_status::Ok,
        Ok(Err(e)) => {
            set_last_error(e.message());
            e.kind().into()
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal error (panic): {what}; please report it"));
            hicache_status::Panic
        }
    }
}

/// Runs the body of an export that returns a value instead of a status (the string functions):
/// a panic returns `fallback` instead of unwinding into C, and is logged, never printed. The
/// last error is left as it is (these functions are used to print it).
pub fn ffi_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    quiet_panics();
    catch_unwind(AssertUnwindSafe(|| crate::quiet::in_library(f))).unwrap_or(fallback)
}

/// Installs (once) a panic hook that logs panics raised in library code instead of printing
/// them, and leaves every other panic of the host process to the hook it had.
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if crate::quiet::is_in_library() {
                tracing::error!(panic = %info, "internal error caught at the C boundary");
            } else {
                previous(info);
            }
        }));
    });
}

/// An `HICACHE_STATUS_INVALID_ARGUMENT` error with `message`.
pub fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidArgument, message)
}

/// Fails with `HICACHE_STATUS_INVALID_ARGUMENT` when `ptr` is NULL.
pub fn non_null<T>(ptr: *const T, what: &str) -> Result<(), Error> {
    if ptr.is_null() {
        Err(invalid(format!("{what} is NULL")))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_a_status_and_a_message() {
        let status = ffi_call(|| panic!("boom"));
        assert_eq!(status, hicache_status::Panic);
        assert!(with_last_error(|m| m.contains("boom")));
        assert_eq!(ffi_call(|| Ok(())), hicache_status::Ok);
        assert!(with_last_error(str::is_empty));
        // A panic on a thread the library started inside a call is caught the same way.
        let status = ffi_call(|| {
            crate::lanes::run_parallel(vec![|| (), || panic!("lane boom")]);
            Ok(())
        });
        assert_eq!(status, hicache_status::Panic);
        assert!(with_last_error(|m| m.contains("lane boom")));
    }

    #[test]
    fn ffi_value_turns_a_panic_into_the_fallback_and_keeps_the_last_error() {
        set_last_error("the message to print");
        assert_eq!(ffi_value(7, || 3), 3);
        assert_eq!(ffi_value(7, || panic!("boom")), 7);
        assert!(with_last_error(|m| m == "the message to print"));
    }
}
