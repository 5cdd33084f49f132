//! Which threads are running library code right now, so that a panic hook (installed by the C
//! boundary) can keep the library's panics off a host program's stderr: they are caught, reported
//! as a status and logged through `tracing` instead.

use std::cell::Cell;

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f` marked as library code on this thread.
pub fn in_library<T>(f: impl FnOnce() -> T) -> T {
    struct Mark;
    impl Drop for Mark {
        fn drop(&mut self) {
            DEPTH.with(|d| d.set(d.get() - 1));
        }
    }
    DEPTH.with(|d| d.set(d.get() + 1));
    let _mark = Mark;
    f()
}

/// Whether this thread is running library code (false on a thread whose thread-locals are
/// already gone, so that the panic hook never panics itself).
pub fn is_in_library() -> bool {
    DEPTH.try_with(|d| d.get() > 0).unwrap_or(false)
}
