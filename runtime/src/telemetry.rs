//! Logging set-up: `tracing` with an env filter (`RUST_LOG`), to stderr.

/// Installs the global subscriber; `default` is the filter when `RUST_LOG` is unset.
/// Calling it twice is harmless (the second call does nothing).
pub fn init(default: &str) {
    init_as(default, LogFormat::Text);
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// For people: one readable line per event.
    #[default]
    Text,
    /// For log shippers: one JSON object per line (`timestamp`, `level`, `fields` with
    /// `message`, and the span it ran in).
    Json,
}

/// Installs the global subscriber writing `format`; see [`init`].
pub fn init_as(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
