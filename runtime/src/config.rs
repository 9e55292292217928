//! Node configuration in two stages: the raw TOML file (every field optional) and the
//! validated [`Config`] with defaults applied. Command-line flags override the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::backoff::BackoffConfig;
use crate::tls::LinkTimeouts;
use crate::wire::DEFAULT_MAX_FRAME_BYTES;

/// Errors loading configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The file as written (every field optional).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[link]` settings.
    #[serde(default)]
    pub link: RawLink,
}

/// `[link]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLink {
    /// Keep-alive interval.
    pub keep_alive_ms: Option<u64>,
    /// Idle timeout.
    pub idle_timeout_ms: Option<u64>,
    /// Frame limit.
    pub max_frame_bytes: Option<usize>,
    /// First reconnect delay.
    pub reconnect_base_ms: Option<u64>,
    /// Largest reconnect delay.
    pub reconnect_max_ms: Option<u64>,
    /// How long a call may take.
    pub call_timeout_ms: Option<u64>,
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Keep-alive and idle timeouts.
    pub timeouts: LinkTimeouts,
    /// Frame limit.
    pub max_frame_bytes: usize,
    /// Reconnect backoff.
    pub reconnect: BackoffConfig,
    /// Default timeout of remote calls.
    pub call_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timeouts: LinkTimeouts::default(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            reconnect: BackoffConfig::default(),
            call_timeout_ms: 5_000,
        }
    }
}

impl RawConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Applies defaults and checks ranges.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let d = Config::default();
        let l = self.link;
        let cfg = Config {
            timeouts: LinkTimeouts {
                keep_alive_ms: l.keep_alive_ms.unwrap_or(d.timeouts.keep_alive_ms),
                idle_timeout_ms: l.idle_timeout_ms.unwrap_or(d.timeouts.idle_timeout_ms),
            },
            max_frame_bytes: l.max_frame_bytes.unwrap_or(d.max_frame_bytes),
            reconnect: BackoffConfig {
                base_ms: l.reconnect_base_ms.unwrap_or(d.reconnect.base_ms),
                max_ms: l.reconnect_max_ms.unwrap_or(d.reconnect.max_ms),
            },
            call_timeout_ms: l.call_timeout_ms.unwrap_or(d.call_timeout_ms),
        };
        if cfg.timeouts.keep_alive_ms == 0
            || cfg.timeouts.keep_alive_ms >= cfg.timeouts.idle_timeout_ms
        {
            return Err(ConfigError::Invalid(format!(
                "link.keep_alive_ms ({}) must be above 0 and below link.idle_timeout_ms ({})",
                cfg.timeouts.keep_alive_ms, cfg.timeouts.idle_timeout_ms
            )));
        }
        if !(1024..=64 * 1024 * 1024).contains(&cfg.max_frame_bytes) {
            return Err(ConfigError::Invalid(format!(
                "link.max_frame_bytes ({}) must be between 1 KiB and 64 MiB",
                cfg.max_frame_bytes
            )));
        }
        if cfg.reconnect.base_ms == 0 || cfg.reconnect.base_ms > cfg.reconnect.max_ms {
            return Err(ConfigError::Invalid(
                "link.reconnect_base_ms must be above 0 and at most link.reconnect_max_ms".into(),
            ));
        }
        Ok(cfg)
    }
}

impl Config {
    /// Loads `path` if given (defaults otherwise) and validates it.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => RawConfig::from_file(p)?.validate(),
            None => RawConfig::default().validate(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_file_values_override() {
        assert_eq!(Config::load(None).expect("defaults"), Config::default());
        let raw: RawConfig = toml::from_str("[link]\nidle_timeout_ms = 9000\n").expect("toml");
        assert_eq!(
            raw.validate().expect("valid").timeouts.idle_timeout_ms,
            9000
        );
    }

    #[test]
    fn bad_values_are_named() {
        for (text, needle) in [
            ("[link]\nkeep_alive_ms = 6000\n", "keep_alive_ms"),
            ("[link]\nmax_frame_bytes = 10\n", "max_frame_bytes"),
            ("[link]\nreconnect_base_ms = 0\n", "reconnect_base_ms"),
        ] {
            let raw: RawConfig = toml::from_str(text).expect("toml");
            let err = raw.validate().expect_err(text).to_string();
            assert!(err.contains(needle), "{err}");
        }
        assert!(toml::from_str::<RawConfig>("[link]\nbogus = 1\n").is_err());
    }
}
