//! The `[ring]` (endpoints) and `[peering]` (server) sections of a node's configuration, as
//! written and validated.

use rollcall_runtime::config::ConfigError;
use serde::Deserialize;

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

impl Default for RingSettings {
    fn default() -> Self {
        RingSettings {
            register_min_ms: 30_000,
            register_max_ms: 90_000,
            // The probes each way are most of what an idle agent costs (the footprint
            // benchmark: 0.110 % of a core at 500 ms; 0.071-0.074 % at 1 s, 0.046-0.051 %
            // at 2 s, both with the link's 4 s keep-alive); questions route around a dead
            // member by the hop timeout, whatever the probe interval. What slows is
            // noticing a dead member between questions (probe interval + dead timeout, 4 s)
            // and taking over the lead of a ring whose first member died (10 s).
            probe_interval_ms: 2_000,
            hop_timeout_ms: 500,
            successors: 4,
        }
    }
}

impl RawRing {
    /// Applies defaults and checks ranges.
    pub fn validate(self) -> Result<RingSettings, ConfigError> {
        let d = RingSettings::default();
        let r = RingSettings {
            register_min_ms: self.register_min_ms.unwrap_or(d.register_min_ms),
            register_max_ms: self.register_max_ms.unwrap_or(d.register_max_ms),
            probe_interval_ms: self.probe_interval_ms.unwrap_or(d.probe_interval_ms),
            hop_timeout_ms: self.hop_timeout_ms.unwrap_or(d.hop_timeout_ms),
            successors: self.successors.unwrap_or(d.successors),
        };
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
        Ok(r)
    }
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
    /// Ranges whose machines are placed by the address they declare rather than the one
    /// the server observes (machines behind a NAT the server sees them through).
    pub declared_address_ranges: Option<Vec<String>>,
    /// How long an offline machine is remembered (listed as offline) before it is forgotten.
    pub offline_retention_hours: Option<u64>,
    /// The longest host name a registration may carry.
    pub max_hostname_bytes: Option<usize>,
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
    /// Observed ranges whose machines are placed by their declared address.
    pub declared_address_ranges: Vec<String>,
    /// How long an offline machine is remembered.
    pub offline_retention_hours: u64,
    /// The longest host name a registration may carry.
    pub max_hostname_bytes: usize,
}

impl Default for PeeringSettings {
    fn default() -> Self {
        PeeringSettings {
            mask_v4: 24,
            mask_v6: 64,
            isolated: Vec::new(),
            declared_address_ranges: Vec::new(),
            offline_retention_hours: 7 * 24,
            max_hostname_bytes: crate::proto::MAX_HOSTNAME_BYTES,
        }
    }
}

impl RawPeering {
    /// Applies defaults and checks ranges.
    pub fn validate(self) -> Result<PeeringSettings, ConfigError> {
        let d = PeeringSettings::default();
        let p = PeeringSettings {
            mask_v4: self.mask_v4.unwrap_or(d.mask_v4),
            mask_v6: self.mask_v6.unwrap_or(d.mask_v6),
            isolated: self.isolated.unwrap_or_default(),
            declared_address_ranges: self.declared_address_ranges.unwrap_or_default(),
            offline_retention_hours: self
                .offline_retention_hours
                .unwrap_or(d.offline_retention_hours),
            max_hostname_bytes: self.max_hostname_bytes.unwrap_or(d.max_hostname_bytes),
        };
        if p.max_hostname_bytes == 0 {
            return Err(ConfigError::Invalid(
                "peering.max_hostname_bytes must be at least 1".into(),
            ));
        }
        if p.offline_retention_hours == 0 {
            return Err(ConfigError::Invalid(
                "peering.offline_retention_hours must be at least 1".into(),
            ));
        }
        for r in p.isolated.iter().chain(&p.declared_address_ranges) {
            crate::membership::parse_cidr(r).map_err(ConfigError::Invalid)?;
        }
        if p.mask_v4 > 32 || p.mask_v6 > 128 {
            return Err(ConfigError::Invalid(
                "peering.mask_v4 must be at most 32 and peering.mask_v6 at most 128".into(),
            ));
        }
        Ok(p)
    }
}
