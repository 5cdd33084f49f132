//! Logging through `tracing`, off unless `HICACHE_VALKEY_LOG` is set (an `EnvFilter` directive
//! such as `debug` or `hicache_valkey=trace`). Output goes to stderr. Passwords are never logged:
//! [`crate::Config`]'s `Debug` redacts them.

use std::sync::Once;

/// Installs the stderr subscriber if `HICACHE_VALKEY_LOG` is set and no global subscriber exists.
/// Called by `hicache_valkey_open` and the CLI; safe to call many times.
pub fn init_logging() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let Ok(directive) = std::env::var("HICACHE_VALKEY_LOG") else { return };
        let filter = match tracing_subscriber::EnvFilter::try_new(&directive) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("hicache-valkey: ignoring HICACHE_VALKEY_LOG='{directive}': {e}");
                return;
            }
        };
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    });
}
