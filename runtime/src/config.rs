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
    /// `[ring]` settings (endpoints).
    #[serde(default)]
    pub ring: RawRing,
    /// `[peering]` settings (server).
    #[serde(default)]
    pub peering: RawPeering,
    /// `[server]` settings.
    #[serde(default)]
    pub server: RawServer,
}

/// `[server]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// How many questions' results the server keeps (oldest dropped first).
    pub results_kept: Option<usize>,
}

/// `[ring]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRing {
    /// Shortest registration interval.
    pub register_min_ms: Option<u64>,
    /// Longest registration interval.
    pub register_max_ms: Option<u64>,
    /// How often a member probes its successor.
    pub probe_interval_ms: Option<u64>,
    /// A probe answered later than this is a late hop.
    pub hop_timeout_ms: Option<u64>,
    /// Successors kept after each member.
    pub successors: Option<usize>,
}

/// `[peering]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeering {
    /// IPv4 prefix length of a peering range.
    pub mask_v4: Option<u8>,
    /// IPv6 prefix length of a peering range.
    pub mask_v6: Option<u8>,
    /// Ranges that never peer, such as VPN pools (`10.8.0.0/16`).
    pub isolated: Option<Vec<String>>,
}

/// Ring settings of an endpoint (validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingSettings {
    /// Shortest registration interval.
    pub register_min_ms: u64,
    /// Longest registration interval.
    pub register_max_ms: u64,
    /// Probe interval.
    pub probe_interval_ms: u64,
    /// Hop timeout.
    pub hop_timeout_ms: u64,
    /// Successor list length.
    pub successors: usize,
}

/// Peering settings of a server (validated, ranges still text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeeringSettings {
    /// IPv4 prefix length.
    pub mask_v4: u8,
    /// IPv6 prefix length.
    pub mask_v6: u8,
    /// Isolated ranges.
    pub isolated: Vec<String>,
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
    /// Ring settings.
    pub ring: RingSettings,
    /// Peering settings.
    pub peering: PeeringSettings,
    /// How many questions' results the server keeps.
    pub results_kept: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timeouts: LinkTimeouts::default(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            reconnect: BackoffConfig::default(),
            call_timeout_ms: 5_000,
            ring: RingSettings {
                register_min_ms: 30_000,
                register_max_ms: 90_000,
                probe_interval_ms: 500,
                hop_timeout_ms: 500,
                successors: 4,
            },
            peering: PeeringSettings {
                mask_v4: 24,
                mask_v6: 64,
                isolated: Vec::new(),
            },
            results_kept: 1000,
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
            ring: RingSettings {
                register_min_ms: self.ring.register_min_ms.unwrap_or(d.ring.register_min_ms),
                register_max_ms: self.ring.register_max_ms.unwrap_or(d.ring.register_max_ms),
                probe_interval_ms: self
                    .ring
                    .probe_interval_ms
                    .unwrap_or(d.ring.probe_interval_ms),
                hop_timeout_ms: self.ring.hop_timeout_ms.unwrap_or(d.ring.hop_timeout_ms),
                successors: self.ring.successors.unwrap_or(d.ring.successors),
            },
            peering: PeeringSettings {
                mask_v4: self.peering.mask_v4.unwrap_or(d.peering.mask_v4),
                mask_v6: self.peering.mask_v6.unwrap_or(d.peering.mask_v6),
                isolated: self.peering.isolated.unwrap_or_default(),
            },
            results_kept: self.server.results_kept.unwrap_or(d.results_kept),
        };
        let r = &cfg.ring;
        if r.register_min_ms == 0 || r.register_min_ms > r.register_max_ms {
            return Err(ConfigError::Invalid(format!(
                "ring.register_min_ms ({}) must be above 0 and at most ring.register_max_ms ({})",
                r.register_min_ms, r.register_max_ms
            )));
        }
        if r.probe_interval_ms == 0 || r.hop_timeout_ms == 0 || r.successors == 0 {
            return Err(ConfigError::Invalid(
                "ring.probe_interval_ms, ring.hop_timeout_ms and ring.successors must be above 0"
                    .into(),
            ));
        }
        if cfg.results_kept == 0 {
            return Err(ConfigError::Invalid(
                "server.results_kept must be at least 1".into(),
            ));
        }
        if cfg.peering.mask_v4 > 32 || cfg.peering.mask_v6 > 128 {
            return Err(ConfigError::Invalid(
                "peering.mask_v4 must be at most 32 and peering.mask_v6 at most 128".into(),
            ));
        }
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
            (
                "[ring]\nregister_min_ms = 5000\nregister_max_ms = 10\n",
                "register_min_ms",
            ),
            ("[peering]\nmask_v4 = 40\n", "mask_v4"),
        ] {
            let raw: RawConfig = toml::from_str(text).expect("toml");
            let err = raw.validate().expect_err(text).to_string();
            assert!(err.contains(needle), "{err}");
        }
        assert!(toml::from_str::<RawConfig>("[link]\nbogus = 1\n").is_err());
    }
}
