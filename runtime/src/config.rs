//! The `[link]` section of a node's configuration, in two stages: as written (every field
//! optional) and validated with defaults applied; and reading a TOML file. Each crate owns
//! its section (`[ring]` and `[peering]` in rollcall-cluster, `[server]` in rollcall-actors);
//! the binary puts them together into one file.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::backoff::BackoffConfig;
use crate::tls::LinkTimeouts;
use crate::transport::limits::InboundLimits;
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

/// `[link]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLink {
    /// Keep-alive interval.
    pub keep_alive_ms: Option<u64>,
    /// Idle timeout.
    pub idle_timeout_ms: Option<u64>,
    /// Round-trip time a new connection assumes until it measured one.
    pub initial_rtt_ms: Option<u64>,
    /// How long a peer may hold back an acknowledgement.
    pub max_ack_delay_ms: Option<u64>,
    /// Frame limit.
    pub max_frame_bytes: Option<usize>,
    /// First reconnect delay.
    pub reconnect_base_ms: Option<u64>,
    /// Largest reconnect delay.
    pub reconnect_max_ms: Option<u64>,
    /// How long a call may take.
    pub call_timeout_ms: Option<u64>,
    /// How long a frame may take to arrive whole.
    pub frame_read_timeout_ms: Option<u64>,
    /// Bytes of partial frames one connection may hold.
    pub connection_read_budget_bytes: Option<usize>,
    /// Streams a peer may have open at once on one connection (each direction).
    pub streams_per_connection: Option<u32>,
    /// Connections one peer may hold to a node.
    pub connections_per_peer: Option<usize>,
    /// Handshakes a node carries out at once.
    pub handshakes_at_once: Option<usize>,
    /// Enrolments a server serves at once from one address.
    pub enrolments_per_source: Option<usize>,
}

/// `[link]` validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// Keep-alive and idle timeouts.
    pub timeouts: LinkTimeouts,
    /// Frame limit.
    pub max_frame_bytes: usize,
    /// Reconnect backoff.
    pub reconnect: BackoffConfig,
    /// Default timeout of remote calls.
    pub call_timeout_ms: u64,
    /// What one peer can make a node hold.
    pub limits: InboundLimits,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            timeouts: LinkTimeouts::default(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            reconnect: BackoffConfig::default(),
            call_timeout_ms: 5_000,
            limits: InboundLimits::default(),
        }
    }
}

/// Reads a TOML file into `T`.
pub fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

impl RawLink {
    /// Applies defaults and checks ranges.
    pub fn validate(self) -> Result<LinkConfig, ConfigError> {
        let d = LinkConfig::default();
        let cfg = LinkConfig {
            timeouts: LinkTimeouts {
                keep_alive_ms: self.keep_alive_ms.unwrap_or(d.timeouts.keep_alive_ms),
                idle_timeout_ms: self.idle_timeout_ms.unwrap_or(d.timeouts.idle_timeout_ms),
                initial_rtt_ms: self.initial_rtt_ms.unwrap_or(d.timeouts.initial_rtt_ms),
                max_ack_delay_ms: self.max_ack_delay_ms.unwrap_or(d.timeouts.max_ack_delay_ms),
            },
            max_frame_bytes: self.max_frame_bytes.unwrap_or(d.max_frame_bytes),
            reconnect: BackoffConfig {
                base_ms: self.reconnect_base_ms.unwrap_or(d.reconnect.base_ms),
                max_ms: self.reconnect_max_ms.unwrap_or(d.reconnect.max_ms),
            },
            call_timeout_ms: self.call_timeout_ms.unwrap_or(d.call_timeout_ms),
            limits: InboundLimits {
                frame_read_timeout: self
                    .frame_read_timeout_ms
                    .map(std::time::Duration::from_millis)
                    .unwrap_or(d.limits.frame_read_timeout),
                connection_read_budget: self
                    .connection_read_budget_bytes
                    .unwrap_or(d.limits.connection_read_budget),
                streams_per_connection: self
                    .streams_per_connection
                    .unwrap_or(d.limits.streams_per_connection),
                connections_per_peer: self
                    .connections_per_peer
                    .unwrap_or(d.limits.connections_per_peer),
                handshakes_at_once: self
                    .handshakes_at_once
                    .unwrap_or(d.limits.handshakes_at_once),
                enrolments_per_source: self
                    .enrolments_per_source
                    .unwrap_or(d.limits.enrolments_per_source),
            },
        };
        if cfg.timeouts.keep_alive_ms == 0
            || cfg.timeouts.keep_alive_ms >= cfg.timeouts.idle_timeout_ms
        {
            return Err(ConfigError::Invalid(format!(
                "link.keep_alive_ms ({}) must be above 0 and below link.idle_timeout_ms ({})",
                cfg.timeouts.keep_alive_ms, cfg.timeouts.idle_timeout_ms
            )));
        }
        if !(1..=10_000).contains(&cfg.timeouts.initial_rtt_ms) {
            return Err(ConfigError::Invalid(format!(
                "link.initial_rtt_ms ({}) must be between 1 and 10000",
                cfg.timeouts.initial_rtt_ms
            )));
        }
        if !(1..=25).contains(&cfg.timeouts.max_ack_delay_ms) {
            return Err(ConfigError::Invalid(format!(
                "link.max_ack_delay_ms ({}) must be between 1 and 25",
                cfg.timeouts.max_ack_delay_ms
            )));
        }
        if !(1024..=64 * 1024 * 1024).contains(&cfg.max_frame_bytes) {
            return Err(ConfigError::Invalid(format!(
                "link.max_frame_bytes ({}) must be between 1 KiB and 64 MiB",
                cfg.max_frame_bytes
            )));
        }
        let l = cfg.limits;
        if l.frame_read_timeout.is_zero()
            || l.connection_read_budget < cfg.max_frame_bytes
            || l.streams_per_connection == 0
            || l.connections_per_peer == 0
            || l.handshakes_at_once == 0
            || l.enrolments_per_source == 0
        {
            return Err(ConfigError::Invalid(format!(
                "link.frame_read_timeout_ms, link.streams_per_connection, link.connections_per_peer, link.handshakes_at_once and link.enrolments_per_source must be above 0, and link.connection_read_budget_bytes ({}) at least link.max_frame_bytes ({})",
                l.connection_read_budget, cfg.max_frame_bytes
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_defaults_validate_and_bad_values_are_named() {
        assert_eq!(
            RawLink::default().validate().expect("defaults"),
            LinkConfig::default()
        );
        for (text, needle) in [
            ("keep_alive_ms = 12000\n", "keep_alive_ms"),
            ("max_frame_bytes = 10\n", "max_frame_bytes"),
            ("initial_rtt_ms = 0\n", "initial_rtt_ms"),
            ("max_ack_delay_ms = 30\n", "max_ack_delay_ms"),
            ("reconnect_base_ms = 0\n", "reconnect_base_ms"),
            (
                "connection_read_budget_bytes = 1000\n",
                "connection_read_budget_bytes",
            ),
            ("connections_per_peer = 0\n", "connections_per_peer"),
        ] {
            let raw: RawLink = toml::from_str(text).expect("toml");
            let err = raw.validate().expect_err(text).to_string();
            assert!(err.contains(needle), "{err}");
        }
        assert!(toml::from_str::<RawLink>("bogus = 1\n").is_err());
    }
}
