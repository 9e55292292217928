//! The `[server]` section of a node's configuration: what the server's desk and store keep.

use rollcall_runtime::config::ConfigError;
use serde::Deserialize;

/// `[server]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// How many questions' results the server keeps (oldest dropped first).
    pub results_kept: Option<usize>,
}

/// `[server]` validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// How many questions' results the server keeps.
    pub results_kept: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings { results_kept: 1000 }
    }
}

impl RawServer {
    /// Applies defaults and checks ranges.
    pub fn validate(self) -> Result<ServerSettings, ConfigError> {
        let s = ServerSettings {
            results_kept: self
                .results_kept
                .unwrap_or(ServerSettings::default().results_kept),
        };
        if s.results_kept == 0 {
            return Err(ConfigError::Invalid(
                "server.results_kept must be at least 1".into(),
            ));
        }
        Ok(s)
    }
}
