//! Logging set-up: `tracing` with an env filter (`RUST_LOG`), to stderr.

/// Installs the global subscriber; `default` is the filter when `RUST_LOG` is unset.
/// Calling it twice is harmless (the second call does nothing).
pub fn init(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
